"""Reading photos for the indexer: the bytes once (for the content hash and the image), decoded (big JPEGs at a
reduced scale) and resized to the encoder's input. Nothing here imports torch, so worker processes that do it
start fast and small; the indexer normalises the pixels and runs the model."""
from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import select
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from captioner.data.images import load_image, square_pixels
from captioner.errors import ImageError
from captioner.library.store import LibraryError, display_path

DEFAULT_WORKERS = 1  # photo-reading processes beside the model (docs/experiments.md, section 11)


@dataclass
class Found:
    key: bytes  # the path relative to the root, as bytes
    path: bytes  # the absolute path
    size: int
    mtime_ns: int


@dataclass
class Loaded:
    found: Found
    pixels: np.ndarray | None  # (size, size, 3) uint8, the encoder's input before normalising; None for a file that failed
    size: tuple[int, int] | None  # the photo's width and height as stored
    sha256: str | None
    error: str | None


def file_sha256(path: bytes) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load(found: Found, input_size: int) -> Loaded:
    """Read one photo for an encoder of `input_size` pixels; a bad file becomes its one-line error."""
    try:
        data = Path(os.fsdecode(found.path)).read_bytes()
    except OSError as error:
        return Loaded(found, None, None, None, f"{display_path(found.key)}: cannot read ({error.strerror or error})")
    sha256 = hashlib.sha256(data).hexdigest()
    name = display_path(found.key)
    try:
        with Image.open(io.BytesIO(data)) as probe:
            size = probe.size
        image = load_image(data, draft=input_size)
        return Loaded(found, square_pixels(image, input_size), size, sha256, None)
    except ImageError as error:
        return Loaded(found, None, None, sha256, str(error).replace(f"<{len(data)} bytes>", name, 1))
    except Exception as error:  # never let one odd file stop the job (Image.open's own errors included)
        try:
            load_image(data)  # the loader's one-line wording for what is wrong with the file
        except ImageError as wording:
            return Loaded(found, None, None, sha256, str(wording).replace(f"<{len(data)} bytes>", name, 1))
        except Exception:  # noqa: BLE001 - the first error is the one to report
            pass
        return Loaded(found, None, None, sha256, f"{name}: {type(error).__name__}: {error}")


LoadOne = Callable[[Found, int], Loaded]


def load_batch(batch: list[Found], input_size: int, load_one: LoadOne | None = None) -> list[Loaded]:
    """One batch, in order: the unit of work a reading worker gets."""
    load_one = load_one or load  # looked up when called, so a test may replace `load`
    return [load_one(found, input_size) for found in batch]


class BatchReader:
    """The batches' photos read ahead of the model, in order: by `workers` processes, or by one thread of this
    process for workers=0. On 2 cores the model keeps both busy and the count changes no rate (docs/experiments.md,
    section 11); processes keep a decoder crash or an out-of-memory kill from taking the job with it.

    A worker process that dies (killed for memory, a decoder crash) costs no photo but the one that killed it:
    its batch is read again one photo per fresh process, the photo that kills one again is recorded as failed,
    and a new pool reads on."""

    def __init__(self, batches: list[list[Found]], input_size: int, *, workers: int, warn: Callable[[str], None],
                 load_one: LoadOne | None = None):
        self.batches, self.input_size, self.workers, self.warn, self.load_one = batches, input_size, workers, warn, load_one
        self.ahead = max(1, workers)  # batches read while the model works on the current one

    def _pool(self, workers: int | None = None) -> Executor:
        if self.workers == 0:
            return ThreadPoolExecutor(max_workers=1)
        # forkserver, not fork: a forked worker would inherit the library's lock and the parent's torch threads
        return ProcessPoolExecutor(max_workers=workers or self.workers, mp_context=multiprocessing.get_context("forkserver"),
                                   initializer=exit_with, initargs=(os.getpid(),))

    def __iter__(self) -> Iterator[list[Loaded]]:
        if not self.batches:  # nothing to read: no pool to start
            return
        pool = self._pool()
        pending: deque[tuple[int, Future]] = deque()
        submitted = 0
        try:
            for batch in self.batches:
                while submitted < len(self.batches) and len(pending) <= self.ahead:
                    pending.append((submitted, pool.submit(load_batch, self.batches[submitted], self.input_size, self.load_one)))
                    submitted += 1
                _, future = pending.popleft()
                try:
                    loaded = future.result()
                except BrokenProcessPool:
                    self.warn("a photo-reading worker process died (out of memory, or a decoder crash); "
                              "reading its batch again one photo at a time")
                    pool.shutdown(wait=True, cancel_futures=True)
                    loaded = [self._read_alone(found) for found in batch]
                    if all(item.error == self._killed(item.found) for item in loaded) and not self._workers_run():
                        # a worker cannot even do nothing: the photos are not to blame (e.g. a script without a
                        # __main__ guard, which the fork server's workers import again)
                        raise LibraryError("photo-reading worker processes keep dying here; run again with "
                                           "--workers 0 to read photos in this process") from None
                    pool = self._pool()
                    pending = deque((index, pool.submit(load_batch, self.batches[index], self.input_size, self.load_one))
                                    for index, _ in pending)
                yield loaded
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _read_alone(self, found: Found) -> Loaded:
        with self._pool(1) as pool:
            try:
                return pool.submit(load_batch, [found], self.input_size, self.load_one).result()[0]
            except BrokenProcessPool:
                return Loaded(found, None, None, None, self._killed(found))

    def _workers_run(self) -> bool:
        with self._pool(1) as pool:
            try:
                return pool.submit(int).result() == 0
            except BrokenProcessPool:
                return False

    @staticmethod
    def _killed(found: Found) -> str:
        return f"{display_path(found.key)}: reading it killed the worker process (out of memory, or a decoder crash)"


def exit_with(pid: int) -> None:
    """A worker's initializer: exit as soon as the indexing process is gone. A SIGKILL gives it no chance to stop
    its workers, and an orphaned worker would never see the end of its work queue."""
    try:
        handle = os.pidfd_open(pid)  # refers to that process, not to whatever later gets its number
    except ProcessLookupError:
        os._exit(0)
    except (OSError, AttributeError):  # no pidfd here (an old kernel): live as any pool worker does
        return

    def wait() -> None:
        select.select([handle], [], [])  # readable once the process has exited
        os._exit(0)

    threading.Thread(target=wait, daemon=True, name="exit-with-parent").start()
