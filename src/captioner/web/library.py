"""The library view (`captioner serve RUN --library FILE`): find photos of an indexed library by words, in the browser.

    GET /library                          the page (static/library.html), also when no library is served: it says so
    GET /api/library                      the served library's folder name and photo count
    GET /api/library/search?q=&limit=     photos whose captions match the words, best first
    GET /api/library/photo/{path}         a photo's file
    GET /api/library/thumbnail/{path}     a JPEG no larger than size x size, made once and cached beside the library
    (the review view, /library/review and its /api/library/review routes, is review.py)

Without a library every /api/library route answers 404 JSON. A file is served only when its path is a row of the
library and, with every symlink resolved, it lies inside the library's root: a path with `..`, `.` or empty parts,
an absolute one, a backslash or a control character is refused (400) before any lookup, whatever the URL encoding;
a row whose file resolves outside the root (a symlink) is refused (403); a row whose file is gone is 404.

A file name that is not UTF-8 is shown (display_path) with its odd bytes as `\\xNN`; a URL names it the same way
(`%5Cxe9`): `\\x80`..`\\xff` turn back into those raw bytes, only where the name shows them so (one URL per
file), and any other backslash is still a 400. The file is then found from the key's bytes, not the text.

SQLite connections are not thread-safe and the routes run in FastAPI's thread pool: one query-only connection is
shared under a lock (held for the query only), rather than opening (and checking) the file on every request. A
write (a person's review) opens its own short-lived connection under a second lock (`writing()`), so it never goes
through the query-only one, and a search is not held up while a write waits for `captioner index` to commit.
"""
import hashlib
import logging
import math
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from captioner.errors import ImageError
from captioner.io import atomic_write
from captioner.library.search import search
from captioner.library.store import LIBRARY_DIR, Library, Photo, display_path
from captioner.library.thumbnails import jpeg_thumbnail
from captioner.web.errors import ApiError
from captioner.web.page import STATIC
from captioner.web.schemas import ErrorBody

log = logging.getLogger(__name__)

router = APIRouter()

DEFAULT_LIMIT, MAX_LIMIT = 40, 100
MAX_QUERY_CHARS = 1000
DEFAULT_THUMBNAIL, MIN_THUMBNAIL, MAX_THUMBNAIL = 256, 64, 512
THUMBNAIL_CACHE = "private, max-age=86400"  # its URL changes with the photo's content (the v parameter)
PHOTO_CACHE = "private, no-cache"  # same URL after a re-index: revalidate (ETag, Last-Modified)
# only image types, whatever a file is named: nothing served from here can run as a page of this origin
MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".bmp": "image/bmp", ".gif": "image/gif",
               ".webp": "image/webp", ".tif": "image/tiff", ".tiff": "image/tiff"}
NO_LIBRARY = "this server has no photo library; start it with `captioner serve RUN --library FILE`"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_UNSAFE = re.compile(r"[\\\x00-\x1f\x7f]")  # never in a key the web can name, but for the escapes below
_BYTE_ESCAPE = re.compile(r"\\x([89a-f][0-9a-f])")  # a file-name byte that is not UTF-8, as display_path shows it


# --- the served library --------------------------------------------------------------------------------
def thumbnail_folder(library_file: Path) -> Path:
    """Where thumbnails are cached: in a .captioner folder, which the indexer never scans, so a library file kept
    inside its own photo tree does not get its thumbnails indexed as photos."""
    folder = library_file.resolve().parent
    return folder / "thumbnails" if folder.name == LIBRARY_DIR else folder / LIBRARY_DIR / "thumbnails"


