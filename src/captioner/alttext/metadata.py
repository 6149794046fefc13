"""Write a photo's alt text into metadata that photo managers and screen readers read, through Exiv2.

    description = Description("A dog runs on a beach.", tool="captioner 0.1.0", model="runs/default",
                              review="machine", confidence=0.82)
    print(write_sidecar(Path("photos/dog.jpg"), description).message)   # photos/dog.jpg.xmp, the photo untouched
    print(embed(Path("photos/dog.jpg"), description).message)           # into the file: XMP + EXIF + IPTC

Fields: XMP dc:description and Iptc4xmpCore:AltTextAccessibility (IPTC Photo Metadata 2021.1), both LangAlt
x-default, plus a note in captioner's own namespace (Tool, Model, Review, Confidence and Text, the words written,
so a later run can tell its own description from a person's). Embedding also sets EXIF ImageDescription and,
where Exiv2 can write IPTC for the format (JPEG, PNG, TIFF; not WebP), IPTC Caption-Abstract. EXIF gets UTF-8
in its ASCII tag, as exiftool and digiKam write it; IPTC is declared UTF-8 unless its other texts are in a legacy
character set, where the caption is left out rather than garbling them. GIF, BMP and the rest are "skipped".

A description a person wrote is "kept" unless overwrite=True: any non-empty description (every language of both
XMP fields, EXIF, IPTC; for a sidecar, the photo's own too, which the sidecar would hide) other than captioner's
earlier words (captioner:Text). Camera placeholders ("OLYMPUS DIGITAL CAMERA", ...) count as empty. The same
words and review state already there is "unchanged", and nothing is touched.

Every function returns an Outcome instead of raising for a bad file, and every write is atomic: a temporary file
in the same folder is written, read back and checked (for embedding, also every other tag and the decoded
pixels), then renamed over the target, so a failure leaves the original as it was.
"""
from __future__ import annotations

import math
import os
import shutil
import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

import exiv2
from PIL import Image, ImageSequence

from captioner.io import atomic_write

NAMESPACE_URI = "https://github.com/captioner/ns/1.0/"
NAMESPACE_PREFIX = "captioner"
REVIEW_STATES = ("machine", "approved", "edited")
# what cameras put in ImageDescription when nobody wrote anything: not a person's description
CAMERA_PLACEHOLDERS = frozenset(
    name.casefold()
    for name in ("OLYMPUS DIGITAL CAMERA", "SONY DSC", "DIGITAL CAMERA", "default", "KONICA MINOLTA DIGITAL CAMERA",
                 "MINOLTA DIGITAL CAMERA", "SAMSUNG CAMERA PICTURES", "KODAK Digital Still Camera", "EXIF_JPEG_PICTURE")
)
# the formats embed() writes into: Exiv2 writes more (RAW files among them), but those are not ours to rewrite
# and Pillow could not check their pixels
EMBED_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/tiff": "TIFF", "image/webp": "WebP"}

DESCRIPTION_KEY = "Xmp.dc.description"
ALT_TEXT_KEY = "Xmp.iptc.AltTextAccessibility"  # Exiv2 calls the Iptc4xmpCore namespace "iptc"
EXIF_DESCRIPTION_KEY = "Exif.Image.ImageDescription"
IPTC_CAPTION_KEY = "Iptc.Application2.Caption"
IPTC_CHARSET_KEY = "Iptc.Envelope.CharacterSet"
IPTC_UTF8 = "\x1b%G"  # ISO 2022 escape that declares the IPTC record UTF-8
IPTC_CAPTION_BYTES = 2000  # the IIM limit for Caption-Abstract
NOTE_KEYS = {name: f"Xmp.{NAMESPACE_PREFIX}.{name}" for name in ("Tool", "Model", "Review", "Confidence", "Text")}
REMOVABLE_KEYS = {*NOTE_KEYS.values(), IPTC_CAPTION_KEY}  # the only keys a write may drop (see _set_xmp, _write_checked_copy)
SIDECAR_MIME = "application/rdf+xml"
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"


@dataclass(frozen=True)
class Description:
    """The alt text to write and who wrote it; `review` says whether a person accepted (or wrote) it."""
    text: str
    tool: str
    model: str
    review: str  # "machine" | "approved" | "edited"
    confidence: float | None


