"""HTML pages for alt text, with no model: find each <img> start tag and its exact bytes, resolve its image to a
local file of the site, and patch a page by inserting ` alt="..."` after `<img`, every other byte left as it was.

    page = read_page(Path("site/index.html"))                    # PageError: unreadable or undecodable
    for image in page.images:
        if not image.has_alt:
            located = locate_image(image_source(image), page=page, site=Path("site"))  # .kind: "local", "remote", ...
    write_alt_texts(page, {image.index: "A dog runs on the grass."})   # atomic, with page.html.bak, verified

The page is decoded (BOM, else a declared charset in its first 1024 bytes, else UTF-8) only to find the tags;
the patch is made in the original bytes, so line endings, odd spacing, upper-case tags and malformed markup
all stay exactly as they were.
"""
from __future__ import annotations

import codecs
import contextlib
import html
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlsplit

from captioner.errors import CaptionerError
from captioner.io import atomic_write

PAGE_SUFFIXES = (".html", ".htm", ".xhtml")
MAX_PAGE_BYTES = 64 * 1024 * 1024  # a bigger "page" is generated data, not something to patch by hand
PRESCAN_BYTES = 1024  # where a <meta charset> must be, as browsers look for it
BACKUP_SUFFIX = ".bak"
HTML_WHITESPACE = " \t\n\r\f"
# elements whose content browsers read as text, not markup: an <img> written there is not an image.
# (script and style the parser already treats so; <template> and <noscript> content can render, so it counts)
RAW_TEXT_ELEMENTS = ("textarea", "title", "xmp", "iframe", "noembed", "noframes")
BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
# C0 and C1 controls (tab, newline and friends included) and lone surrogates: not for alt text
UNFIT_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class PageError(CaptionerError):
    """A page that cannot be read, decoded or patched; the message is one line and the page is left as it was."""


# ---- reading ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageTag:
    """One <img> start tag: where its bytes are in the file and what its attributes say."""

    index: int  # its position among the page's <img> tags, 0 first
    line: int  # 1-based, for messages
    start: int  # byte offset of "<img" in the file
    insert_at: int  # byte offset just after "<img": where an alt attribute goes
    attributes: tuple[tuple[str, str | None], ...]  # names lower-cased, values with character references decoded

    def attribute(self, name: str) -> str | None:
        """The first value of an attribute ("" for one written without a value), None when it is absent."""
        for key, value in self.attributes:
            if key == name:
                return value or ""
        return None

    @property
    def alt(self) -> str | None:
        return self.attribute("alt")

    @property
    def has_alt(self) -> bool:
        return self.alt is not None

    @property
    def decorative(self) -> bool:
        # alt="" is the author saying "nothing to describe": left alone
        return self.alt is not None and not self.alt.strip(HTML_WHITESPACE)


@dataclass(frozen=True)
class Page:
    """A page as read: its exact bytes, how they decode, its <img> tags and its <base href>, if any."""

    path: Path
    data: bytes
    encoding: str  # the Python codec of the text after the BOM
    bom: bytes
    images: tuple[ImageTag, ...]
    base_href: str | None = None
    problems: tuple[str, ...] = ()  # tags that were found but could not be located byte-exactly


def _charset_label(label: str) -> str | None:
    """A declared charset as a Python codec name that can be patched safely, or None for one we cannot use."""
    label = label.strip(HTML_WHITESPACE + "'\"").lower()
    normal = label.replace("_", "-")
    if normal.startswith(("utf-16", "utf-32")):
        return "utf-8"  # a <meta> that reads as ASCII is not in UTF-16/32: browsers take UTF-8 then, and so do we
    if not label or normal.startswith("utf-7"):
        return None
    try:
        name = codecs.lookup(label).name
        if b'<img alt="">'.decode(name) != '<img alt="">':  # not ASCII-compatible: its tags could not be found
            return None
    except (LookupError, UnicodeDecodeError):  # unknown, or not a text encoding (base64, rot13, ...)
        return None
    return name


