"""The photo library's store: one SQLite file (WAL mode), one row per photo, and an FTS5 index over its words.

A library belongs to one folder tree (its root); photos are keyed by their path relative to it, as raw bytes
(a file name need not be UTF-8), and shown by a readable form of it. `PRAGMA application_id` marks the file
as a captioner library and `PRAGMA user_version` holds the schema version: `Library.open` refuses any other
SQLite file, or a library newer than this code, with a one-line LibraryError, and never recreates a file that
exists. MIGRATIONS[n] takes a library from version n to n + 1, so a library made today opens next year.
"""
from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from captioner.errors import CaptionerError

APPLICATION_ID = 0x43415054  # "CAPT"
LIBRARY_DIR = ".captioner"
LIBRARY_FILE = "library.sqlite"

MIGRATIONS: list[str] = [
    # 0 -> 1: the first schema
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE photos (
        id INTEGER PRIMARY KEY,
        path_key BLOB NOT NULL UNIQUE,      -- the path relative to the root, as the file system's bytes
        path TEXT NOT NULL,                 -- the same, readable (bytes that are not UTF-8 shown as \\xNN)
        sha256 TEXT,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        width INTEGER,
        height INTEGER,
        caption TEXT,
        alternatives TEXT NOT NULL DEFAULT '[]',   -- JSON: [{"text", "score", "log_probability"}]
        confidence REAL,
        doubtful INTEGER NOT NULL DEFAULT 0,
        source TEXT,                        -- decoder | fallback
        recognised TEXT NOT NULL DEFAULT '[]',     -- JSON: [{"word", "probability"}]
        run TEXT,                           -- the run that wrote the caption
        model TEXT,                         -- that run's identity (its weights' size and mtime, and its folder)
        code_commit TEXT,
        captioned_at TEXT,                  -- UTC, ISO 8601
        error TEXT                          -- the one-line error of a file that could not be captioned
    );
    CREATE INDEX photos_sha256 ON photos (sha256);
    CREATE VIRTUAL TABLE photos_fts USING fts5(caption, alternatives, recognised, tokenize = 'porter unicode61');
    """,
    # 1 -> 2: a person's review of a caption (the review view); `caption` then holds the person's text
    """
    ALTER TABLE photos ADD COLUMN review TEXT NOT NULL DEFAULT 'machine';   -- machine | approved | edited
    ALTER TABLE photos ADD COLUMN reviewed_at TEXT;                         -- UTC, ISO 8601
    ALTER TABLE photos ADD COLUMN machine_caption TEXT;                     -- what the model wrote, kept beside a person's
    UPDATE photos SET machine_caption = caption;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class LibraryError(CaptionerError):
    """A library file that cannot be used: not a library, corrupt, too new, locked."""


@dataclass
class Photo:
    """One photo's row."""

    path: str
    size: int
    mtime_ns: int
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    caption: str | None = None
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    confidence: float | None = None
    doubtful: bool = False
    source: str | None = None
    recognised: list[dict[str, Any]] = field(default_factory=list)
    run: str | None = None
    model: str | None = None
    code_commit: str | None = None
    captioned_at: str | None = None
    error: str | None = None
    review: str = "machine"
    reviewed_at: str | None = None
    machine_caption: str | None = None  # the model's own caption (the same as `caption` until a person edits it)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def record(self) -> dict[str, Any]:
        """What exports and `search --json` give: every stored field, and whether a person should check the caption."""
        return {**self.to_dict(), "needs_review": self.needs_review}

    @property
    def reviewed(self) -> bool:
        """A person accepted or wrote the caption: never replaced by the model's."""
        return self.review != "machine"

    @property
    def needs_review(self) -> bool:
        """A doubtful caption no person has looked at: flagged in every report, not written into files unasked."""
        return self.caption is not None and self.doubtful and not self.reviewed


COLUMNS = [name for name in Photo.__dataclass_fields__]
JSON_COLUMNS = {"alternatives", "recognised"}


def display_path(key: bytes) -> str:
    """A path's bytes as text: UTF-8 where they are, \\xNN for the bytes that are not."""
    return key.decode("utf-8", "backslashreplace")


def _photo(row: sqlite3.Row) -> Photo:
    values = {name: row[name] for name in COLUMNS}
    for name in JSON_COLUMNS:
        values[name] = json.loads(values[name])
    values["doubtful"] = bool(values["doubtful"])
    return Photo(**values)


REVIEW_QUEUES = {  # Library.review_queue's choices, as SQL conditions
    "needs-review": "caption IS NOT NULL AND doubtful = 1 AND review = 'machine'",
    "unreviewed": "caption IS NOT NULL AND review = 'machine'",
    "all": "caption IS NOT NULL",
}
RECOGNISED_FLOOR = 0.1  # a recognised word this probable is searchable ("cat" finds "a photo of an animal")


def _fts_text(photo: Photo) -> tuple[str, str, str]:
    return (photo.caption or "", " ".join(item["text"] for item in photo.alternatives),
            " ".join(item["word"] for item in photo.recognised if item["probability"] >= RECOGNISED_FLOOR))


