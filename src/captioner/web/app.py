"""HTTP API and web page: `create_app(captioner)` for tests and embedding, `serve(run_dir)` for the CLI.

    GET  /                 the page (static/, no CDN)
    POST /api/caption      one image -> caption, score, alternatives, timings, attention on request
    POST /api/captions     several images -> one result or error per image
    GET  /api/health       liveness and queue depth
    GET  /api/model        encoder, vocabulary size, decoding defaults, limits, the run's test scores
    GET  /api/openapi.json the schema of all of the above

Uploads stay in memory and go through `load_image`, the project's one image loader. Requests are
micro-batched (batching.py); every error is JSON `{"detail": "one line"}` with a 4xx/5xx status.
"""

import asyncio
import json
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import torch
import uvicorn
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from captioner.data.images import MAX_IMAGE_PIXELS, describe, load_image
from captioner.errors import ImageError
from captioner.inference import Caption, Captioner
from captioner.web.batching import BatchResult, DecodeOptions, MicroBatcher, Overloaded

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
MAX_BEAM_SIZE = 10  # beam search cost grows with the beam; larger beams rarely help captions
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_FILES = 16
MULTIPART_OVERHEAD = 64 * 1024  # headers and form fields around the files
# the page may only talk to this server: no CDN, no inline script, previews from blob: URLs
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
                                 b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class ApiError(Exception):
    """An error with its HTTP status and a one-line message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# --- response schemas (they document the API in /api/openapi.json) --------------------------------
class CaptionCandidate(BaseModel):
    caption: str
    tokens: list[str]
    score: float = Field(description="the ranking score: log-probability (length-normalised if configured), plus the "
                                     "weighted consensus with similar training photos' captions if the run reranks")
    log_probability: float = Field(description="natural log of the caption's probability under the model")
    finished: bool = Field(description="false when the caption hit the length limit before <end>")
    attention: list[list[list[float]]] | None = Field(
        None, description="grid x grid weights per word, then one for <end> if finished; only with attention=true")


class Timings(BaseModel):
    read_ms: float = Field(description="decoding and preprocessing the upload")
    queue_ms: float = Field(description="waiting for a batch")
    encode_ms: float = Field(description="the batch's encoder call")
    decode_ms: float = Field(description="the batch's beam search")
    total_ms: float


class CaptionResult(CaptionCandidate):
    filename: str
    alternatives: list[CaptionCandidate] = Field(description="the other n-best candidates, best first")
    width: int
    height: int
    beam_size: int
    n_best: int
    batch_size: int = Field(description="how many images shared this one's encoder call")
    timings: Timings


class ImageFailure(BaseModel):
    filename: str
    status: int
    detail: str


class CaptionsResponse(BaseModel):
    results: list[CaptionResult | ImageFailure]
    total_ms: float


class ErrorBody(BaseModel):
    detail: str


class Health(BaseModel):
    status: str = Field(description="ok, or unavailable when the model worker has stopped")
    queued_images: int = Field(description="images admitted and not yet answered")
    capacity: int = Field(description="the most images admitted at once; beyond it requests get 503")
    batches: int = Field(description="encoder batches run since start")
    images: int = Field(description="images captioned since start")
    uptime_s: float


class ModelInfo(BaseModel):
    run: str
    encoder: str
    input_size: int
    grid_size: int
    vocabulary_size: int
    decode: dict[str, Any]
    test_scores: dict[str, float] | None = Field(description="the run's test-split scores, null if not evaluated")
    limits: dict[str, Any]
    code_version: str | None


ERRORS = {
    400: {"model": ErrorBody, "description": "not a readable image (empty, corrupt, truncated, unsupported, too many pixels)"},
    413: {"model": ErrorBody, "description": "upload over the byte limit, or too many files"},
    422: {"model": ErrorBody, "description": "missing file field or invalid option"},
    503: {"model": ErrorBody, "description": "queue full; retry after the Retry-After seconds"},
    504: {"model": ErrorBody, "description": "the request ran past its time limit"},
}


# --- helpers ------------------------------------------------------------------------------------------
def candidate_record(caption: Caption, *, attention: bool) -> dict[str, Any]:
    """`Caption.to_dict` in the API's shape: the text under "caption", alternatives listed by the caller."""
    record = caption.to_dict(attention=attention)
    record.pop("alternatives", None)
    record["caption"] = record.pop("text")
    return record


def read_test_scores(run_dir: Path) -> dict[str, float] | None:
    """RUN/metrics.json's test scores, or None when the run has not been evaluated (or the file is unreadable)."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        scores = json.loads(path.read_text())["test"]["scores"]
        # SPICE is null where it cannot run (no CoreNLP jars); that must not hide the other scores
        return {name: float(value) for name, value in scores.items() if value is not None}
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("cannot read test scores from %s (%s)", path, error)
        return None


def validation_message(errors: list[dict[str, Any]]) -> str:
    """FastAPI's validation error list -> one line a person can act on."""
    parts = []
    for error in errors:
        field = str(error.get("loc", ("", "?"))[-1])
        if error.get("type") == "missing" and field in ("file", "files"):
            parts.append(f"no image: send it as the multipart/form-data field '{field}'")
        else:
            parts.append(f"{field}: {error.get('msg', 'invalid value')}")
    return "; ".join(parts) or "invalid request"