class _CharsetScan(HTMLParser):
    """Reads a declared charset: <meta charset>, <meta http-equiv="content-type" content="...; charset=...">, <?xml encoding?>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.declared: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "meta" or self.declared is not None:
            return
        values: dict[str, str] = {}
        for name, value in attrs:
            values.setdefault(name, value or "")
        if values.get("charset", "").strip():
            self.declared = values["charset"]
        elif values.get("http-equiv", "").strip().lower() == "content-type":
            match = re.search(r"charset\s*=\s*[\"']?([^\"';\s]+)", values.get("content", ""), re.IGNORECASE)
            if match:
                self.declared = match.group(1)

    def handle_pi(self, data: str) -> None:
        match = re.match(r"xml\s.*?encoding\s*=\s*[\"']([^\"']+)[\"']", data, re.IGNORECASE | re.DOTALL)
        if match and self.declared is None:
            self.declared = match.group(1)


def declared_charset(data: bytes) -> str | None:
    """The charset a page declares in its first 1024 bytes, as written, or None."""
    scan = _CharsetScan()
    try:
        scan.feed(data[:PRESCAN_BYTES].decode("latin-1"))  # latin-1: every byte maps to one character
        scan.close()
    except Exception:  # a prescan that trips on odd markup only means no declaration was found
        pass
    return scan.declared


def decode_page(data: bytes) -> tuple[str, str, bytes]:
    """(text, codec, bom): by BOM, else the declared charset, else UTF-8; PageError when the bytes do not decode."""
    bom, codec, label = b"", "utf-8", None
    for mark, name in BOMS:
        if data.startswith(mark):
            bom, codec = mark, name
            break
    else:
        label = declared_charset(data)
        codec = (_charset_label(label) if label is not None else None) or "utf-8"
    body = data[len(bom):]
    try:
        text = body.decode(codec)
    except UnicodeDecodeError as error:
        where = f"byte 0x{body[error.start]:02x} at offset {error.start + len(bom)}"
        if bom:
            raise PageError(f"does not decode as {codec}, as its byte order mark says ({where}); left as it is") from None
        if label is None:
            raise PageError(f"not UTF-8 ({where}) and no charset declared; left as it is") from None
        if _charset_label(label) is None:
            raise PageError(f"declares charset {label!r}, which cannot be used, and is not UTF-8 ({where}); left as it is") from None
        raise PageError(f"does not decode as its declared charset {label!r} ({where}); left as it is") from None
    if text.encode(codec) != body:  # a stateful or lossy codec: an offset in the text would not be one in the bytes
        raise PageError(f"its encoding {codec} does not round-trip byte for byte; left as it is")
    return text, codec, bom


class _ImageScan(HTMLParser):
    """Collects every <img> start tag as (line, column, tag text, attributes), and the first <base href>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[int, int, str, list[tuple[str, str | None]]]] = []
        self.base_href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            line, column = self.getpos()
            self.found.append((line, column, self.get_starttag_text() or "", attrs))
        elif tag == "base" and self.base_href is None:
            href = dict(attrs).get("href")
            if href is not None:
                self.base_href = href
        elif tag in RAW_TEXT_ELEMENTS and self.cdata_elem is None:
            self.set_cdata_mode(tag)


def _line_starts(text: str) -> list[int]:
    """Offsets where each line begins, counting lines as HTMLParser.getpos() does: after each "\\n" only."""
    starts, position = [0], text.find("\n")
    while position != -1:
        starts.append(position + 1)
        position = text.find("\n", position + 1)
    return starts


def parse_page(path: Path, data: bytes) -> Page:
    """A page's <img> tags located in its bytes; PageError when it does not decode."""
    text, codec, bom = decode_page(data)
    scan = _ImageScan()
    scan.feed(text)
    scan.close()
    starts = _line_starts(text)
    images, problems = [], []
    byte_offset, text_offset = len(bom), 0  # walk forward, encoding only the text between tags (linear, not quadratic)
    for line, column, tag_text, attrs in scan.found:
        offset = starts[line - 1] + column
        if not (text.startswith(tag_text, offset) and tag_text[:4].lower() == "<img" and tag_text[4:5] in tuple(HTML_WHITESPACE + "/>")):
            problems.append(f"line {line}: an <img> tag that could not be located exactly; left as it is")
            continue
        byte_offset += len(text[text_offset:offset].encode(codec))
        text_offset = offset
        if data[byte_offset:byte_offset + len(tag_text.encode(codec))] != tag_text.encode(codec):
            problems.append(f"line {line}: an <img> tag whose bytes do not match its text; left as it is")
            continue
        images.append(ImageTag(index=len(images), line=line, start=byte_offset, insert_at=byte_offset + len(tag_text[:4].encode(codec)),
                               attributes=tuple(attrs)))
    return Page(path=path, data=data, encoding=codec, bom=bom, images=tuple(images), base_href=scan.base_href, problems=tuple(problems))