@dataclass(frozen=True)
class Outcome:
    """What happened to one file: action is written, unchanged, would write, kept, skipped or failed."""
    path: Path
    action: str
    message: str


@dataclass(frozen=True)
class _Found:
    """What one file already says: the descriptions a reader would show, and the note captioner left there."""
    where: Path
    texts: tuple[str, ...]  # every non-blank description: all languages of both XMP fields, EXIF, IPTC
    description: str | None  # dc:description x-default
    alt_text: str | None  # Iptc4xmpCore:AltTextAccessibility x-default
    own_text: str | None  # captioner:Text, the words captioner wrote last time
    review: str | None
    exif_description: str | None
    iptc_caption: str | None


@dataclass(frozen=True)
class _Support:
    """Which metadata blocks Exiv2 can write for one photo's format."""
    exif: bool
    iptc: bool
    xmp: bool


class _Refused(Exception):
    """A file this module will not write; the message is the one line the user sees."""


def _register_namespace() -> None:
    """Tell Exiv2 the captioner namespace so `Xmp.captioner.*` keys can be set and serialised."""
    exiv2.XmpProperties.registerNs(NAMESPACE_URI, NAMESPACE_PREFIX)


_register_namespace()
# Exiv2 warns about quirks of cameras' maker notes it reads past ("Directory NikonPreview has an unexpected next
# pointer"): not the user's problem. Its errors still come through, as the exceptions that name the file.
exiv2.LogMsg.setLevel(exiv2.LogMsg.Level.error)


def sidecar_path(photo: Path) -> Path:
    """The XMP sidecar for `photo`: an existing NAME.EXT.xmp, else an existing NAME.xmp, else NAME.EXT.xmp (digiKam's)."""
    photo = Path(photo)
    long_name = photo.with_name(photo.name + ".xmp")
    if long_name.exists():
        return long_name
    if photo.suffix:
        short_name = photo.with_suffix(".xmp")  # Lightroom's and darktable's older convention
        if short_name.exists():
            return short_name
    return long_name


def write_sidecar(photo: Path, description: Description, *, overwrite: bool = False, dry_run: bool = False) -> Outcome:
    """Write the alt text into the photo's XMP sidecar, merged with what is there; the photo is only read."""
    photo = Path(photo)
    target = sidecar_path(photo)
    try:
        text = _checked_text(description)
        if not photo.is_file():
            raise _Refused(f"the photo {photo} is not a file")
        sidecar = _read_sidecar(target) if target.exists() else None
        xmp = sidecar.xmpData() if sidecar is not None else exiv2.XmpData()
        found = _found(target, xmp)
        if _already_written(found, text, description.review):
            return Outcome(target, "unchanged", f"{target} already has this alt text")
        # a person's description in the photo itself would be hidden behind the sidecar's, so it counts too
        candidates = [found, _photo_found(photo)]
        person = _person_description([each for each in candidates if each is not None], text)
        if person is not None and not overwrite:
            return _kept(target, person)
        if dry_run:
            return Outcome(target, "would write", f"would write the alt text to {target}")
        if target.exists() and not os.access(target, os.W_OK):
            raise _Refused("the sidecar is read-only")
        before = _keys(xmp)
        _set_xmp(xmp, description, text)
        packet = _encode_sidecar(xmp)
        atomic_write(target, _as_target(target, lambda temp: _write_checked_sidecar(temp, packet, before, description, text)))
        return Outcome(target, "written", f"wrote the alt text to {target}")
    except Exception as error:  # the contract: an Outcome for any bad file; exiv2 and Pillow raise many types
        return _failed(target, error)


