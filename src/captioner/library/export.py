"""Exports of a photo library: CSV and JSON Lines (every field of every photo, for other tools) and one
self-contained HTML page (thumbnails, captions, confidence and the failed files, for people).

Each export streams `Library.photos()` into a temporary file beside the target and renames it into place
(captioner.io.atomic_write), so memory stays flat however large the library is, and a killed export leaves
the old file whole. Each returns the number of photos it wrote.
"""
from __future__ import annotations

import base64
import csv
import html
import json
import math
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO, Any

from captioner.errors import ImageError
from captioner.io import atomic_write
from captioner.library.store import COLUMNS, Library, Photo
from captioner.library.thumbnails import jpeg_thumbnail

# C0 controls (less tab and newline), DEL and C1: not allowed as HTML text; a file name may still hold them
CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _open_text(path: str | Path, mode: str = "w") -> IO[str]:
    # backslashreplace: a lone surrogate in a caption becomes \udcxx text (a valid JSON escape) instead of a crash
    return open(path, mode, encoding="utf-8", errors="backslashreplace", newline="")


def _stream(out: Path, write_rows: Callable[[IO[str]], int]) -> int:
    """Run write_rows on a temp file beside `out`, then rename it onto `out`; return its count."""
    written = 0

    def write(temp_path: str) -> None:
        nonlocal written
        with _open_text(temp_path) as stream:
            written = write_rows(stream)

    atomic_write(out, write)
    return written


# ---- CSV and JSON Lines --------------------------------------------------------------------------------------
def _csv_cell(value: Any) -> str:
    """One field as CSV text: lists as JSON, booleans as true/false, None as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)  # str(float) round-trips exactly


EXPORTED = [*COLUMNS, "needs_review"]  # every stored field, and whether a person should check the caption first
REVIEW_WORDS = {"approved": "Approved by a person.", "edited": "Written by a person."}


def export_csv(library: Library, out: Path) -> int:
    """Every photo as one CSV row under a header of the field names."""
    def rows(stream: IO[str]) -> int:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(EXPORTED)
        count = 0
        for photo in library.photos():
            values = photo.record()
            writer.writerow([_csv_cell(values[name]) for name in EXPORTED])
            count += 1
        return count

    return _stream(Path(out), rows)


def export_jsonl(library: Library, out: Path) -> int:
    """Every photo as one JSON object per line (JSON Lines): Photo.record()."""
    def rows(stream: IO[str]) -> int:
        count = 0
        for photo in library.photos():
            stream.write(json.dumps(photo.record(), ensure_ascii=False) + "\n")
            count += 1
        return count

    return _stream(Path(out), rows)


# ---- HTML --------------------------------------------------------------------------------------------------
STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; color: #1a1a1a; background: #fafafa; line-height: 1.4; }
main { max-width: 80rem; margin: 0 auto; padding: 1rem; }
.grid { list-style: none; padding: 0; display: grid; gap: 1rem; grid-template-columns: repeat(auto-fill, minmax(16rem, 1fr)); }
figure { margin: 0; padding: 0.75rem; background: #fff; border: 1px solid #ccc; border-radius: 0.4rem; }
figure.doubtful { border: 3px solid #a35200; }
img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption p { margin: 0.3rem 0; }
.caption { font-weight: 600; }
.review { color: #7a3d00; }
.note { color: #555; font-style: italic; }
.path { font-family: ui-monospace, monospace; font-size: 0.85rem; color: #444; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #bbb; padding: 0.3rem 0.5rem; text-align: left; vertical-align: top; overflow-wrap: anywhere; }
"""


def _text(value: object) -> str:
    """Any value as escaped HTML text (attribute-safe too), with control characters shown as \\xNN."""
    cleaned = CONTROL_CHARACTERS.sub(lambda match: f"\\x{ord(match.group()):02x}", str(value))
    return html.escape(cleaned, quote=True)


def as_sentence(caption: str) -> str:
    """A caption as alt text reads: capital first letter, final full stop (as the web page does it)."""
    text = caption.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _inside_root(relative: str) -> bool:
    # a row's path comes from the file; never read outside the root for one that names an absolute or ../ path
    for pure in (PurePosixPath(relative), PureWindowsPath(relative)):
        if pure.is_absolute() or pure.drive or ".." in pure.parts:
            return False
    return bool(relative)


def thumbnail(path: Path, size: int) -> tuple[str, int, int]:
    """A photo as a JPEG data URI no larger than size x size: (uri, width, height); ImageError when it cannot be read."""
    data, width, height = jpeg_thumbnail(path, size)
    return f"data:image/jpeg;base64,{base64.b64encode(data).decode('ascii')}", width, height


def _thumbnail_or_note(library: Library, photo: Photo, size: int) -> tuple[tuple[str, int, int] | None, str | None]:
    """The photo's thumbnail, or None and a note that says why there is none; never raises for one bad file."""
    if not _inside_root(photo.path):
        return None, "No thumbnail: the path points outside the library's folder."
    path = library.root / photo.path
    try:
        return thumbnail(path, size), None
    except ImageError as error:
        if not path.exists():
            return None, "No thumbnail: the file is no longer there."
        reason = str(error).removeprefix(f"{path}: ")  # the absolute path is noise here; the row shows the relative one
        return None, f"No thumbnail: the file cannot be read: {reason}."
    except Exception as error:  # Pillow can fail in many ways while shrinking or encoding; one photo must not stop the page
        return None, f"No thumbnail: the file cannot be read: {type(error).__name__}: {error}."


