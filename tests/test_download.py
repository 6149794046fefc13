"""The public-mirror download, exercised against a local file:// mirror (no network in tests)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from PIL import Image

from captioner.data.download import download_flickr8k
from captioner.errors import CaptionerError


def make_mirror(folder: Path, *, images: int = 2, lines: int = 3) -> str:
    folder.mkdir()
    with zipfile.ZipFile(folder / "Flickr8k_Dataset.zip", "w") as bundle:
        for number in range(images):
            photo = folder / f"{number}.jpg"
            Image.new("RGB", (8, 8), (number * 40, 0, 0)).save(photo)
            bundle.write(photo, f"Flicker8k_Dataset/{number}.jpg")
        bundle.writestr("__MACOSX/._0.jpg", b"resource fork")
    with zipfile.ZipFile(folder / "Flickr8k_text.zip", "w") as bundle:
        bundle.writestr("Flickr8k.token.txt", "".join(f"0.jpg#{n}\ta caption\n" for n in range(lines)))
        bundle.writestr("Flickr_8k.trainImages.txt", "0.jpg\n")
    return folder.resolve().as_uri()


def test_download_unpacks_and_checks_counts(tmp_path):
    mirror = make_mirror(tmp_path / "mirror")
    target = download_flickr8k(tmp_path / "flickr8k", mirror=mirror, images=2, token_lines=3)
    assert sorted(path.name for path in (target / "images").iterdir()) == ["0.jpg", "1.jpg"]
    assert (target / "Flickr_8k.trainImages.txt").read_text() == "0.jpg\n"
    # a finished copy is checked, not fetched again
    assert download_flickr8k(target, mirror="file:///nowhere", images=2, token_lines=3) == target


def test_download_with_wrong_counts_is_an_error(tmp_path):
    mirror = make_mirror(tmp_path / "mirror", lines=2)
    with pytest.raises(CaptionerError, match="expected 2 images and 3 caption lines, found 2 and 2"):
        download_flickr8k(tmp_path / "flickr8k", mirror=mirror, images=2, token_lines=3)


def test_unreachable_mirror_and_corrupt_archive(tmp_path):
    with pytest.raises(CaptionerError, match="could not download"):
        download_flickr8k(tmp_path / "a", mirror=(tmp_path / "missing").as_uri())
    mirror = tmp_path / "bad"
    mirror.mkdir()
    (mirror / "Flickr8k_Dataset.zip").write_bytes(b"not a zip")
    with pytest.raises(CaptionerError, match="not a valid zip file"):
        download_flickr8k(tmp_path / "b", mirror=mirror.as_uri())
    assert not (tmp_path / "b" / "Flickr8k_Dataset.zip").exists()  # removed so a rerun fetches it again
