"""Caption a folder tree into its library: what is new or changed, once; resumable after any kill.

A scan lists the tree's image files (symlinks are not followed, so a link loop cannot trap it; the library's
own folder is skipped; an unreadable folder is reported and skipped) and compares each with its row:
- same path, same size and mtime, already captioned (or failed): unchanged, never recaptioned;
- same path, another size or mtime: changed, captioned again;
- a new path whose content hash is that of a row whose file is gone: moved or renamed, the row follows it;
- a row whose file is gone and did not move: removed.
New and changed photos are captioned in batches, and each batch is written in one transaction as soon as it is
done, so a kill (SIGKILL included) loses at most the batch in flight and a rerun captions only what is missing.
The next batches' files are read, decoded (big JPEGs at a reduced scale) and resized in worker processes
(captioner.library.reading) while the model works on the current one, so only encoder-sized pixels are held,
whatever the photos' size. One `index` at a time: a second one on the same library gets a one-line LibraryError.
"""
from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from captioner.data.images import IMAGE_SUFFIXES
from captioner.encoders import normalise
from captioner.inference import Caption, Captioner
from captioner.library.reading import DEFAULT_WORKERS, BatchReader, Found, Loaded, file_sha256
from captioner.library.store import LIBRARY_DIR, Library, LibraryError, Photo, display_path

SUFFIXES = {suffix.encode() for suffix in IMAGE_SUFFIXES}


@dataclass
class IndexSummary:
    captioned: int = 0
    unchanged: int = 0
    moved: int = 0
    failed: int = 0
    removed: int = 0
    skipped_folders: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.captioned / self.seconds if self.seconds and self.captioned else 0.0
        skipped = f", {len(self.skipped_folders)} unreadable folders skipped" if self.skipped_folders else ""
        return (f"{self.captioned} captioned ({rate:.1f} photos/s), {self.unchanged} unchanged, {self.moved} moved, "
                f"{self.failed} failed, {self.removed} removed{skipped}")


def scan(root: Path, on_error: Callable[[str], None]) -> Iterator[Found]:
    """The image files under root, as bytes paths (names need not be UTF-8), the library folder left out."""
    base = os.fsencode(root.resolve())
    skip = LIBRARY_DIR.encode()

    def report(error: OSError) -> None:
        on_error(f"{display_path(os.fsencode(error.filename or b'?'))}: {error.strerror or error}")

    for folder, folders, files in os.walk(base, onerror=report, followlinks=False):
        folders[:] = sorted(name for name in folders if name != skip)
        for name in sorted(files):
            if os.path.splitext(name)[1].lower() not in SUFFIXES:
                continue
            path = os.path.join(folder, name)
            try:
                info = os.lstat(path)
            except OSError as error:  # deleted between the listing and now
                report(error)
                continue
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            yield Found(os.path.relpath(path, base), path, info.st_size, info.st_mtime_ns)


def run_identity(run_dir: Path) -> str:
    """Which model writes the captions: the run folder and its weights' size and mtime."""
    try:
        info = (run_dir / "model.safetensors").stat()
    except OSError:
        raise LibraryError(f"{run_dir}: no trained run here (model.safetensors is missing)") from None
    return f"{run_dir.resolve()}:{info.st_size}:{info.st_mtime_ns}"


def _photo(loaded: Loaded, caption: Caption | None, *, run: str, model: str, commit: str | None, when: str) -> Photo:
    found = loaded.found
    photo = Photo(path=display_path(found.key), size=found.size, mtime_ns=found.mtime_ns, sha256=loaded.sha256,
                  run=run, model=model, code_commit=commit, captioned_at=when, error=loaded.error)
    if loaded.size is not None:
        photo.width, photo.height = loaded.size
    if caption is not None:
        photo.caption = caption.text
        photo.alternatives = [{"text": other.text, "score": other.score, "log_probability": other.log_probability}
                              for other in caption.alternatives]
        photo.confidence, photo.doubtful, photo.source = caption.confidence, caption.doubtful, caption.source
        photo.recognised = caption.recognised
    return photo