def embed(photo: Path, description: Description, *, overwrite: bool = False, dry_run: bool = False) -> Outcome:
    """Write the alt text into the photo file itself (XMP, EXIF, IPTC where the format holds it), atomically."""
    photo = Path(photo)
    try:
        text = _checked_text(description)
        if not photo.is_file():
            raise _Refused("not a file")
        image = _open(photo)
        _refuse_unparsed_xmp(image)
        kind = EMBED_FORMATS.get(image.mimeType())
        support = _support(image)
        if kind is None or not support.xmp:
            name = kind or image.mimeType()
            return Outcome(photo, "skipped", f"skipped {photo}: Exiv2 cannot write metadata into {name} files; write a sidecar instead")
        found = _found(photo, image.xmpData(), image.exifData() if support.exif else None,
                       image.iptcData() if support.iptc else None)
        iptc_problem = _iptc_problem(image.iptcData(), text) if support.iptc else None
        iptc = support.iptc and iptc_problem is None
        if _already_written(found, text, description.review, exif=support.exif, iptc=iptc):
            return Outcome(photo, "unchanged", f"{photo} already has this alt text")
        person = _person_description([found], text)
        if person is not None and not overwrite:
            return _kept(photo, person)
        if dry_run:
            return Outcome(photo, "would write", f"would write the alt text into {photo}")
        if not os.access(photo, os.W_OK):
            raise _Refused("the photo is read-only")
        del image
        target = Path(os.path.realpath(photo))  # write through a symlink, not over it
        times = target.stat()
        pixels = _pixel_digest(target)
        atomic_write(target, _as_target(target, lambda temp: _write_checked_copy(target, temp, description, text, pixels, times)))
        note = f" (no IPTC Caption-Abstract: {iptc_problem})" if iptc_problem else ""
        return Outcome(photo, "written", f"wrote the alt text into {photo}{note}")
    except Exception as error:  # the contract: an Outcome for any bad file; exiv2 and Pillow raise many types
        return _failed(photo, error)


def read_description(path: Path) -> str | None:
    """The dc:description (x-default, else the first language) of a photo or sidecar; None if absent or unreadable."""
    try:
        image = _open(Path(path))
        languages = _lang_alt(image.xmpData(), DESCRIPTION_KEY)
    except Exception:  # unreadable reads as "no description", as the signature promises callers
        return None
    return languages.get("x-default") or next(iter(languages.values()), None)


# --- reading -----------------------------------------------------------------------------------------------

def _open(path: Path) -> exiv2.Image:
    """Exiv2's view of a file (photo or sidecar) with its metadata read."""
    image = exiv2.ImageFactory.open(str(path))
    image.readMetadata()
    return image


def _read_sidecar(path: Path) -> exiv2.Image | None:
    """The existing sidecar, opened; None for an empty file. Refuses one Exiv2 cannot parse (it would read as empty)."""
    content = path.read_bytes()
    if not content.strip():
        return None
    image = _open(path)
    if image.mimeType() != SIDECAR_MIME:
        raise _Refused("not an XMP sidecar")
    _refuse_unparsed_xmp(image)
    return image


def _refuse_unparsed_xmp(image: exiv2.Image) -> None:
    """Refuse a file whose XMP packet Exiv2 could not parse: it only warns and reads it as empty, so a write would erase it."""
    packet = image.xmpPacket()
    if packet.strip() and len(image.xmpData()) == 0 and _has_properties(packet.encode("utf-8", "surrogateescape")):
        raise _Refused("cannot parse its XMP; fix or remove it")


def _has_properties(content: bytes) -> bool:
    """Whether an XMP packet holds any property (an unparsable one counts: it may)."""
    try:
        root = ElementTree.fromstring(content)
    except ElementTree.ParseError:
        return True
    for node in root.iter(f"{RDF}Description"):
        if len(node) or any(name != f"{RDF}about" for name in node.attrib):
            return True
    return False


def _photo_found(photo: Path) -> _Found | None:
    """What the photo itself says, for a sidecar write; None where Exiv2 cannot read it (the sidecar still works)."""
    try:
        image = _open(photo)
        support = _support(image, mode=exiv2.AccessMode.amRead)
        return _found(photo, image.xmpData(), image.exifData() if support.exif else None,
                      image.iptcData() if support.iptc else None)
    except Exception:  # a sidecar can describe any file, even one Exiv2 cannot parse
        return None


def _support(image: exiv2.Image, mode: exiv2.AccessMode = exiv2.AccessMode.amWrite) -> _Support:
    """Which metadata blocks the image's format allows for `mode` (write by default)."""
    def allows(block: exiv2.MetadataId) -> bool:
        return bool(image.checkMode(block) & mode)
    return _Support(exif=allows(exiv2.MetadataId.mdExif), iptc=allows(exiv2.MetadataId.mdIptc), xmp=allows(exiv2.MetadataId.mdXmp))