def read_page(path: Path) -> Page:
    """Read and parse one page; PageError (one line) when it cannot be read or decoded."""
    try:
        size = path.stat().st_size
        if size > MAX_PAGE_BYTES:
            raise PageError(f"{size} bytes, more than the {MAX_PAGE_BYTES} a page may have; left as it is")
        data = path.read_bytes()
    except OSError as error:
        raise PageError(f"cannot be read: {error.strerror or error}") from None
    return parse_page(path, data)


# ---- where an image is --------------------------------------------------------------------------------------
def srcset_candidates(srcset: str) -> list[tuple[str, str]]:
    """A srcset as (url, descriptor) pairs, split the way browsers do (a URL may hold commas, as data: URLs do)."""
    candidates, position, length = [], 0, len(srcset)
    while True:
        while position < length and (srcset[position] in HTML_WHITESPACE or srcset[position] == ","):
            position += 1
        if position >= length:
            return candidates
        start = position
        while position < length and srcset[position] not in HTML_WHITESPACE:
            position += 1
        url, descriptor = srcset[start:position], ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            start, depth = position, 0
            while position < length and not (srcset[position] == "," and depth == 0):
                depth += {"(": 1, ")": -1 if depth else 0}.get(srcset[position], 0)
                position += 1
            descriptor = srcset[start:position].strip(HTML_WHITESPACE)
        if url:
            candidates.append((url, descriptor))


def largest_candidate(srcset: str) -> str | None:
    """The srcset URL with the largest width (`800w`), else density (`2x`, no descriptor = 1x), else the first."""
    sizes: dict[str, list[tuple[float, str]]] = {"w": [], "x": []}
    candidates = srcset_candidates(srcset)
    for url, descriptor in candidates:
        match = re.fullmatch(r"(\d+(?:\.\d+)?)([wx])", descriptor.lower()) if descriptor else None
        if match:
            sizes[match.group(2)].append((float(match.group(1)), url))
        elif not descriptor:
            sizes["x"].append((1.0, url))
    for kind in ("w", "x"):
        if sizes[kind]:
            largest = max(size for size, _ in sizes[kind])
            return next(url for size, url in sizes[kind] if size == largest)  # the first of equals, as written
    return candidates[0][0] if candidates else None


def image_source(image: ImageTag) -> str | None:
    """The URL to caption, as written: src, else the largest srcset candidate; None when there is neither."""
    src = image.attribute("src")
    if src is not None and src.strip(HTML_WHITESPACE):
        return src
    srcset = image.attribute("srcset")
    return largest_candidate(srcset) if srcset else None


@dataclass(frozen=True)
class Located:
    """Where an image URL points: kind is "local" (path set), "remote", "outside the site" or "missing"."""

    kind: str
    path: Path | None = None  # the resolved file, for "local"
    reason: str = ""  # one line, for everything else


def _is_remote(url: str) -> str | None:
    """Why a URL is not a file of the site ("https: URL", "data: URL", "//host URL"), or None for a path."""
    parts = urlsplit(url)
    if parts.scheme:
        return f"{parts.scheme.lower()}: URL"
    if parts.netloc or url.startswith("//"):
        return "//host URL"
    return None


def _local_path(url: str, folder: Path, site: Path) -> Path:
    """A path URL as a file path: site-absolute from the site root, relative from `folder`, percent-decoded."""
    path = urlsplit(url).path  # drops ?query and #fragment
    name = os.fsdecode(unquote_to_bytes(path))  # %20 -> space; a non-UTF-8 name comes back as the bytes it was
    return site / name.lstrip("/") if name.startswith("/") else folder / name


