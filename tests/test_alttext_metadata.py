"""Alt text into photo metadata: sidecars and embedded writes, checked with readers other than Exiv2 (Pillow, ElementTree)."""
from __future__ import annotations

import errno
import io
import os
import shutil
import warnings
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import exiv2
import pytest
from PIL import Image, ImageCms, PngImagePlugin
from PIL.IptcImagePlugin import getiptcinfo

from captioner.alttext import metadata
from captioner.alttext.metadata import Description, embed, read_description, sidecar_path, write_sidecar

TEXT = "a café in Zürich"
DESCRIPTION = Description(TEXT, tool="captioner 0.1.0", model="runs/default", review="machine", confidence=0.8125)
ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
OLD_TIME_NS = 1_600_000_000_123_456_789  # September 2020: a photo's mtime a write must not move

NS = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "Iptc4xmpCore": "http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/",
    "captioner": metadata.NAMESPACE_URI,
    "album": "http://example.com/album/1.0/",
}
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def xmp_packet(description: str | None = None) -> str:
    """An XMP packet with a rating, a keyword and, optionally, a description a person wrote."""
    described = ""
    if description:
        described = f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{description}</rdf:li></rdf:Alt></dc:description>'
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"'
        f' xmp:Rating="4"><dc:subject><rdf:Bag><rdf:li>beach</rdf:li></rdf:Bag></dc:subject>{described}</rdf:Description>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    )


def picture() -> Image.Image:
    """A small RGB picture with distinct pixels, so any change to them shows."""
    image = Image.new("RGB", (24, 16))
    image.putdata([((x * 10) % 256, (y * 15) % 256, (x * y) % 256) for y in range(16) for x in range(24)])
    return image


def camera_exif(kind: str, description: str | None = None) -> Image.Exif:
    """EXIF as a camera writes it; Pillow writes no EXIF sub-IFD into TIFF, so TIFF gets DateTime instead."""
    exif = Image.Exif()
    exif[0x010F] = "Canon"  # Make
    exif[0x0110] = "EOS 5D"  # Model
    exif[0x0112] = 6  # Orientation: rotate 90 CW
    if description is not None:
        exif[0x010E] = description  # ImageDescription
    if kind == "tiff":
        exif[0x0132] = "2024:05:01 12:00:00"  # DateTime
        exif[700] = xmp_packet().encode()  # XMP lives in a TIFF tag
    else:
        exif.get_ifd(0x8769)[0x9003] = "2024:05:01 12:00:00"  # DateTimeOriginal
    return exif


def make_photo(folder: Path, kind: str, *, name: str = "photo", description: str | None = None) -> Path:
    """A tiny photo with real EXIF, XMP, an ICC profile and (JPEG) IPTC keywords."""
    suffix = {"jpeg": ".jpg", "png": ".png", "tiff": ".tif", "webp": ".webp"}[kind]
    path = folder / f"{name}{suffix}"
    exif = camera_exif(kind, description)
    if kind == "jpeg":
        picture().save(path, exif=exif, icc_profile=ICC, xmp=xmp_packet().encode(), quality=90)
        add_iptc_keywords(path)
    elif kind == "png":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp_packet())
        picture().save(path, exif=exif, icc_profile=ICC, pnginfo=info)
    elif kind == "tiff":
        picture().save(path, exif=exif, icc_profile=ICC)
    else:
        picture().save(path, exif=exif, icc_profile=ICC, xmp=xmp_packet().encode(), lossless=True)
    os.utime(path, ns=(OLD_TIME_NS, OLD_TIME_NS))
    return path


def add_iptc_keywords(path: Path) -> None:
    """IPTC keywords, written with Exiv2 because Pillow cannot write IPTC."""
    image = exiv2.ImageFactory.open(str(path))
    image.readMetadata()
    iptc = image.iptcData()
    for keyword in ("beach", "holiday"):
        iptc.add(exiv2.IptcKey("Iptc.Application2.Keywords"), exiv2.StringValue(keyword))
    image.writeMetadata()


# --- independent readers -------------------------------------------------------------------------------------

