"""Dynamic micro-batching: images from concurrent requests share one encoder and decoder call.

Requests hand in preprocessed pixels and get a future back. One worker thread waits for the first
job, then up to `wait_ms` more for others (at most `max_batch`), encodes them all at once and runs
one beam search per distinct set of decoding options. Admission is bounded: `admit(n)` refuses work
once `capacity` images are outstanding, so a burst gets 503s instead of growing memory.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from captioner.inference import Caption, Captioner

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """The bounded queue is full; the client should retry later (HTTP 503)."""


@dataclass(frozen=True)
class DecodeOptions:
    beam_size: int
    n_best: int


@dataclass
class BatchResult:
    caption: Caption
    queue_ms: float  # from submit to the start of its batch
    encode_ms: float  # the whole batch's encoder call
    decode_ms: float  # the beam search for its options group
    batch_size: int  # images encoded together


@dataclass
class _Job:
    pixels: torch.Tensor  # (3, size, size)
    options: DecodeOptions
    photo: bytes | None = None  # the upload, read again only if the person detector is asked about it
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    submitted: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """One worker thread owns the model; every other thread only submits and waits."""

    def __init__(self, captioner: Captioner, *, max_batch: int = 16, wait_ms: float = 10, capacity: int = 64):
        if max_batch < 1 or capacity < 1 or wait_ms < 0:
            raise ValueError(f"expected max_batch >= 1, capacity >= 1, wait_ms >= 0, got {max_batch}, {capacity}, {wait_ms}")
        self.captioner = captioner
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000
        self.capacity = capacity
        self._jobs: deque[_Job] = deque()
        self._condition = threading.Condition()
        self._admitted = 0  # images between admit() and the end of their request
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.images = 0

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="captioner-batcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        for job in self._jobs:  # whatever was left will never run
            job.future.cancel()
        self._jobs.clear()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def outstanding(self) -> int:
        return self._admitted

    # --- admission and submission -----------------------------------------------------------
    @contextmanager
    def admit(self, count: int) -> Iterator[None]:
        """Reserve room for `count` images for the duration of a request, or raise Overloaded."""
        with self._condition:
            if self._admitted + count > self.capacity:
                raise Overloaded(f"server busy: {self._admitted} images queued, limit {self.capacity}; retry shortly")
            self._admitted += count
        try:
            yield
        finally:
            with self._condition:
                self._admitted -= count

    def submit(self, pixels: torch.Tensor, options: DecodeOptions, photo: bytes | None = None) -> asyncio.Future:
        """Queue one preprocessed image (and the photo's bytes, for the person detector); await the result.
        Cancelling the future drops the job."""
        if self._thread is None:
            self.start()  # an app used without its startup event (e.g. a bare test client) still works
        job = _Job(pixels, options, photo)
        with self._condition:
            if self._stopping:
                raise Overloaded("server is shutting down")
            self._jobs.append(job)
            self._condition.notify()
        return asyncio.wrap_future(job.future)

    # --- worker ---------------------------------------------------------------------------
    def _next_batch(self) -> list[_Job]:
        with self._condition:
            while not self._jobs and not self._stopping:
                self._condition.wait()
            if self._stopping:
                return []
            # the first job opens a short window for others to join
            deadline = time.perf_counter() + self.wait_s
            while len(self._jobs) < self.max_batch and not self._stopping:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            count = min(self.max_batch, len(self._jobs))
            return [self._jobs.popleft() for _ in range(count)]

    def _run(self) -> None:
        while True:
            jobs = self._next_batch()
            if not jobs:
                return
            # set_running_or_notify_cancel is False for jobs whose request already timed out
            live = [job for job in jobs if job.future.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                self._process(live)
            except Exception as error:  # a model failure fails this batch, not the server
                log.exception("batch of %d images failed", len(live))
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(error)

    def _process(self, jobs: list[_Job]) -> None:
        started = time.perf_counter()
        grid, mirrored = self.captioner.encode_pixels(torch.stack([job.pixels for job in jobs]))  # each (batch, pixels, channels)
        encode_ms = (time.perf_counter() - started) * 1000
        groups: dict[DecodeOptions, list[int]] = {}
        for index, job in enumerate(jobs):
            groups.setdefault(job.options, []).append(index)
        # beam search takes one beam size per call, so each distinct option set decodes separately
        for options, indices in groups.items():
            decode_started = time.perf_counter()
            captions = self.captioner.decode(grid[indices], None if mirrored is None else mirrored[indices],
                                             beam_size=options.beam_size, n_best=options.n_best,
                                             photos=[jobs[index].photo for index in indices])
            decode_ms = (time.perf_counter() - decode_started) * 1000
            for index, caption in zip(indices, captions, strict=True):
                job = jobs[index]
                queue_ms = (started - job.submitted) * 1000
                job.future.set_result(BatchResult(caption, queue_ms, encode_ms, decode_ms, len(jobs)))
        self.batches += 1
        self.images += len(jobs)