def _base_folder(base_href: str | None, page: Path, site: Path) -> Path | str:
    """The folder relative image URLs start from (the page's, or its <base href>'s), or why every URL is remote."""
    href = (base_href or "").strip(HTML_WHITESPACE).replace("\\", "/")
    if not href:
        return page.parent
    remote = _is_remote(href)
    if remote is not None:
        return f"remote (the page's <base href> is a {remote}), not captioned"
    base = _local_path(href, page.parent, site)
    return base if urlsplit(href).path.endswith("/") else base.parent


def locate_image(url: str | None, *, page: Page, site: Path) -> Located:
    """Resolve an image URL of a page to a file inside the site, never following it out of the site."""
    if url is None:
        return Located("missing", reason="no src or srcset")
    url = url.strip(HTML_WHITESPACE).replace("\\", "/")  # browsers read a backslash in a path as a slash
    remote = _is_remote(url)
    if remote is not None:
        return Located("remote", reason=f"remote ({remote}), not captioned")
    folder = _base_folder(page.base_href, page.path, site)
    if isinstance(folder, str):  # a remote <base href> makes site-absolute paths remote too
        return Located("remote", reason=folder)
    if not urlsplit(url).path:
        return Located("missing", reason="the URL names no file")
    try:
        # resolve() follows .. and symbolic links; only where the target is gets checked, the file is not opened
        resolved = _local_path(url, folder, site).resolve()
        root = site.resolve()
    except (OSError, RuntimeError, ValueError) as error:  # a link loop, a NUL byte
        return Located("missing", reason=f"cannot be resolved: {error}")
    if not resolved.is_relative_to(root):
        return Located("outside the site", reason="resolves outside the site; not read")
    if not resolved.is_file():
        return Located("missing", reason="is a folder, not a file" if resolved.is_dir() else "file not found")
    return Located("local", path=resolved)


# ---- writing ------------------------------------------------------------------------------------------------
def clean_alt_text(text: str) -> str:
    """Text fit for an alt attribute: control characters dropped, runs of whitespace made one space."""
    return " ".join(UNFIT_CHARACTERS.sub(" ", text).split())


def alt_attribute(text: str, codec: str) -> bytes:
    """` alt="..."` in the page's encoding: HTML-escaped, characters the encoding lacks as &#NNNN; references."""
    return f' alt="{html.escape(clean_alt_text(text), quote=True)}"'.encode(codec, errors="xmlcharrefreplace")


def patch(page: Page, texts: Mapping[int, str]) -> tuple[bytes, list[tuple[int, int]]]:
    """The page's bytes with an alt attribute inserted into each <img> of `texts` (by index), and the inserted
    spans as (start, end) in the new bytes. Every other byte is the original's."""
    by_index = {image.index: image for image in page.images}
    pieces, spans, previous, grown = [], [], 0, 0
    for index in sorted(texts):
        if index not in by_index:
            raise ValueError(f"{page.path}: no <img> number {index}; the page has {len(page.images)}")
        image = by_index[index]
        if image.has_alt:
            raise ValueError(f"{page.path}: the <img> on line {image.line} already has an alt attribute")
        inserted = alt_attribute(texts[index], page.encoding)
        pieces += [page.data[previous:image.insert_at], inserted]
        spans.append((image.insert_at + grown, image.insert_at + grown + len(inserted)))
        previous, grown = image.insert_at, grown + len(inserted)
    pieces.append(page.data[previous:])
    return b"".join(pieces), spans


def remove_spans(data: bytes, spans: list[tuple[int, int]]) -> bytes:
    """`data` without the given (start, end) byte spans: a patched page gives back its original."""
    pieces, previous = [], 0
    for start, end in sorted(spans):
        pieces.append(data[previous:start])
        previous = end
    pieces.append(data[previous:])
    return b"".join(pieces)


def _write_durably(path: Path, data: bytes) -> None:
    """Write bytes and fsync them, so a rename that follows never exposes a half-written file."""
    with open(path, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())


