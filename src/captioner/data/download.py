"""Fetch Flickr8k from its public mirror when no local copy exists, with a progress bar and a count check."""
from __future__ import annotations

import shutil
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from captioner.errors import CaptionerError

MIRROR = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k"
ARCHIVES = ("Flickr8k_Dataset.zip", "Flickr8k_text.zip")
EXPECTED_IMAGES = 8091
EXPECTED_TOKEN_LINES = 40460


def _fetch(url: str, target: Path) -> None:
    partial = target.with_suffix(target.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as handle:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    handle.write(chunk)
                    bar.update(len(chunk))
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise CaptionerError(f"could not download {url}: {error}") from None
    partial.replace(target)


def check_counts(folder: Path, *, images: int = EXPECTED_IMAGES, token_lines: int = EXPECTED_TOKEN_LINES) -> None:
    """Raise unless the folder holds the expected number of images and caption lines."""
    found_images = len(list((folder / "images").glob("*.jpg")))
    tokens = folder / "Flickr8k.token.txt"
    found_lines = len(tokens.read_text().splitlines()) if tokens.is_file() else 0
    if found_images != images or found_lines != token_lines:
        raise CaptionerError(
            f"{folder}: expected {images} images and {token_lines} caption lines, found {found_images} and {found_lines}"
        )


def download_flickr8k(folder: str | Path, *, mirror: str = MIRROR, images: int = EXPECTED_IMAGES,
                      token_lines: int = EXPECTED_TOKEN_LINES) -> Path:
    """Download and unpack into `folder` (images/ + the text files); a finished copy is kept as it is."""
    folder = Path(folder)
    if (folder / "images").is_dir() and (folder / "Flickr8k.token.txt").is_file():
        check_counts(folder, images=images, token_lines=token_lines)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for name in ARCHIVES:
        archive = folder / name
        if not archive.is_file():
            _fetch(f"{mirror}/{name}", archive)
        try:
            with zipfile.ZipFile(archive) as bundle:
                for member in bundle.infolist():
                    member_name = Path(member.filename).name
                    if member.is_dir() or member_name.startswith(".") or "__MACOSX" in member.filename:
                        continue
                    is_image = member_name.lower().endswith(".jpg")
                    target = folder / ("images" if is_image else "") / member_name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with bundle.open(member) as source, target.open("wb") as sink:
                        shutil.copyfileobj(source, sink)
        except zipfile.BadZipFile:
            archive.unlink(missing_ok=True)
            raise CaptionerError(f"{archive} is not a valid zip file; it was removed, run the download again") from None
    check_counts(folder, images=images, token_lines=token_lines)
    return folder