class GuardMiddleware:
    """Refuse bodies over `max_body_bytes` with 413 (before parsing them) and add security headers."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            response = JSONResponse({"detail": f"request body is {int(length)} bytes, over the {limit}-byte limit"},
                                    status_code=413, headers={"connection": "close"})
            await response(scope, receive, self._with_headers(send))
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:  # chunked uploads carry no Content-Length
                raise StarletteHTTPException(413, f"request body is over the {limit}-byte limit")
            return message

        await self.app(scope, counting_receive, self._with_headers(send))

    @staticmethod
    def _with_headers(send: Send) -> Send:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        return send_with_headers


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
) -> FastAPI:
    """The FastAPI app around a loaded Captioner; the batcher thread runs while the app is up."""
    batcher = MicroBatcher(captioner, max_batch=max_batch, wait_ms=batch_wait_ms, capacity=queue_size)
    image_pool: ThreadPoolExecutor | None = None  # made at startup; None means asyncio's default pool
    started = time.monotonic()
    spec = captioner.encoder.spec
    default_beam = captioner.config.decode.beam_size
    if captioner.config.decode.rerank_neighbours:  # load it now, not in the first request
        log.info("consensus reranking against %d training photos", len(captioner.memory.captions))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal image_pool
        # image decoding is CPU work too: a small pool keeps it off the event loop and bounds its memory
        image_pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="captioner-images")
        batcher.start()
        yield
        batcher.stop()
        image_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="captioner", version=str(captioner.info.get("code_version", "")),
        description="Write an English sentence describing a photo. Upload images as multipart/form-data.",
        lifespan=lifespan, openapi_url="/api/openapi.json",
        docs_url=None, redoc_url=None,  # their pages load scripts from a CDN; the schema is enough offline
    )
    app.state.batcher = batcher
    app.add_middleware(GuardMiddleware, max_body_bytes=max_upload_bytes * max_files + MULTIPART_OVERHEAD)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        headers = {"retry-after": "1"} if error.status == 503 else None
        return JSONResponse({"detail": error.message}, status_code=error.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_message(list(error.errors()))}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        # the traceback goes to the server log; the client still gets JSON
        return JSONResponse({"detail": f"internal error ({type(error).__name__}); see the server log"}, status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(error.detail)}, status_code=error.status_code, headers=error.headers)

    def resolve_options(beam_size: int | None, n_best: int) -> DecodeOptions:
        if beam_size is not None and n_best > beam_size:
            raise ApiError(422, f"n_best ({n_best}) cannot exceed beam_size ({beam_size})")
        return DecodeOptions(beam_size=max(beam_size or default_beam, n_best), n_best=n_best)

    def prepare(data: bytes) -> tuple[torch.Tensor, tuple[int, int]]:
        image = load_image(data, max_bytes=max_upload_bytes, max_pixels=max_pixels)
        return captioner.encoder.preprocess(image), image.size

    async def caption_upload(upload: UploadFile, options: DecodeOptions, attention: bool) -> dict[str, Any]:
        """One upload -> its result record; raises ApiError with the status for this image."""
        began = time.perf_counter()
        filename = (upload.filename or "upload")[:200]
        data = await upload.read(max_upload_bytes + 1)  # never more than one byte past the limit
        if len(data) > max_upload_bytes:
            size = upload.size if upload.size is not None else len(data)
            raise ApiError(413, f"{filename}: {size} bytes, over the {max_upload_bytes}-byte limit")
        try:
            pixels, (width, height) = await asyncio.get_running_loop().run_in_executor(image_pool, prepare, data)
        except ImageError as error:
            # the loader names bytes by their length; the client knows the file by its name
            raise ApiError(400, str(error).replace(describe(data), filename, 1)) from None
        read_ms = (time.perf_counter() - began) * 1000
        result: BatchResult = await batcher.submit(pixels, options)
        caption = result.caption
        return {
            "filename": filename,
            **candidate_record(caption, attention=attention),
            "alternatives": [candidate_record(other, attention=attention) for other in caption.alternatives],
            "width": width, "height": height, "beam_size": options.beam_size, "n_best": options.n_best,
            "batch_size": result.batch_size,
            "timings": {"read_ms": round(read_ms, 1), "queue_ms": round(result.queue_ms, 1),
                        "encode_ms": round(result.encode_ms, 1), "decode_ms": round(result.decode_ms, 1),
                        "total_ms": round((time.perf_counter() - began) * 1000, 1)},
        }

    async def within_limits(count: int, work: Any) -> Any:
        """Run a request's work under the queue bound and the time limit."""
        try:
            with batcher.admit(count):
                return await asyncio.wait_for(work, timeout=request_timeout_s)
        except Overloaded as error:
            work.close()  # never started: do not leave the coroutine dangling
            raise ApiError(503, str(error)) from None
        except asyncio.TimeoutError:
            raise ApiError(504, f"request took longer than {request_timeout_s:g} s; try fewer or smaller images") from None

    # one set of option fields, shared by both endpoints
    BeamSize = Annotated[int | None, Form(ge=1, le=MAX_BEAM_SIZE, description=f"beam width (default: the run's, {default_beam})")]
    NBest = Annotated[int, Form(ge=1, le=MAX_BEAM_SIZE, description="how many candidates to return (the best + alternatives)")]
    WithAttention = Annotated[bool, Form(description="include the attention map of every word")]

    @app.post("/api/caption", response_model=CaptionResult, response_model_exclude_none=True, responses=ERRORS)
    async def caption_one(
        file: Annotated[UploadFile, File(description="the image (JPEG, PNG, GIF, WebP, BMP, TIFF)")],
        beam_size: BeamSize = None,
        n_best: NBest = 1,
        attention: WithAttention = False,
    ) -> dict[str, Any]:
        """Caption one image."""
        options = resolve_options(beam_size, n_best)
        return await within_limits(1, caption_upload(file, options, attention))

    @app.post("/api/captions", response_model=CaptionsResponse, response_model_exclude_none=True, responses=ERRORS)
    async def caption_several(
        files: Annotated[list[UploadFile], File(description=f"up to {max_files} images")],
        beam_size: BeamSize = None,
        n_best: NBest = 1,
        attention: WithAttention = False,
    ) -> dict[str, Any]:
        """Caption several images in one request: one result or error per image, in upload order."""
        if len(files) > max_files:
            raise ApiError(413, f"too many files: {len(files)}, the limit is {max_files} per request")
        options = resolve_options(beam_size, n_best)
        began = time.perf_counter()

        async def one(upload: UploadFile) -> dict[str, Any]:
            try:
                return await caption_upload(upload, options, attention)
            except ApiError as error:
                return {"filename": (upload.filename or "upload")[:200], "status": error.status, "detail": error.message}

        async def all_of_them() -> list[dict[str, Any]]:
            return list(await asyncio.gather(*(one(upload) for upload in files)))

        results = await within_limits(len(files), all_of_them())
        return {"results": results, "total_ms": round((time.perf_counter() - began) * 1000, 1)}

    @app.get("/api/health", response_model=Health, responses={503: {"model": Health}})
    async def health() -> Any:
        """Whether the model worker is running, and how much work is queued."""
        body = {"status": "ok" if batcher.alive else "unavailable", "queued_images": batcher.outstanding,
                "capacity": batcher.capacity, "batches": batcher.batches, "images": batcher.images,
                "uptime_s": round(time.monotonic() - started, 1)}
        return body if batcher.alive else JSONResponse(body, status_code=503)

    @app.get("/api/model", response_model=ModelInfo)
    async def model() -> dict[str, Any]:
        """What is being served: encoder, vocabulary, decoding defaults, request limits, test scores."""
        decode = captioner.config.decode
        return {
            "run": captioner.run_dir.name, "encoder": captioner.config.encoder.name,
            "input_size": spec.input_size, "grid_size": spec.grid_size,
            "vocabulary_size": len(captioner.vocabulary),
            "decode": {"beam_size": decode.beam_size, "length_penalty": decode.length_penalty, "max_length": decode.max_length,
                       "rerank_neighbours": decode.rerank_neighbours, "rerank_weight": decode.rerank_weight,
                       "flip_ensemble": decode.flip_ensemble},
            "test_scores": read_test_scores(captioner.run_dir),
            "limits": {"max_upload_bytes": max_upload_bytes, "max_files": max_files, "max_pixels": max_pixels,
                       "max_beam_size": MAX_BEAM_SIZE, "request_timeout_s": request_timeout_s},
            "code_version": captioner.info.get("code_version"),
        }

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


# --- running it -------------------------------------------------------------------------------------------
def serve(run_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, **app_options: Any) -> None:
    """Load a run and serve the page and API until interrupted (`captioner serve RUN`)."""
    captioner = Captioner.load(run_dir)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this address can use the model", host)
    print(f"captioner: serving {Path(run_dir).name} at http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}", flush=True)
    uvicorn.run(create_app(captioner, **app_options), host=host, port=port, log_level="warning", timeout_keep_alive=5)


class BackgroundServer:
    """Uvicorn in a daemon thread on a free loopback port (tests, notebooks): `with BackgroundServer(app) as url:`."""

    def __init__(self, app: FastAPI, *, host: str = "127.0.0.1", port: int = 0):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))  # binding here, not in uvicorn, so port 0 gives a known free port
        self.url = f"http://{host}:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_keep_alive=5))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def start(self, timeout: float = 30) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server at {self.url} did not start within {timeout} s")
            time.sleep(0.02)
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