def xmp_root(path: Path) -> ElementTree.Element:
    """The XMP of a photo (as Pillow finds it) or of a sidecar file, parsed with ElementTree."""
    if path.suffix == ".xmp":
        return ElementTree.fromstring(path.read_bytes())
    with Image.open(path) as image:
        packet = image.info["xmp"]
    return ElementTree.fromstring(packet.encode() if isinstance(packet, str) else packet)


def xmp_value(root: ElementTree.Element, prefix: str, name: str) -> str | dict[str, str] | list[str] | None:
    """A property as an attribute or element of any rdf:Description: text, {language: text} or a list."""
    tag = f"{{{NS[prefix]}}}{name}"
    for node in root.iter(f"{{{NS['rdf']}}}Description"):
        if tag in node.attrib:
            return node.attrib[tag]
        element = node.find(tag)
        if element is None:
            continue
        alt = element.find("rdf:Alt", NS)
        if alt is not None:
            return {item.get(XML_LANG): item.text for item in alt.findall("rdf:li", NS)}
        for kind in ("rdf:Bag", "rdf:Seq"):
            items = element.find(kind, NS)
            if items is not None:
                return [item.text for item in items.findall("rdf:li", NS)]
        return element.text
    return None


def exif_tags(path: Path) -> dict[int, object]:
    """IFD0 and Exif sub-IFD tags as Pillow reads them."""
    with Image.open(path) as image:
        exif = image.getexif()
        return {**dict(exif), **dict(exif.get_ifd(0x8769))}


def exif_text(value: object) -> str:
    """An EXIF ASCII tag holding UTF-8 (what exiftool and Exiv2 write): Pillow decodes it as Latin-1."""
    assert isinstance(value, str)
    return value.encode("latin-1").decode("utf-8")


def iptc_records(path: Path) -> dict[tuple[int, int], bytes | list[bytes]]:
    """IPTC IIM datasets as Pillow reads them (JPEG, TIFF); PNG's 'Raw profile type iptc' is decoded by hand."""
    with Image.open(path) as image:
        if image.format == "PNG":
            image.load()
            raw = image.info["Raw profile type iptc"]
            return {(0, 0): bytes.fromhex("".join(raw.split("\n")[3:]))}  # the whole Photoshop block, to search
        return getiptcinfo(image) or {}


