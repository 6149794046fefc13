"""`captioner write-metadata`: a library's captions into XMP sidecars or the photos themselves, read back with
an independent reader (xml.etree for sidecars, Pillow for embedded EXIF)."""
from __future__ import annotations

import dataclasses
import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from PIL import Image

from captioner.alttext.metadata import sidecar_path
from captioner.alttext.photos import write_metadata
from captioner.cli import main
from captioner.library.export import as_sentence
from captioner.library.indexer import index
from captioner.library.store import Library

from conftest import draw_shape

DC = "{http://purl.org/dc/elements/1.1/}"
IPTC_CORE = "{http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/}"
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"


def sidecar_text(path: Path, prefix: str = DC, name: str = "description") -> str | None:
    """The x-default text of a LangAlt property in an XMP file, parsed with the standard library."""
    for element in ElementTree.parse(path).iter(f"{prefix}{name}"):
        for item in element.iter(f"{RDF}li"):
            return item.text
    return None


@pytest.fixture
def library(tmp_path, tiny_captioner):
    root = tmp_path / "photos"
    for number, (colour, shape) in enumerate([("red", "circle"), ("green", "square"), ("blue", "circle")]):
        path = root / ("sub" if number else "") / f"{colour} {shape}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        draw_shape(colour, shape, number).save(path, quality=95)
    opened = Library.open(root / ".captioner" / "library.sqlite", create=True, root=root)
    index(opened, tiny_captioner, progress=False, workers=0)
    yield opened
    opened.close()


def make_doubtful(library: Library, key: bytes) -> None:
    photo = library.get(key)
    library.write([(key, dataclasses.replace(photo, confidence=0.2, doubtful=True))])


def test_sidecars_get_the_captions_and_the_photos_stay_untouched(library):
    before = {path: path.read_bytes() for path in library.root.rglob("*.jpg")}
    lines: list[str] = []
    summary = write_metadata(library, say=lines.append)
    assert summary.actions["written"] == 3 and summary.failed == 0
    for key, photo in library.items():
        photo_file = library.file_path(key)
        assert photo_file.read_bytes() == before[photo_file]
        side = sidecar_path(photo_file)
        assert side.exists() and sidecar_text(side) == as_sentence(photo.caption)  # "A red circle."
        assert sidecar_text(side, IPTC_CORE, "AltTextAccessibility") == as_sentence(photo.caption)
    again = write_metadata(library, say=lines.append)
    assert again.actions["unchanged"] == 3 and again.actions["written"] == 0


def test_a_doubtful_unreviewed_caption_is_held_back_until_a_person_accepts_it(library):
    key = b"red circle.jpg"
    make_doubtful(library, key)
    lines: list[str] = []
    summary = write_metadata(library, say=lines.append)
    assert (summary.actions["written"], summary.actions["needs review"]) == (2, 1)
    assert any("needs review" in line and "red circle.jpg" in line for line in lines)
    photo_file = library.file_path(key)
    assert not sidecar_path(photo_file).exists()
    library.set_review(key, "a red ball on a white table", edited=True)
    assert write_metadata(library, say=lines.append).actions["written"] == 1
    assert sidecar_text(sidecar_path(photo_file)) == "a red ball on a white table"  # a person's words, as written
    assert "edited" in sidecar_path(photo_file).read_text()  # the note says a person wrote it


def test_include_unreviewed_writes_a_doubtful_caption_too(library):
    make_doubtful(library, b"red circle.jpg")
    assert write_metadata(library, include_unreviewed=True, say=lambda line: None).actions["written"] == 3


def test_dry_run_writes_nothing(library):
    lines: list[str] = []
    summary = write_metadata(library, dry_run=True, say=lines.append)
    assert summary.actions["would write"] == 3 and len(lines) == 3
    assert not list(library.root.rglob("*.xmp"))


def test_a_photo_changed_since_indexing_is_skipped(library):
    changed = library.file_path(b"red circle.jpg")
    draw_shape("green", "square", 7).save(changed, quality=80)
    os.utime(changed, ns=(1, 10**18))
    lines: list[str] = []
    summary = write_metadata(library, say=lines.append)
    assert summary.actions["changed since indexed"] == 1 and not sidecar_path(changed).exists()
    assert any("captioner index" in line for line in lines)


def test_embed_writes_into_the_photo_and_the_next_index_leaves_it_alone(library, tiny_captioner):
    mtimes = {path: path.stat().st_mtime_ns for path in library.root.rglob("*.jpg")}
    summary = write_metadata(library, embed=True, say=lambda line: None)
    assert summary.actions["written"] == 3
    for key, photo in library.items():
        photo_file = library.file_path(key)
        with Image.open(photo_file) as image:
            assert image.getexif()[0x010E] == as_sentence(photo.caption)  # EXIF ImageDescription, read by Pillow
        assert photo_file.stat().st_mtime_ns == mtimes[photo_file]
        assert not sidecar_path(photo_file).exists()
    again = index(library, tiny_captioner, progress=False, workers=0)
    assert (again.unchanged, again.captioned) == (3, 0)


def test_the_command_line(library, capsys):
    root, path = library.root, library.path
    assert main(["write-metadata", str(root), "--dry-run"]) == 0
    assert "3 would write" in capsys.readouterr().err
    assert main(["write-metadata", str(root), "--library", str(path)]) == 0
    assert "3 written" in capsys.readouterr().err
    assert main(["write-metadata", str(root / "sub"), "--library", str(path)]) == 2  # another folder than the library's
    assert "indexes" in capsys.readouterr().err
    assert main(["write-metadata", str(root / "nowhere")]) == 2
    assert "no library here" in capsys.readouterr().err