class ServedLibrary:
    """The library a server shows: checked when made (a bad file is a one-line LibraryError at startup), then read
    through one query-only connection under a lock."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with Library.open(self.path) as library:  # refuses a missing, foreign, corrupt or too new file
            self.root = library.root.resolve()
            self.photos = library.count()
        if not self.root.is_dir():
            log.warning("%s: its photo folder %s is not there; search works, photos will not", self.path, self.root)
        self.thumbnails = thumbnail_folder(self.path)
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()  # one write at a time; reads go on meanwhile (WAL)
        # thumbnails decode whole photos: a few at a time bounds memory when a page asks for 40 at once
        self.thumbnailing = threading.BoundedSemaphore(max(1, min(4, os.cpu_count() or 1)))
        self.cache_warned = False
        self._library: Library | None = None
        self.write_failed = False

    def _connect(self, *, query_only: bool = True) -> Library:
        # mode=rw: a library file deleted since startup is an error, never a new empty file
        connection = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=rw", uri=True, timeout=30, isolation_level=None,
                                     check_same_thread=False)
        try:
            connection.row_factory = sqlite3.Row
            if query_only:
                connection.execute("PRAGMA query_only = ON")  # searches only read; `captioner index` may write beside it
            else:
                connection.execute("PRAGMA synchronous = NORMAL")  # as Library.open: WAL, a crash loses no file
            return Library(connection, self.path)
        except BaseException:
            connection.close()
            raise

    @contextmanager
    def reading(self) -> Iterator[Library]:
        """The open library, for one query; a library that broke after startup is a 503, not a traceback."""
        with self.lock:
            try:
                if self._library is None:
                    self._library = self._connect()
                yield self._library
            except sqlite3.Error as error:
                self._drop()  # the next request reconnects (the file may have been restored)
                raise ApiError(503, f"library {self.path.name}: {error}") from None

    @contextmanager
    def writing(self) -> Iterator[Library]:
        """The library opened for writing, for one short change (a person's review): a connection of its own, opened
        now and closed after, so a file made read-only or replaced since startup is found out (503, one line), never
        a traceback. SQLite's 30 s busy timeout lets a write wait for a batch of `captioner index` to commit."""
        with self.write_lock:
            if self.write_failed:
                # SQLite shares one WAL index per file among a process's connections: one opened while the file was
                # read-only keeps it read-only for every later one. After a failed write, the reader reopens too.
                with self.lock:
                    self._drop()
            library = None
            try:
                library = self._connect(query_only=False)
                yield library
                self.write_failed = False
            except sqlite3.Error as error:
                self.write_failed = True
                raise ApiError(503, f"library {self.path.name}: cannot save now ({error})") from None
            finally:
                if library is not None:
                    library.close()

    def _drop(self) -> None:
        if self._library is not None:
            self._library.close()
            self._library = None

    def close(self) -> None:
        with self.lock:
            self._drop()


def served_library(request: Request) -> ServedLibrary:
    """The dependency that gives a route the served library, or answers 404 when there is none."""
    library = getattr(request.app.state, "library", None)
    if library is None:
        raise ApiError(404, NO_LIBRARY)
    return library


Served = Annotated[ServedLibrary, Depends(served_library)]


# --- schemas ---------------------------------------------------------------------------------------------
class LibraryInfo(BaseModel):
    name: str = Field(description="the name of the photo folder the library indexes")
    photos: int = Field(description="how many photos it holds (captioned or not)")


class LibraryPhoto(BaseModel):
    path: str = Field(description="the photo's path relative to the library's folder")
    caption: str | None
    confidence: float | None = Field(description="how likely the caption's main subject is right, in [0, 1]; null if unknown")
    doubtful: bool = Field(description="check the caption before trusting it")
    source: str | None = Field(description="decoder, or fallback (the caption says only what the encoder recognised)")
    width: int | None
    height: int | None
    review: str = Field(description="machine (no person has looked at it), approved (a person accepted it) or edited "
                                    "(a person wrote it)")
    reviewed_at: str | None = Field(description="when a person reviewed it (UTC, ISO 8601)")
    needs_review: bool = Field(description="doubtful and not reviewed by a person")
    photo_url: str | None = Field(description="the photo's file; null when its name cannot be named by a URL")
    thumbnail_url: str | None = Field(description=f"a JPEG at most {DEFAULT_THUMBNAIL} px on a side (size=: {MIN_THUMBNAIL}.."
                                                  f"{MAX_THUMBNAIL})")


class LibrarySearch(BaseModel):
    query: str
    results: list[LibraryPhoto]


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "not a path inside the library (.., absolute, backslash, control character)"},
    403: {"model": ErrorBody, "description": "the file resolves outside the library's folder (a symlink)"},
    404: {"model": ErrorBody, "description": "no library served, a path not in it, or its file is gone"},
    422: {"model": ErrorBody, "description": "invalid parameter, or a file no thumbnail can be made of"},
    503: {"model": ErrorBody, "description": "the library file cannot be read now"},
}