def pixels(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    """Decoded pixels of an image file's bytes."""
    with Image.open(io.BytesIO(data)) as image:
        return image.mode, image.size, image.tobytes()


def jpeg_scan(data: bytes) -> bytes:
    """A JPEG's compressed scan: everything from the first SOS marker to the end (EOI)."""
    offset = 2
    while data[offset:offset + 2] != b"\xff\xda":
        offset += 2 + int.from_bytes(data[offset + 2:offset + 4], "big")
    return data[offset:]


def folder_listing(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


# Pillow expects IPTC-NAA (tag 33723) in a TIFF to be one value; Exiv2, like Photoshop, stores it as an array of LONGs
tiff_iptc_warning = pytest.mark.filterwarnings("ignore:Metadata Warning, tag 33723:UserWarning")
skip_as_root = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")


# --- sidecars ------------------------------------------------------------------------------------------------

def test_sidecar_holds_both_fields_and_the_note_and_leaves_the_photo_alone(tmp_path: Path) -> None:
    photo = make_photo(tmp_path, "jpeg", name="café")
    before = photo.read_bytes()
    outcome = write_sidecar(photo, DESCRIPTION)
    assert (outcome.action, outcome.path) == ("written", tmp_path / "café.jpg.xmp")
    assert str(outcome.path) in outcome.message and "\n" not in outcome.message
    root = xmp_root(outcome.path)
    assert xmp_value(root, "dc", "description") == {"x-default": TEXT}
    assert xmp_value(root, "Iptc4xmpCore", "AltTextAccessibility") == {"x-default": TEXT}
    assert xmp_value(root, "captioner", "Tool") == "captioner 0.1.0"
    assert xmp_value(root, "captioner", "Model") == "runs/default"
    assert xmp_value(root, "captioner", "Review") == "machine"
    assert float(xmp_value(root, "captioner", "Confidence")) == pytest.approx(0.8125, abs=1e-3)
    assert xmp_value(root, "captioner", "Text") == TEXT
    assert photo.read_bytes() == before and photo.stat().st_mtime_ns == OLD_TIME_NS
    assert read_description(outcome.path) == TEXT
    assert folder_listing(tmp_path) == ["café.jpg", "café.jpg.xmp"]  # no temp file left


def test_sidecar_name_reuses_an_existing_one(tmp_path: Path) -> None:
    photo = make_photo(tmp_path, "jpeg")
    assert sidecar_path(photo) == tmp_path / "photo.jpg.xmp"
    (tmp_path / "photo.xmp").write_text(xmp_packet())
    assert sidecar_path(photo) == tmp_path / "photo.xmp"
    (tmp_path / "photo.jpg.xmp").write_text(xmp_packet())
    assert sidecar_path(photo) == tmp_path / "photo.jpg.xmp"


def test_sidecar_merges_with_every_other_property(tmp_path: Path) -> None:
    photo = make_photo(tmp_path, "jpeg")
    existing = tmp_path / "photo.xmp"  # Lightroom's name, reused
    existing.write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"'
        ' xmlns:album="http://example.com/album/1.0/" xmp:Rating="5" album:Name="Summer 2024">'
        '<dc:subject><rdf:Bag><rdf:li>beach</rdf:li><rdf:li>sea</rdf:li></rdf:Bag></dc:subject>'
        '<dc:title><rdf:Alt><rdf:li xml:lang="x-default">Holiday</rdf:li></rdf:Alt></dc:title>'
        '</rdf:Description></rdf:RDF></x:xmpmeta>'
    )
    outcome = write_sidecar(photo, DESCRIPTION)
    assert (outcome.action, outcome.path) == ("written", existing)
    assert folder_listing(tmp_path) == ["photo.jpg", "photo.xmp"]
    root = xmp_root(existing)
    assert xmp_value(root, "dc", "description") == {"x-default": TEXT}
    assert xmp_value(root, "xmp", "Rating") == "5"
    assert xmp_value(root, "album", "Name") == "Summer 2024"
    assert xmp_value(root, "dc", "subject") == ["beach", "sea"]
    assert xmp_value(root, "dc", "title") == {"x-default": "Holiday"}


def test_a_persons_description_is_kept_unless_overwrite(tmp_path: Path) -> None:
    photo = make_photo(tmp_path, "jpeg")
    sidecar = tmp_path / "photo.jpg.xmp"
    sidecar.write_text(xmp_packet(description="Rex waiting for the ferry"))
    before = sidecar.read_bytes()
    kept = write_sidecar(photo, DESCRIPTION)
    assert kept.action == "kept" and "overwrite" in kept.message and str(sidecar) in kept.message
    assert sidecar.read_bytes() == before
    written = write_sidecar(photo, DESCRIPTION, overwrite=True)
    assert written.action == "written"
    root = xmp_root(sidecar)
    assert xmp_value(root, "dc", "description") == {"x-default": TEXT}
    assert xmp_value(root, "dc", "subject") == ["beach"] and xmp_value(root, "xmp", "Rating") == "4"


def test_a_description_inside_the_photo_also_keeps_the_sidecar_from_hiding_it(tmp_path: Path) -> None:
    photo = make_photo(tmp_path, "jpeg", description="Grandma's garden, 1998")
    outcome = write_sidecar(photo, DESCRIPTION)
    assert outcome.action == "kept" and str(photo) in outcome.message
    assert folder_listing(tmp_path) == ["photo.jpg"]


def test_camera_placeholders_are_not_a_persons_description(tmp_path: Path) -> None:
    photo = make_photo(tmp_path, "jpeg", description="OLYMPUS DIGITAL CAMERA         ")
    assert write_sidecar(photo, DESCRIPTION).action == "written"
    assert embed(photo, DESCRIPTION).action == "written"
    assert exif_text(exif_tags(photo)[0x010E]) == TEXT


def test_captioners_own_earlier_description_is_replaced(tmp_path: Path) -> None:
    photo = make_photo(tmp_path, "jpeg")
    assert write_sidecar(photo, DESCRIPTION).action == "written"
    newer = Description("a dog on a beach", tool="captioner 0.2.0", model="runs/best", review="approved", confidence=None)
    outcome = write_sidecar(photo, newer)
    assert outcome.action == "written"
    root = xmp_root(outcome.path)
    assert xmp_value(root, "dc", "description") == {"x-default": "a dog on a beach"}
    assert xmp_value(root, "Iptc4xmpCore", "AltTextAccessibility") == {"x-default": "a dog on a beach"}
    assert xmp_value(root, "captioner", "Text") == "a dog on a beach"
    assert xmp_value(root, "captioner", "Review") == "approved"
    assert xmp_value(root, "captioner", "Confidence") is None  # no stale confidence beside new words
    no_model = Description("a dog on a beach at dusk", tool="captioner 0.2.0", model="", review="machine", confidence=None)
    assert write_sidecar(photo, no_model).action == "written"
    assert xmp_value(xmp_root(outcome.path), "captioner", "Model") is None


def test_same_text_again_is_unchanged_and_not_rewritten(tmp_path: Path) -> None:
    photo = make_photo(tmp_path, "png")
    sidecar = write_sidecar(photo, DESCRIPTION).path
    os.utime(sidecar, ns=(OLD_TIME_NS, OLD_TIME_NS))
    before = sidecar.read_bytes()
    newer_tool = Description(TEXT, tool="captioner 0.2.0", model="runs/best", review="machine", confidence=0.5)
    outcome = write_sidecar(photo, newer_tool)
    assert outcome.action == "unchanged" and str(sidecar) in outcome.message
    assert sidecar.read_bytes() == before and sidecar.stat().st_mtime_ns == OLD_TIME_NS


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    photo = make_photo(tmp_path, "jpeg")
    before = photo.read_bytes()
    sidecar = write_sidecar(photo, DESCRIPTION, dry_run=True)
    embedded = embed(photo, DESCRIPTION, dry_run=True)
    assert (sidecar.action, embedded.action) == ("would write", "would write")
    assert folder_listing(tmp_path) == ["photo.jpg"]
    assert photo.read_bytes() == before and photo.stat().st_mtime_ns == OLD_TIME_NS


def test_a_corrupt_sidecar_fails_and_stays_as_it_was(tmp_path: Path) -> None:
    photo = make_photo(tmp_path, "jpeg")
    sidecar = tmp_path / "photo.jpg.xmp"
    sidecar.write_text('<?xml version="1.0"?>\n<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><oops></x:xmpmeta>')
    before = sidecar.read_bytes()
    outcome = write_sidecar(photo, DESCRIPTION)
    assert outcome.action == "failed" and str(sidecar) in outcome.message and "\n" not in outcome.message
    assert sidecar.read_bytes() == before


def test_sidecar_for_a_missing_photo_or_a_bad_description_fails(tmp_path: Path) -> None:
    assert write_sidecar(tmp_path / "nowhere.jpg", DESCRIPTION).action == "failed"
    photo = make_photo(tmp_path, "jpeg")
    empty = Description("  ", tool="captioner", model="runs/default", review="machine", confidence=None)
    unknown_review = Description("a dog", tool="captioner", model="runs/default", review="maybe", confidence=None)
    assert write_sidecar(photo, empty).action == "failed"
    outcome = embed(photo, unknown_review)
    assert outcome.action == "failed" and "review" in outcome.message
    assert folder_listing(tmp_path) == ["photo.jpg"]


# --- embedding -----------------------------------------------------------------------------------------------

@tiff_iptc_warning
@pytest.mark.parametrize("kind", ["jpeg", "png", "tiff", "webp"])
def test_embed_writes_the_fields_and_keeps_everything_else(tmp_path: Path, kind: str) -> None:
    photo = make_photo(tmp_path, kind)
    before = photo.read_bytes()
    tags_before = exif_tags(photo)
    outcome = embed(photo, DESCRIPTION)
    assert (outcome.action, outcome.path) == ("written", photo), outcome.message
    after = photo.read_bytes()

    root = xmp_root(photo)
    assert xmp_value(root, "dc", "description") == {"x-default": TEXT}
    assert xmp_value(root, "Iptc4xmpCore", "AltTextAccessibility") == {"x-default": TEXT}
    assert xmp_value(root, "captioner", "Text") == TEXT and xmp_value(root, "captioner", "Review") == "machine"
    assert xmp_value(root, "xmp", "Rating") == "4" and xmp_value(root, "dc", "subject") == ["beach"]

    tags = exif_tags(photo)
    assert exif_text(tags[0x010E]) == TEXT
    for tag in (0x010F, 0x0110, 0x0112, 0x0132 if kind == "tiff" else 0x9003):
        assert tags[tag] == tags_before[tag]
    with Image.open(photo) as image:
        assert image.info["icc_profile"] == ICC
    assert pixels(after) == pixels(before)
    if kind == "jpeg":
        assert jpeg_scan(after) == jpeg_scan(before)
    assert photo.stat().st_mtime_ns == OLD_TIME_NS
    assert folder_listing(tmp_path) == [photo.name]
    assert embed(photo, DESCRIPTION).action == "unchanged"


@tiff_iptc_warning
@pytest.mark.parametrize("kind", ["jpeg", "tiff"])
def test_embed_sets_the_iptc_caption_and_keeps_the_keywords(tmp_path: Path, kind: str) -> None:
    photo = make_photo(tmp_path, kind)
    if kind == "tiff":
        add_iptc_keywords(photo)
    assert embed(photo, DESCRIPTION).action == "written"
    records = iptc_records(photo)
    assert records[(2, 120)].decode("utf-8") == TEXT
    assert records[(1, 90)] == b"\x1b%G"  # declared UTF-8
    assert records[(2, 25)] == [b"beach", b"holiday"]


def test_a_legacy_iptc_record_is_not_declared_utf8(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    picture().save(photo, exif=camera_exif("jpeg"), quality=90)
    image = exiv2.ImageFactory.open(str(photo))
    image.readMetadata()
    latin1 = exiv2.StringValue()
    with warnings.catch_warnings():  # python-exiv2 frowns on raw bytes; Latin-1 bytes are the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        latin1.read(b"Z\xfcrich", exiv2.ByteOrder.bigEndian)
    image.iptcData().add(exiv2.IptcKey("Iptc.Application2.Keywords"), latin1)
    image.writeMetadata()
    outcome = embed(photo, DESCRIPTION)
    assert outcome.action == "written" and "IPTC" in outcome.message
    assert iptc_records(photo) == {(2, 25): b"Z\xfcrich"}  # no caption, no UTF-8 declaration over Latin-1 keywords
    assert exif_text(exif_tags(photo)[0x010E]) == TEXT


def test_embed_into_png_writes_iptc_as_exiv2_stores_it(tmp_path: Path) -> None:
    photo = make_photo(tmp_path, "png")
    assert embed(photo, DESCRIPTION).action == "written"
    assert TEXT.encode("utf-8") in iptc_records(photo)[(0, 0)]


def test_embed_keeps_a_persons_description_unless_overwrite(tmp_path: Path) -> None:
    photo = make_photo(tmp_path, "jpeg", description="Grandma's garden, 1998")
    before = photo.read_bytes()
    kept = embed(photo, DESCRIPTION)
    assert kept.action == "kept" and str(photo) in kept.message
    assert photo.read_bytes() == before
    assert embed(photo, DESCRIPTION, overwrite=True).action == "written"
    assert exif_text(exif_tags(photo)[0x010E]) == TEXT


def test_embed_replaces_captioners_own_earlier_description(tmp_path: Path) -> None:
    photo = make_photo(tmp_path, "jpeg")
    assert embed(photo, DESCRIPTION).action == "written"
    newer = Description("a dog on a beach", tool="captioner 0.2.0", model="runs/best", review="edited", confidence=None)
    assert embed(photo, newer).action == "written"
    assert exif_text(exif_tags(photo)[0x010E]) == "a dog on a beach"
    assert iptc_records(photo)[(2, 120)] == b"a dog on a beach"
    assert xmp_value(xmp_root(photo), "dc", "description") == {"x-default": "a dog on a beach"}
    assert read_description(photo) == "a dog on a beach"


@pytest.mark.parametrize("format_name", ["GIF", "BMP"])
def test_formats_exiv2_cannot_write_are_skipped(tmp_path: Path, format_name: str) -> None:
    photo = tmp_path / f"photo.{format_name.lower()}"
    picture().save(photo, format_name)
    before = photo.read_bytes()
    outcome = embed(photo, DESCRIPTION)
    assert outcome.action == "skipped" and str(photo) in outcome.message and "sidecar" in outcome.message
    assert photo.read_bytes() == before
    assert write_sidecar(photo, DESCRIPTION).action == "written"  # a sidecar works for any format


@pytest.mark.parametrize("damage", ["truncated header", "truncated scan", "random bytes"])
def test_a_corrupt_photo_fails_with_one_line_and_stays_as_it_was(tmp_path: Path, damage: str) -> None:
    photo = make_photo(tmp_path, "jpeg")
    data = photo.read_bytes()
    broken = {"truncated header": data[:200], "truncated scan": data[:-40], "random bytes": os.urandom(2000)}[damage]
    photo.write_bytes(broken)
    outcome = embed(photo, DESCRIPTION)
    assert outcome.action == "failed" and outcome.message.startswith(f"failed: {photo}") and "\n" not in outcome.message
    assert photo.read_bytes() == broken
    assert folder_listing(tmp_path) == ["photo.jpg"]
    assert read_description(photo) is None


def test_unparsable_embedded_xmp_fails_instead_of_being_replaced(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    broken = xmp_packet().replace("</rdf:Description>", "").encode()  # not well-formed: Exiv2 would read it as empty
    picture().save(photo, exif=camera_exif("jpeg"), xmp=broken, quality=90)
    before = photo.read_bytes()
    outcome = embed(photo, DESCRIPTION)
    assert outcome.action == "failed" and "XMP" in outcome.message
    assert photo.read_bytes() == before


def test_embed_writes_through_a_symlink(tmp_path: Path) -> None:
    photo = make_photo(tmp_path, "jpeg")
    link = tmp_path / "link.jpg"
    link.symlink_to(photo.name)
    assert embed(link, DESCRIPTION).action == "written"
    assert link.is_symlink() and read_description(photo) == TEXT


@skip_as_root
def test_a_read_only_photo_fails(tmp_path: Path) -> None:
    photo = make_photo(tmp_path, "jpeg")
    before = photo.read_bytes()
    photo.chmod(0o444)
    outcome = embed(photo, DESCRIPTION)
    assert outcome.action == "failed" and "read-only" in outcome.message
    assert photo.read_bytes() == before


@skip_as_root
def test_a_read_only_folder_fails(tmp_path: Path) -> None:
    photo = make_photo(tmp_path, "jpeg")
    before = photo.read_bytes()
    tmp_path.chmod(0o555)
    try:
        for outcome in (write_sidecar(photo, DESCRIPTION), embed(photo, DESCRIPTION)):
            assert outcome.action == "failed" and "Permission denied" in outcome.message, outcome.message
    finally:
        tmp_path.chmod(0o755)
    assert photo.read_bytes() == before and folder_listing(tmp_path) == ["photo.jpg"]


def disk_full(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("step", ["os.replace", "shutil.copyfile"])
def test_a_full_disk_fails_and_leaves_the_photo_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    photo = make_photo(tmp_path, "jpeg")
    before = photo.read_bytes()
    monkeypatch.setattr(os if step == "os.replace" else shutil, step.split(".")[1], disk_full)
    outcome = embed(photo, DESCRIPTION)
    assert outcome.action == "failed" and "No space left on device" in outcome.message
    assert photo.read_bytes() == before and photo.stat().st_mtime_ns == OLD_TIME_NS
    assert folder_listing(tmp_path) == ["photo.jpg"]


def test_a_full_disk_leaves_an_existing_sidecar_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photo = make_photo(tmp_path, "jpeg")
    sidecar = tmp_path / "photo.jpg.xmp"
    sidecar.write_text(xmp_packet())
    before = sidecar.read_bytes()
    monkeypatch.setattr(os, "replace", disk_full)
    outcome = write_sidecar(photo, DESCRIPTION)
    assert outcome.action == "failed" and "No space left on device" in outcome.message
    assert sidecar.read_bytes() == before
    assert folder_listing(tmp_path) == ["photo.jpg", "photo.jpg.xmp"]