def _same_owner(path: Path, original: os.stat_result) -> None:
    """Give a new file the original's owner and group where we may (root rewriting a web server's pages)."""
    current = path.stat()
    if (current.st_uid, current.st_gid) != (original.st_uid, original.st_gid) and hasattr(os, "chown"):
        with contextlib.suppress(PermissionError):  # not ours to give away: the file stays the writer's
            os.chown(path, original.st_uid, original.st_gid)


def _write_like(path: Path, data: bytes, original: os.stat_result) -> None:
    _write_durably(path, data)
    _same_owner(path, original)


def _make_backup(backup: Path, data: bytes, original: os.stat_result) -> bool:
    """Write the original beside the page unless a backup is already there (never overwritten); True when made."""
    try:
        # O_EXCL: an existing backup (even a dangling link) is kept, with no window for a race
        descriptor = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    os.close(descriptor)
    try:
        _write_like(backup, data, original)
        os.chmod(backup, stat.S_IMODE(original.st_mode))
    except BaseException:
        backup.unlink(missing_ok=True)
        raise
    return True


def _verify(page: Page, texts: Mapping[int, str], expected: bytes, spans: list[tuple[int, int]]) -> None:
    """Read the written page back: the bytes written, the original without the inserts, and the alt texts re-parsed."""
    written = page.path.read_bytes()
    if written != expected:
        raise PageError("reads back different from what was written")
    if remove_spans(written, spans) != page.data:
        raise PageError("the written page is not the original plus the alt attributes")
    reread = parse_page(page.path, written)
    if len(reread.images) != len(page.images):
        raise PageError(f"reads back with {len(reread.images)} <img> tags instead of {len(page.images)}")
    for index, text in texts.items():
        if reread.images[index].alt != clean_alt_text(text):
            raise PageError(f"the <img> on line {page.images[index].line} reads back without its alt text")


def _read_only(path: Path) -> bool:
    # the write bits too, not only access(): root may write anything, but a page marked read-only is meant to stay
    mode = path.stat().st_mode
    return not os.access(path, os.W_OK) or not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


def write_alt_texts(page: Page, texts: Mapping[int, str]) -> Path | None:
    """Insert the alt texts (by <img> index) into the page, atomically (a temp file beside it, then a rename: a
    hard link to the page keeps the old file), keeping its permission bits and, where allowed, its owner. The
    original is kept as PAGE.bak (an existing backup is never overwritten) and the result is verified by reading
    it back. Returns the backup made, if any. A PageError (one line) leaves the page as it was."""
    if not texts:
        return None
    new, spans = patch(page, texts)
    path = page.path
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    made_backup = False
    try:
        if path.read_bytes() != page.data:
            raise PageError("changed since it was read; run again")
        if _read_only(path):
            raise PageError("read-only; left as it is")
        original = path.stat()
        made_backup = _make_backup(backup, page.data, original)
        atomic_write(path, lambda temp: _write_like(Path(temp), new, original))  # atomic_write keeps the mode bits
    except (OSError, PageError) as error:
        if made_backup:
            backup.unlink(missing_ok=True)  # the page is untouched: leave its folder as it was too
        if isinstance(error, PageError):
            raise
        raise PageError(f"cannot be written: {error.strerror or error}; left as it is") from None
    try:
        _verify(page, texts, new, spans)
    except (OSError, PageError) as error:
        why = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        try:
            atomic_write(path, lambda temp: _write_like(Path(temp), page.data, original))
        except OSError:
            kept = f"it is in {backup.name}" if made_backup else f"{backup.name} holds an older version"
            raise PageError(f"check after writing failed ({why}) and the original could not be put back; {kept}") from None
        raise PageError(f"check after writing failed ({why}); the original was put back") from None
    return backup if made_backup else None


def find_pages(site: Path, *, skip: tuple[Path, ...] = ()) -> list[Path]:
    """The HTML pages under a site folder, sorted; hidden files and folders (.git, our temp files) and links to
    pages (a rename would replace the link with a file) are left out, and so are the paths in `skip`."""
    skipped = {path.resolve() for path in skip}
    pages = []
    for folder, folders, files in os.walk(site):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if name.startswith(".") or not name.lower().endswith(PAGE_SUFFIXES) or path.is_symlink():
                continue
            if path.resolve() not in skipped:
                pages.append(path)
    return pages