def _lang_alt(xmp: exiv2.XmpData, key: str) -> dict[str, str]:
    """A LangAlt property as {language: text}; a plain text where a LangAlt belongs reads as x-default."""
    if key not in xmp:  # `xmp[key]` on a missing key would add it
        return {}
    value = xmp[key].value()
    if isinstance(value, exiv2.LangAltValue):
        return dict(value)
    return {"x-default": value.toString()}


def _text(data: exiv2.XmpData | exiv2.ExifData | exiv2.IptcData | None, key: str) -> str | None:
    """A simple property's text, or None."""
    if data is None or key not in data:
        return None
    return data[key].toString()


def _found(where: Path, xmp: exiv2.XmpData, exif: exiv2.ExifData | None = None, iptc: exiv2.IptcData | None = None) -> _Found:
    """Collect the descriptions and captioner's note from one file's metadata."""
    description, alt_text = _lang_alt(xmp, DESCRIPTION_KEY), _lang_alt(xmp, ALT_TEXT_KEY)
    exif_description = _text(exif, EXIF_DESCRIPTION_KEY)
    iptc_caption = _text(iptc, IPTC_CAPTION_KEY)
    every = [*description.values(), *alt_text.values(), exif_description, iptc_caption]
    return _Found(
        where=where,
        texts=tuple(_clean(text) for text in every if not _is_blank(text)),
        description=description.get("x-default"),
        alt_text=alt_text.get("x-default"),
        own_text=_text(xmp, NOTE_KEYS["Text"]),
        review=_text(xmp, NOTE_KEYS["Review"]),
        exif_description=exif_description,
        iptc_caption=iptc_caption,
    )


def _clean(text: str) -> str:
    """A stored text as a reader sees it: EXIF pads with NULs, editors leave spaces."""
    return text.replace("\x00", "").strip()


def _is_blank(text: str | None) -> bool:
    """Empty, whitespace, or a camera's placeholder: nobody described the photo."""
    return text is None or not _clean(text) or _clean(text).casefold() in CAMERA_PLACEHOLDERS


def _keys(data: exiv2.XmpData | exiv2.ExifData | exiv2.IptcData) -> Counter[str]:
    """Every key in a metadata block, counted (IPTC repeats Keywords)."""
    return Counter(datum.key() for datum in data)


# --- deciding ------------------------------------------------------------------------------------------------

def _checked_text(description: Description) -> str:
    """The alt text to write, stripped; refuses a description no metadata field should hold."""
    if not isinstance(description, Description):
        raise _Refused(f"expected a Description, got {type(description).__name__}")
    if not isinstance(description.text, str) or not description.text.strip():
        raise _Refused("the alt text is empty")
    if any(ord(char) < 32 and char not in "\t\n\r" for char in description.text):
        raise _Refused("the alt text contains control characters, which XMP cannot hold")
    if description.review not in REVIEW_STATES:
        raise _Refused(f"review must be one of {', '.join(REVIEW_STATES)}, got {description.review!r}")
    confidence = description.confidence
    if confidence is not None and not (isinstance(confidence, (int, float)) and math.isfinite(confidence) and 0 <= confidence <= 1):
        raise _Refused(f"confidence must be a number in [0, 1] or None, got {confidence!r}")
    if not isinstance(description.tool, str) or not isinstance(description.model, str):
        raise _Refused("tool and model must be strings")
    return description.text.strip()


def _already_written(found: _Found, text: str, review: str, *, exif: bool = False, iptc: bool = False) -> bool:
    """Whether every field would keep its value; a new tool or model version with the same words is no change."""
    fields = [found.description, found.alt_text, found.own_text]
    fields += [found.exif_description] if exif else []
    fields += [found.iptc_caption] if iptc else []
    return all(field is not None and _clean(field) == text for field in fields) and found.review == review


def _person_description(found: list[_Found], text: str) -> _Found | None:
    """The first file holding a description that is neither captioner's own earlier one nor the text to write."""
    own = {_clean(each.own_text) for each in found if each.own_text}
    for each in found:
        if any(existing not in own and existing != text for existing in each.texts):
            return each
    return None