# --- helpers ---------------------------------------------------------------------------------------------
def finite(value: Any) -> float | None:
    """A number JSON can carry, or None (a NaN or an infinity is not one)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def addressable(path: str) -> bool:
    """Whether a URL can name this row's display path (library_key takes it back)."""
    try:
        library_key(path)
    except ApiError:
        return False
    return True


def photo_record(photo: Photo) -> dict[str, Any]:
    """A row in the API's shape, with the URLs of its file and thumbnail."""
    named = addressable(photo.path)
    quoted = quote(photo.path, safe="/")  # a \xNN escape becomes %5CxNN
    version = photo.sha256[:16] if photo.sha256 else str(photo.mtime_ns)
    return {
        "path": photo.path, "caption": photo.caption, "confidence": finite(photo.confidence), "doubtful": photo.doubtful,
        "source": photo.source, "width": photo.width, "height": photo.height,
        "review": photo.review, "reviewed_at": photo.reviewed_at, "needs_review": photo.needs_review,
        "photo_url": f"/api/library/photo/{quoted}" if named else None,
        "thumbnail_url": f"/api/library/thumbnail/{quoted}?size={DEFAULT_THUMBNAIL}&v={quote(version)}" if named else None,
    }


def library_key(path: str) -> bytes:
    """A URL's photo path -> the library key it names; 400 for anything a key (a relative path) never looks like.
    `\\x80`..`\\xff` stand for file-name bytes that are not UTF-8, and only where display_path writes them so."""
    if not path:
        raise ApiError(400, "no photo path")
    if _UNSAFE.search(_BYTE_ESCAPE.sub("", path)):
        raise ApiError(400, "a photo path cannot hold a control character or a backslash (but for \\x80..\\xff, a file-name "
                            "byte that is not UTF-8)")
    if path.startswith("/") or any(part in ("", ".", "..") for part in path.split("/")):
        raise ApiError(400, "a photo path is relative to the library's folder, without '..', '.' or empty parts")
    pieces = _BYTE_ESCAPE.split(path)  # text, byte, text, byte, ..., text
    try:
        key = b"".join(bytes([int(piece, 16)]) if number % 2 else piece.encode() for number, piece in enumerate(pieces))
    except UnicodeEncodeError:  # a lone surrogate
        raise ApiError(400, "a photo path must be UTF-8 text") from None
    if display_path(key) != path:  # \xc3\xa9 is é: one name per file, the one the library shows
        raise ApiError(400, "a photo path writes \\xNN only for a byte that is not UTF-8 there")
    return key


def row_of(library: ServedLibrary, path: str) -> tuple[bytes, Photo]:
    """The key a URL path names and its row; 400 for a path no key looks like, 404 for one not in the library."""
    key = library_key(path)
    with library.reading() as opened:
        photo = opened.get(key)
    if photo is None:
        raise ApiError(404, f"{path}: not in the library")
    return key, photo


def locate(library: ServedLibrary, path: str) -> tuple[Photo, Path]:
    """The row a URL path names and its file's real path, checked to be a file inside the library's root."""
    key, photo = row_of(library, path)
    try:
        real = (library.root / os.fsdecode(key)).resolve(strict=True)  # the file's own bytes, not the display text
    except FileNotFoundError:
        raise ApiError(404, f"{path}: the file is no longer there") from None
    except (OSError, RuntimeError) as error:  # a symlink loop, a folder we may not read
        raise ApiError(404, f"{path}: cannot reach the file ({error.__class__.__name__})") from None
    if not real.is_relative_to(library.root):
        raise ApiError(403, f"{path}: the file lies outside the library's folder")
    if not real.is_file():  # a folder, a FIFO: nothing to send (and a FIFO would hang the response)
        raise ApiError(404, f"{path}: not a file")
    return photo, real


def thumbnail_key(photo: Photo, real: Path) -> str:
    """The cache name's hash: the indexer's content hash while the file is as indexed (identical photos share one),
    else one of what the file is now, so a photo changed since its indexing never shows a stale thumbnail."""
    info = real.stat()
    if photo.sha256 and _SHA256.fullmatch(photo.sha256) and (info.st_size, info.st_mtime_ns) == (photo.size, photo.mtime_ns):
        return photo.sha256
    return hashlib.sha256(f"{real}\0{info.st_size}\0{info.st_mtime_ns}".encode(errors="surrogateescape")).hexdigest()