class Library:
    """An open library file. `Library.open(path)` (with create=True for a new one, given its root)."""

    def __init__(self, connection: sqlite3.Connection, path: Path):
        self.connection = connection
        self.path = path
        self.root = Path(self.meta("root"))

    # ---- opening ---------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, *, create: bool = False, root: str | Path | None = None) -> Library:
        """Open a library file; with create=True make it (and its folder) when it does not exist yet, for `root`."""
        path = Path(path)
        # an empty file holds nothing to lose (an index killed before the schema was written leaves one)
        exists = path.exists() and not (path.is_file() and path.stat().st_size == 0)
        if not exists and not create:
            raise LibraryError(f"{path}: no library here; `captioner index PHOTOS_DIR` makes one")
        if path.is_dir():
            raise LibraryError(f"{path}: is a folder, not a library file")
        if not exists:
            if root is None:
                raise LibraryError(f"{path}: a new library needs the root folder it indexes")
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            connection = sqlite3.connect(path, timeout=30, isolation_level=None)  # explicit transactions only
            connection.row_factory = sqlite3.Row
            application_id = connection.execute("PRAGMA application_id").fetchone()[0]
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as error:
            raise LibraryError(f"{path}: not a captioner library ({error})") from None
        if exists and (application_id != APPLICATION_ID or (tables and not version)):
            connection.close()
            raise LibraryError(f"{path}: not a captioner library (another SQLite file); left untouched")
        if exists and application_id == APPLICATION_ID and version > SCHEMA_VERSION:
            connection.close()
            raise LibraryError(f"{path}: made by a newer captioner (schema {version}, this one reads up to {SCHEMA_VERSION})")
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")  # WAL: a crash loses at most the last transactions, never the file
            connection.execute("PRAGMA foreign_keys = ON")
            cls._migrate(connection, version)
            if not exists:
                with _transaction(connection):
                    connection.execute("INSERT INTO meta VALUES ('root', ?)", (str(Path(root).resolve()),))
            connection.execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError as error:
            connection.close()
            raise LibraryError(f"{path}: corrupt library ({error}); restore it from a backup or index into a new file") from None
        return cls(connection, path)

    @staticmethod
    def _migrate(connection: sqlite3.Connection, version: int) -> None:
        for number in range(version, SCHEMA_VERSION):
            with _transaction(connection):
                for statement in _statements(MIGRATIONS[number]):
                    connection.execute(statement)
                connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                connection.execute(f"PRAGMA user_version = {number + 1}")

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- the Python API's two verbs ------------------------------------------------------------------
    def index(self, captioner: Any, **options: Any) -> Any:
        """Caption what is new or changed under the library's root (captioner.library.indexer.index)."""
        from captioner.library.indexer import index

        return index(self, captioner, **options)

    def search(self, text: str, *, limit: int = 20) -> list[Any]:
        """The photos that match the words of `text`, best first (captioner.library.search.search)."""
        from captioner.library.search import search

        return search(self, text, limit=limit)

    # ---- meta ----------------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with _transaction(self.connection):
            self.connection.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                                    (key, value))

    # ---- rows ----------------------------------------------------------------------------------------
    def count(self) -> int:
        return self.connection.execute("SELECT count(*) FROM photos").fetchone()[0]

    def photos(self) -> Iterator[Photo]:
        """Every photo, by path; streamed, so memory stays flat."""
        for _, photo in self.items():
            yield photo

    def items(self) -> Iterator[tuple[bytes, Photo]]:
        """Every photo with its key (the file's path relative to the root, as bytes), by path; streamed."""
        for row in self.connection.execute(f"SELECT path_key, {', '.join(COLUMNS)} FROM photos ORDER BY path"):
            yield bytes(row["path_key"]), _photo(row)

    def file_path(self, key: bytes) -> Path:
        """Where a photo's file is: its key's bytes under the root (a name that is not UTF-8 included)."""
        return self.root / os.fsdecode(key)

    def update_file(self, key: bytes, *, size: int, mtime_ns: int, sha256: str) -> None:
        """The photo's file was rewritten on purpose (its caption embedded): the row follows, so the next `index`
        does not take it for a changed photo."""
        with _transaction(self.connection):
            self.connection.execute("UPDATE photos SET size = ?, mtime_ns = ?, sha256 = ? WHERE path_key = ?",
                                    (size, mtime_ns, sha256, key))

    def get(self, key: bytes) -> Photo | None:
        row = self.connection.execute(f"SELECT {', '.join(COLUMNS)} FROM photos WHERE path_key = ?", (key,)).fetchone()
        return None if row is None else _photo(row)

    def fingerprints(self) -> dict[bytes, tuple[int, int, str | None, bool]]:
        """path key -> (size, mtime_ns, sha256, done: captioned or failed) of every row, for a rescan."""
        rows = self.connection.execute("SELECT path_key, size, mtime_ns, sha256, caption IS NOT NULL OR error IS NOT NULL FROM photos")
        return {bytes(row[0]): (row[1], row[2], row[3], bool(row[4])) for row in rows}

    def write(self, rows: Sequence[tuple[bytes, Photo]]) -> None:
        """Insert or replace these photos, and their search words, in one transaction. A caption a person accepted or
        wrote stays (`--recaption` included): the model's new one is kept beside it as machine_caption."""
        with _transaction(self.connection):
            self._write(rows)

    def _write(self, rows: Sequence[tuple[bytes, Photo]]) -> None:
        """Insert or replace rows inside the caller's transaction."""
        for key, photo in rows:
            old = self.connection.execute("SELECT id, review, reviewed_at, caption FROM photos WHERE path_key = ?", (key,)).fetchone()
            if photo.machine_caption is None:
                photo = replace(photo, machine_caption=photo.caption)
            if old is not None and old["review"] != "machine" and not photo.reviewed:
                photo = replace(photo, caption=old["caption"], review=old["review"], reviewed_at=old["reviewed_at"])
            values = photo.to_dict()
            for name in JSON_COLUMNS:
                values[name] = json.dumps(values[name])
            values["doubtful"] = int(values["doubtful"])
            if old is not None:
                self.connection.execute("DELETE FROM photos_fts WHERE rowid = ?", (old[0],))
                assignments = ", ".join(f"{name} = :{name}" for name in COLUMNS)
                self.connection.execute(f"UPDATE photos SET {assignments} WHERE id = :id", {**values, "id": old[0]})
                rowid = old[0]
            else:
                names = ", ".join(["path_key", *COLUMNS])
                marks = ", ".join([":path_key", *(f":{name}" for name in COLUMNS)])
                rowid = self.connection.execute(f"INSERT INTO photos ({names}) VALUES ({marks})", {**values, "path_key": key}).lastrowid
            self.connection.execute("INSERT INTO photos_fts (rowid, caption, alternatives, recognised) VALUES (?, ?, ?, ?)",
                                    (rowid, *_fts_text(photo)))

    def set_review(self, key: bytes, text: str, *, edited: bool) -> Photo:
        """A person's verdict on a photo's caption: `text` accepted (the model's caption or one of its alternatives,
        edited=False) or written (edited=True); it then stands against any later recaption."""
        text = " ".join(text.split())
        if not text:
            raise LibraryError("a caption cannot be empty")
        with _transaction(self.connection):  # read and write as one: a recaption cannot land in between
            photo = self.get(key)
            if photo is None:
                raise LibraryError(f"{display_path(key)}: not in the library")
            offered = {photo.machine_caption, *(item["text"] for item in photo.alternatives)}
            review = "edited" if edited or text not in offered else "approved"
            when = datetime.now(timezone.utc).isoformat(timespec="seconds")
            updated = replace(photo, caption=text, review=review, reviewed_at=when)
            self._write([(key, updated)])
        return updated

    def review_queue(self, which: str, *, offset: int = 0, limit: int = 20) -> tuple[list[Photo], int]:
        """Captioned photos to review, doubtful first, then the rest, each by path: those of [offset, offset + limit)
        and how many there are. which: "needs-review" (doubtful, no person has looked), "unreviewed", or "all"."""
        condition = REVIEW_QUEUES[which]
        total = self.connection.execute(f"SELECT count(*) FROM photos WHERE {condition}").fetchone()[0]
        rows = self.connection.execute(f"SELECT {', '.join(COLUMNS)} FROM photos WHERE {condition} "
                                       "ORDER BY doubtful DESC, path LIMIT ? OFFSET ?", (limit, offset))
        return [_photo(row) for row in rows], total

    def move(self, old_key: bytes, new_key: bytes, *, size: int, mtime_ns: int) -> None:
        """A photo renamed or moved inside the root: its row, caption included, follows it."""
        with _transaction(self.connection):
            if new_key != old_key:  # a stale row where the photo now is gives way
                self._delete(new_key)
            self.connection.execute("UPDATE photos SET path_key = ?, path = ?, size = ?, mtime_ns = ? WHERE path_key = ?",
                                    (new_key, display_path(new_key), size, mtime_ns, old_key))

    def remove(self, keys: Sequence[bytes]) -> None:
        with _transaction(self.connection):
            for key in keys:
                self._delete(key)

    def _delete(self, key: bytes) -> None:
        row = self.connection.execute("SELECT id FROM photos WHERE path_key = ?", (key,)).fetchone()
        if row is not None:
            self.connection.execute("DELETE FROM photos_fts WHERE rowid = ?", (row[0],))
            self.connection.execute("DELETE FROM photos WHERE id = ?", (row[0],))


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error: a batch is in the file whole or not at all."""

    def __init__(self, connection: sqlite3.Connection):
        self.connection = connection

    def __enter__(self) -> None:
        self.connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:
            self.connection.execute("COMMIT")
        elif self.connection.in_transaction:  # SQLite itself rolls back after some errors (a full disk)
            self.connection.execute("ROLLBACK")


def _statements(script: str) -> list[str]:
    """A migration script's statements (sqlite3 runs one per execute; executescript would commit on its own)."""
    statements, current = [], ""
    for line in script.splitlines():
        line = line.split("--", 1)[0]
        current += line + "\n"
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return [statement for statement in statements if statement.rstrip(";").strip()]