def _iptc_problem(iptc: exiv2.IptcData, text: str) -> str | None:
    """Why the caption cannot go into this IPTC record, or None when it can (the record is, or can be declared, UTF-8)."""
    if len(text.encode("utf-8")) > IPTC_CAPTION_BYTES:
        return f"the text is over IPTC's {IPTC_CAPTION_BYTES} bytes"
    if not text.isascii() and iptc.detectCharset() not in ("ASCII", "UTF-8"):
        # declaring UTF-8 would garble the record's other texts (keywords in Latin-1, say)
        return "the IPTC record is in a legacy character set, not UTF-8"
    return None


# --- writing -------------------------------------------------------------------------------------------------

def _set_xmp(xmp: exiv2.XmpData, description: Description, text: str) -> None:
    """Set both description fields (x-default; other languages stay) and captioner's note."""
    for key in (DESCRIPTION_KEY, ALT_TEXT_KEY):
        languages = _lang_alt(xmp, key)
        languages["x-default"] = text
        xmp[key] = exiv2.LangAltValue(languages)
    confidence = None if description.confidence is None else f"{description.confidence:.3f}"
    note = {"Tool": description.tool, "Model": description.model, "Review": description.review, "Confidence": confidence, "Text": text}
    for name, value in note.items():
        key = NOTE_KEYS[name]
        if value:
            xmp[key] = value
        elif key in xmp:
            del xmp[key]  # no stale note field (a confidence, say) from an earlier run beside new words


def _encode_sidecar(xmp: exiv2.XmpData) -> bytes:
    """A sidecar file's bytes, laid out as Exiv2's own sidecars are (XML declaration, no packet wrapper)."""
    flags = exiv2.XmpParser.XmpFormatFlags.omitPacketWrapper | exiv2.XmpParser.XmpFormatFlags.useCompactFormat
    status, packet = exiv2.XmpParser.encode(xmp, flags)
    if status != 0:
        raise _Refused(f"Exiv2 could not serialise the XMP (status {status})")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + packet).encode("utf-8")


def _write_checked_sidecar(temp: Path, packet: bytes, before: Counter[str], description: Description, text: str) -> None:
    """Write the sidecar packet to `temp` and read it back: the fields are there and every other property kept."""
    temp.write_bytes(packet)
    image = _open(temp)
    _check(temp, _found(temp, image.xmpData()), description, text)
    _check_kept("XMP", before, _keys(image.xmpData()))


def _write_checked_copy(photo: Path, temp: Path, description: Description, text: str, pixels: str, times: os.stat_result) -> None:
    """Copy the photo to `temp`, write the fields into the copy, check it, and give it the photo's times."""
    shutil.copyfile(photo, temp)
    image = _open(temp)
    support = _support(image)
    blocks = _blocks(image, support)
    before = {name: _keys(block) for name, block in blocks.items()}
    _set_xmp(image.xmpData(), description, text)
    if support.exif:
        image.exifData()[EXIF_DESCRIPTION_KEY] = text  # UTF-8 bytes in an ASCII tag, as exiftool and digiKam write
    iptc = support.iptc and _iptc_problem(image.iptcData(), text) is None
    if iptc:
        _set_iptc(image.iptcData(), text)
    elif support.iptc and IPTC_CAPTION_KEY in image.iptcData():
        del image.iptcData()[IPTC_CAPTION_KEY]  # an older caption there would contradict the new description
    image.writeMetadata()
    del image
    written = _open(temp)
    found = _found(temp, written.xmpData(), written.exifData() if support.exif else None, written.iptcData() if iptc else None)
    _check(temp, found, description, text, exif=support.exif, iptc=iptc)
    for name, block in _blocks(written, support).items():
        _check_kept(name, before[name], _keys(block))
    if _pixel_digest(temp) != pixels:
        raise _Refused("the pixels would change; nothing written")
    os.utime(temp, ns=(times.st_atime_ns, times.st_mtime_ns))  # photo managers sort and sync by mtime


def _as_target(target: Path, write: Callable[[Path], None]) -> Callable[[str], None]:
    """A write into a temp file whose Exiv2 errors name the target, not the hidden temp file."""
    def write_temp(temp: str) -> None:
        try:
            write(Path(temp))
        except exiv2.Exiv2Error as error:
            raise _Refused(str(error.message).replace(temp, str(target))) from error
    return write_temp