def printable(message: str, real: Path, path: str) -> str:
    """An error message fit for JSON: the file's real path (which may hold undecodable bytes) as the library shows it."""
    message = message.replace(str(real), path)
    try:
        return message.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name made
        return message.encode("utf-8", "backslashreplace").decode()


def render_thumbnail(path: str, real: Path, size: int) -> bytes:
    """The photo as a JPEG at most size x size (upright, never enlarged); 422 for a file that cannot be read."""
    try:
        data, _, _ = jpeg_thumbnail(real, size)
    except ImageError as error:
        raise ApiError(422, f"{path}: no thumbnail: {printable(str(error).removeprefix(f'{real}: '), real, path)}") from None
    except (OSError, ValueError) as error:  # Pillow fails in many ways while shrinking or encoding
        raise ApiError(422, f"{path}: no thumbnail: {type(error).__name__}: {printable(str(error), real, path)}") from None
    return data


def thumbnail_response(library: ServedLibrary, path: str, photo: Photo, real: Path, size: int) -> Response:
    """The cached thumbnail, made (and written atomically) on first request; served from memory if the cache is read-only."""
    cached = library.thumbnails / f"{thumbnail_key(photo, real)}-{size}.jpg"
    headers = {"cache-control": THUMBNAIL_CACHE}
    if not cached.is_file():
        with library.thumbnailing:
            if not cached.is_file():  # another request may have made it while this one waited
                data = render_thumbnail(path, real, size)
                try:
                    atomic_write(cached, lambda temp: Path(temp).write_bytes(data))
                except OSError as error:
                    if not library.cache_warned:
                        log.warning("cannot cache thumbnails in %s (%s); making them on every request", library.thumbnails, error)
                        library.cache_warned = True
                    return Response(data, media_type="image/jpeg", headers=headers)
    return FileResponse(cached, media_type="image/jpeg", headers=headers)


# --- routes ------------------------------------------------------------------------------------------------
@router.get("/library", include_in_schema=False)
async def library_page() -> FileResponse:
    """The page; it asks /api/library whether a library is served."""
    return FileResponse(STATIC / "library.html")


@router.get("/api/library", response_model=LibraryInfo, responses={404: ERRORS[404], 503: ERRORS[503]})
def library_info(library: Served) -> dict[str, Any]:
    """Which library is served, and how many photos it holds."""
    with library.reading() as opened:
        count = opened.count()
    return {"name": library.root.name, "photos": count}


@router.get("/api/library/search", response_model=LibrarySearch, responses={404: ERRORS[404], 503: ERRORS[503]})
def search_library(
    library: Served,
    q: Annotated[str, Query(max_length=MAX_QUERY_CHARS, description="any text; its words are matched (no operators)")] = "",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> dict[str, Any]:
    """The photos whose captions (or alternatives, or recognised words) match the words of q, best first."""
    with library.reading() as opened:
        hits = search(opened, q, limit=limit)
    return {"query": q, "results": [photo_record(hit.photo) for hit in hits]}


@router.get("/api/library/photo/{path:path}", response_class=FileResponse, responses=ERRORS)
def library_photo(library: Served, path: str) -> FileResponse:
    """A photo's file, as it is on disk."""
    _, real = locate(library, path)
    media_type = MEDIA_TYPES.get(real.suffix.lower(), "application/octet-stream")
    return FileResponse(real, media_type=media_type, headers={"cache-control": PHOTO_CACHE})


@router.get("/api/library/thumbnail/{path:path}", response_class=Response, responses=ERRORS)
def library_thumbnail(
    library: Served,
    path: str,
    size: Annotated[int, Query(ge=MIN_THUMBNAIL, le=MAX_THUMBNAIL, description="the longest side, in pixels")] = DEFAULT_THUMBNAIL,
) -> Response:
    """A JPEG thumbnail of a photo, at most size x size pixels."""
    photo, real = locate(library, path)
    return thumbnail_response(library, path, photo, real, size)