def _figure(library: Library, photo: Photo, size: int) -> str:
    """One photo's <li>: thumbnail (or a note), caption, confidence, review marker, path."""
    picture, note = _thumbnail_or_note(library, photo, size)
    caption = as_sentence(photo.caption) if photo.caption else ""
    alt = caption or f"Photo {photo.path}, not captioned yet."
    parts = [f'<li><figure class="{"doubtful" if photo.needs_review else "photo"}">']
    if picture is not None:
        uri, width, height = picture
        parts.append(f'<img src="{uri}" alt="{_text(alt)}" width="{width}" height="{height}">')
    parts.append("<figcaption>")
    parts.append(f'<p class="caption">{_text(caption)}</p>' if caption else '<p class="caption note">Not captioned yet.</p>')
    if isinstance(photo.confidence, (int, float)) and math.isfinite(photo.confidence):
        parts.append(f'<p class="confidence">Confidence {round(photo.confidence * 100)}%</p>')
    if photo.needs_review:
        # in words, not only the border colour: a blind reader must not take this caption on trust
        parts.append('<p class="review"><strong>Needs review:</strong> doubtful caption; check it before using it as alt text.</p>')
    elif photo.reviewed:
        parts.append(f'<p class="reviewed">{REVIEW_WORDS[photo.review]}</p>')
    if photo.source == "fallback":
        parts.append('<p class="note">The model\'s own captions conflicted with what it recognised, so this one says less.</p>')
    if note is not None:
        parts.append(f'<p class="note">{_text(note)}</p>')
    parts.append(f'<p class="path">{_text(photo.path)}</p>')
    parts.append("</figcaption></figure></li>\n")
    return "".join(parts)


def _failure_row(photo: Photo) -> str:
    return f"<tr><td>{_text(photo.path)}</td><td>{_text(photo.error)}</td></tr>\n"


@dataclass
class _Counts:
    photos: int = 0
    captioned: int = 0
    needs_review: int = 0
    failed: int = 0


def _head(library: Library, counts: _Counts) -> str:
    title = f"Captions for {library.root.name or library.root}"
    summary = (f"{_plural(counts.photos, 'photo')}: {counts.captioned} captioned, {counts.needs_review} need review, "
               f"{counts.failed} failed.")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_text(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n"
            f"<h1>{_text(title)}</h1>\n<p class=\"summary\">{_text(summary)}</p>\n"
            "<section aria-labelledby=\"photos-heading\">\n<h2 id=\"photos-heading\">Photos</h2>\n")


def _failures_head(counts: _Counts) -> str:
    text = "</section>\n<section aria-labelledby=\"failed-heading\">\n<h2 id=\"failed-heading\">Failed files</h2>\n"
    if not counts.failed:
        return text + "<p>No file failed.</p>\n"
    return (text + "<table>\n<caption>Files that could not be captioned, and why</caption>\n"
            "<thead><tr><th scope=\"col\">File</th><th scope=\"col\">Error</th></tr></thead>\n<tbody>\n")


def export_html(library: Library, out: Path, *, thumbnail_px: int = 256) -> int:
    """One self-contained HTML page: a summary, a grid of thumbnails with their captions, and a table of failed files."""
    out = Path(out)

    def page(stream: IO[str]) -> int:
        counts, shown = _Counts(), 0
        # the summary at the top needs counts only known at the end: one pass writes the grid and the failures to
        # spill files beside the target (flat memory, each thumbnail made once), then they are joined behind the head
        with tempfile.TemporaryFile("w+", dir=out.parent, encoding="utf-8", errors="backslashreplace") as grid, \
                tempfile.TemporaryFile("w+", dir=out.parent, encoding="utf-8", errors="backslashreplace") as failures:
            for photo in library.photos():
                counts.photos += 1
                counts.captioned += photo.caption is not None
                counts.needs_review += photo.needs_review
                if photo.error is not None:
                    counts.failed += 1
                    failures.write(_failure_row(photo))
                if photo.caption is not None or photo.error is None:  # a failed file without a caption has only its table row
                    grid.write(_figure(library, photo, thumbnail_px))
                    shown += 1
            stream.write(_head(library, counts))
            if shown:
                stream.write('<ul class="grid">\n')
                grid.seek(0)
                shutil.copyfileobj(grid, stream)
                stream.write("</ul>\n")
            else:
                stream.write("<p>No photos to show.</p>\n")
            stream.write(_failures_head(counts))
            if counts.failed:
                failures.seek(0)
                shutil.copyfileobj(failures, stream)
                stream.write("</tbody>\n</table>\n")
        stream.write("</section>\n</main>\n</body>\n</html>\n")
        return counts.photos

    return _stream(out, page)
