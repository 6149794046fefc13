"""HTTP API and web page: `create_app(captioner)` for tests and embedding, `serve(run_dir)` for the CLI.

    GET  /                 the page (static/, no CDN)
    POST /api/caption      one image -> caption, score, alternatives, timings, attention on request
    POST /api/captions     several images -> one result or error per image
    GET  /api/health       liveness and queue depth
    GET  /api/model        encoder, vocabulary size, decoding defaults, limits, the run's test scores
    GET  /api/openapi.json the schema of all of the above
    GET  /library          with a library (`--library FILE`): search its photos by words (library.py, its /api/library routes)
    GET  /library/review   and review their captions: accept one, pick an alternative, write one (review.py)

Where things are: the routes in api.py (the JSON API) and page.py (the page), their response schemas in
schemas.py, the state they share (model, batcher, limits, image pool) in state.py, the JSON error
handlers in errors.py, the body limit and security headers in guard.py.

Uploads stay in memory and go through `load_image`, the project's one image loader. Requests are
micro-batched (batching.py); every error is JSON `{"detail": "one line"}` with a 4xx/5xx status.
"""
import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from captioner.data.images import MAX_IMAGE_PIXELS
from captioner.inference import Captioner
from captioner.web import api, page
from captioner.web import library as library_view
from captioner.web import review as review_view
from captioner.web.batching import MicroBatcher
from captioner.web.errors import add_error_handlers
from captioner.web.guard import GuardMiddleware
from captioner.web.state import MAX_BEAM_SIZE, Limits, ServerState, state_of

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_FILES = 16
MULTIPART_OVERHEAD = 64 * 1024  # headers and form fields around the files


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """While the app is up: the batcher's worker thread runs, and a small pool decodes uploaded images."""
    state = state_of(app)
    # image decoding is CPU work too: a small pool keeps it off the event loop and bounds its memory
    state.image_pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="captioner-images")
    state.batcher.start()
    try:
        yield
    finally:
        state.batcher.stop()
        state.image_pool.shutdown(wait=False, cancel_futures=True)
        state.image_pool = None
        if getattr(app.state, "library", None) is not None:
            app.state.library.close()  # reopened on the next request if the app is started again


# --- the app --------------------------------------------------------------------------------------------
def create_app(
    captioner: Captioner,
    *,
    max_batch: int = 16,
    batch_wait_ms: float = 10,
    queue_size: int = 64,
    request_timeout_s: float = 30,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    max_pixels: int = MAX_IMAGE_PIXELS,
    library: str | Path | library_view.ServedLibrary | None = None,
) -> FastAPI:
    """The FastAPI app around a loaded Captioner; the batcher thread runs while the app is up.
    With `library` (a library file) it also serves that library's searchable view at /library; a missing or invalid
    file is a one-line LibraryError here, before anything starts."""
    served = library if isinstance(library, library_view.ServedLibrary) or library is None else library_view.ServedLibrary(library)
    limits = Limits(max_upload_bytes=max_upload_bytes, max_files=max_files, max_pixels=max_pixels,
                    max_beam_size=MAX_BEAM_SIZE, request_timeout_s=request_timeout_s)
    batcher = MicroBatcher(captioner, max_batch=max_batch, wait_ms=batch_wait_ms, capacity=queue_size)
    if captioner.config.decode.rerank_neighbours:  # load it now, not in the first request
        log.info("consensus reranking against %d training photos", len(captioner.memory.captions))

    app = FastAPI(
        title="captioner", version=str(captioner.info.get("code_version", "")),
        description="Write an English sentence describing a photo. Upload images as multipart/form-data.",
        lifespan=lifespan, openapi_url="/api/openapi.json",
        docs_url=None, redoc_url=None,  # their pages load scripts from a CDN; the schema is enough offline
    )
    app.state.server = ServerState(captioner=captioner, batcher=batcher, limits=limits)
    app.state.library = served
    app.add_middleware(GuardMiddleware, max_body_bytes=max_upload_bytes * max_files + MULTIPART_OVERHEAD)
    add_error_handlers(app)
    app.include_router(api.router)
    app.include_router(page.router)
    app.include_router(library_view.router)
    app.include_router(review_view.router)
    app.mount("/static", StaticFiles(directory=page.STATIC), name="static")
    return app


# --- running it -------------------------------------------------------------------------------------------
def serve(run_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, library: str | Path | None = None,
          **app_options: Any) -> None:
    """Load a run and serve the page and API until interrupted (`captioner serve RUN [--library FILE]`)."""
    served = None if library is None else library_view.ServedLibrary(library)  # a bad file fails before the slow model load
    captioner = Captioner.load(run_dir)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this address can use the model%s", host,
                    "" if served is None else " and see every photo of the library")
    address = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
    extra = "" if served is None else f", its library of {served.photos} photos at {address}/library"
    print(f"captioner: serving {Path(run_dir).name} at {address}{extra}", flush=True)
    uvicorn.run(create_app(captioner, library=served, **app_options), host=host, port=port, log_level="warning", timeout_keep_alive=5)