def _blocks(image: exiv2.Image, support: _Support) -> dict[str, exiv2.XmpData | exiv2.ExifData | exiv2.IptcData]:
    """The writable metadata blocks of an image, by name."""
    blocks: dict[str, exiv2.XmpData | exiv2.ExifData | exiv2.IptcData] = {"XMP": image.xmpData()}
    if support.exif:
        blocks["EXIF"] = image.exifData()
    if support.iptc:
        blocks["IPTC"] = image.iptcData()
    return blocks


def _set_iptc(iptc: exiv2.IptcData, text: str) -> None:
    """Set Caption-Abstract, declaring the record UTF-8 when it is not yet (only called when that is safe)."""
    if _text(iptc, IPTC_CHARSET_KEY) != IPTC_UTF8 and iptc.detectCharset() in ("ASCII", "UTF-8"):
        iptc[IPTC_CHARSET_KEY] = IPTC_UTF8
    iptc[IPTC_CAPTION_KEY] = text


def _check(path: Path, found: _Found, description: Description, text: str, *, exif: bool = False, iptc: bool = False) -> None:
    """Refuse a written file whose fields do not read back as written."""
    fields = {"dc:description": found.description, "AltTextAccessibility": found.alt_text, "captioner:Text": found.own_text}
    if exif:
        fields["EXIF ImageDescription"] = found.exif_description
    if iptc:
        fields["IPTC Caption-Abstract"] = found.iptc_caption
    wrong = [name for name, value in fields.items() if value is None or _clean(value) != text]
    if found.review != description.review:
        wrong.append("captioner:Review")
    if wrong:
        raise _Refused(f"{', '.join(wrong)} did not read back as written; nothing changed")


def _check_kept(block: str, before: Counter[str], after: Counter[str]) -> None:
    """Refuse a write that lost any tag other than the ones this module manages."""
    lost = [key for key, count in before.items() if after[key] < count and key not in REMOVABLE_KEYS]
    if lost:
        raise _Refused(f"writing would drop {block} {', '.join(sorted(lost)[:3])}; nothing changed")


def _frames(image: Image.Image) -> Iterator[Image.Image]:
    """Every frame of an image (multi-page TIFF, animated WebP), each loaded."""
    for frame in ImageSequence.Iterator(image):
        frame.load()
        yield frame


def _pixel_digest(path: Path) -> str:
    """A hash of the decoded pixels of every frame, to prove a metadata write left them alone."""
    digest = sha256()
    try:
        with Image.open(path) as image:
            for frame in _frames(image):
                digest.update(f"{frame.mode} {frame.size}".encode())
                digest.update(frame.tobytes())
    except (OSError, SyntaxError, ValueError) as error:  # Pillow's ways of saying "truncated" or "corrupt"
        raise _Refused(f"cannot decode the pixels ({error}); nothing written") from error
    return digest.hexdigest()


# --- reporting -----------------------------------------------------------------------------------------------

def _kept(path: Path, person: _Found) -> Outcome:
    """The Outcome for a description a person wrote, which stays unless the caller passes overwrite=True."""
    if person.where == path:
        return Outcome(path, "kept", f"kept {path}: it has a description captioner did not write; --overwrite replaces it")
    message = f"kept: {person.where} has a description captioner did not write, which {path} would hide; --overwrite writes it"
    return Outcome(path, "kept", message)


def _failed(path: Path, error: Exception) -> Outcome:
    """One line naming the file and what went wrong."""
    if isinstance(error, exiv2.Exiv2Error):
        reason = "Exiv2 cannot read or write it: " + str(error.message).removeprefix(f"{path}: ")
    elif isinstance(error, OSError) and error.strerror:
        reason = error.strerror
        if error.filename and Path(error.filename).name.startswith(f".{Path(path).name}."):
            reason += f" (writing a temporary file in {Path(error.filename).parent})"  # our temp file: name its folder
        elif error.filename and Path(error.filename) != Path(path):
            reason += f": {error.filename}"
    else:
        reason = str(error) or type(error).__name__
    reason = " ".join(reason.split())
    return Outcome(path, "failed", f"failed: {path}: {reason}")