class IndexLock:
    """An exclusive lock beside the library file, held while one `index` runs; released by the kernel on any exit."""

    def __init__(self, library_path: Path):
        self.path = library_path.with_name(library_path.name + ".lock")
        self.handle = None

    def __enter__(self) -> IndexLock:
        self.handle = open(self.path, "a")  # noqa: SIM115 - held until __exit__
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise LibraryError(f"{self.path.with_suffix('')}: another `captioner index` is working on this library; "
                               "wait for it to finish") from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.handle is not None:
            self.handle.close()


def index(library: Library, captioner: Captioner | str | Path, *, batch_size: int = 16, recaption: bool = False,
          workers: int = DEFAULT_WORKERS, progress: bool = True, warn: Callable[[str], None] | None = None,
          **options) -> IndexSummary:
    """Bring the library up to date with its root folder (see the module docstring); `options` go to decoding.
    `captioner` may be a run folder: it is then loaded only if something needs captioning. `workers` processes
    read the photos (0: a thread of this process)."""
    from tqdm import tqdm

    from captioner.provenance import provenance

    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    started = time.perf_counter()
    summary = IndexSummary()
    run_dir = Path(captioner) if isinstance(captioner, (str, Path)) else captioner.run_dir
    model = run_identity(run_dir)
    previous = library.meta("model")
    if previous is not None and previous != model and not recaption:
        raise LibraryError(f"{library.path}: captioned by another model ({previous.split(':')[0]}, as it was then); pass "
                           f"--recaption to caption every photo again with {run_dir}")
    with IndexLock(library.path):
        known = library.fingerprints()
        pending: list[Found] = []
        seen: set[bytes] = set()

        def skipped(message: str) -> None:
            summary.skipped_folders.append(message)
            warn(message)

        new: list[Found] = []
        for found in scan(library.root, skipped):
            seen.add(found.key)
            old = known.get(found.key)
            if old is not None and old[:2] == (found.size, found.mtime_ns) and old[3] and not recaption:
                summary.unchanged += 1
            elif old is None:
                new.append(found)
            else:
                pending.append(found)
        gone = {key: value for key, value in known.items() if key not in seen}
        # a new path with the content of a vanished row: the photo moved, its caption follows it
        by_hash = {value[2]: key for key, value in gone.items() if value[2] and value[3]}
        for found in new:
            sha256 = file_sha256(found.path) if by_hash and not recaption else None
            if sha256 is not None and sha256 in by_hash:
                old_key = by_hash.pop(sha256)
                library.move(old_key, found.key, size=found.size, mtime_ns=found.mtime_ns)
                gone.pop(old_key)
                summary.moved += 1
            else:
                pending.append(found)
        if gone:
            library.remove(list(gone))
            summary.removed = len(gone)
        library.set_meta("model", model)
        commit = provenance().get("git_commit") if pending else None  # a second and more: only when there is work
        run = str(run_dir)
        if pending and not isinstance(captioner, Captioner):
            captioner = Captioner.load(run_dir)
        bar = tqdm(total=len(pending), unit="photo", desc="index", disable=not progress, smoothing=0.1)
        batches = [pending[start : start + batch_size] for start in range(0, len(pending), batch_size)]
        spec = captioner.encoder.spec if pending else None  # no run is loaded when nothing needs captioning
        for loaded in BatchReader(batches, spec.input_size if spec else 0, workers=workers, warn=warn):
            good = [item for item in loaded if item.pixels is not None]
            captions: dict[int, Caption] = {}
            if good:
                pixels = torch.stack([normalise(item.pixels, spec) for item in good])  # (batch, 3, size, size)
                views = captioner.encode_pixels(pixels, flip_ensemble=options.get("flip_ensemble"))
                decoded = captioner.decode(*views, photos=[os.fsdecode(item.found.path) for item in good], **options)
                captions = {id(item): caption for item, caption in zip(good, decoded, strict=True)}
            when = datetime.now(timezone.utc).isoformat(timespec="seconds")
            rows = []
            for item in loaded:
                rows.append((item.found.key, _photo(item, captions.get(id(item)), run=run, model=model, commit=commit, when=when)))
                if item.error is not None:
                    summary.failed += 1
                    warn(item.error)
                else:
                    summary.captioned += 1
            library.write(rows)  # the batch is in the file, whole, before the next one starts
            bar.update(len(loaded))
        bar.close()
    summary.seconds = time.perf_counter() - started
    return summary
