"""The JSON API's routes: caption one image or several, health, and what model is served.

Each route gets the app's ServerState as a dependency (`state: AppState`); the helpers below take it
as their first argument, so everything a route does is visible from its signature.
"""
import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import torch
from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import JSONResponse

from captioner.data.images import describe, load_image
from captioner.errors import ImageError
from captioner.inference import Caption
from captioner.web.batching import BatchResult, DecodeOptions, Overloaded
from captioner.web.errors import ApiError
from captioner.web.schemas import ERRORS, CaptionResult, CaptionsResponse, Health, ModelInfo
from captioner.web.state import MAX_BEAM_SIZE, AppState, ServerState

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api")
Result = TypeVar("Result")

# one set of option fields, shared by both caption endpoints
BeamSize = Annotated[int | None, Form(ge=1, le=MAX_BEAM_SIZE, description="beam width (default: the run's own, "
                                                                           "decode.beam_size in GET /api/model)")]
NBest = Annotated[int, Form(ge=1, le=MAX_BEAM_SIZE, description="how many candidates to return (the best + alternatives)")]
WithAttention = Annotated[bool, Form(description="include the attention map of every word")]


# --- helpers ---------------------------------------------------------------------------------------------
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


def resolve_options(state: ServerState, beam_size: int | None, n_best: int) -> DecodeOptions:
    """The form's options -> the batcher's; an unset beam size is the run's own (widened to n_best)."""
    if beam_size is not None and n_best > beam_size:
        raise ApiError(422, f"n_best ({n_best}) cannot exceed beam_size ({beam_size})")
    return DecodeOptions(beam_size=max(beam_size or state.captioner.config.decode.beam_size, n_best), n_best=n_best)


def prepare_image(state: ServerState, data: bytes) -> tuple[torch.Tensor, tuple[int, int]]:
    """Upload bytes -> the encoder's (3, size, size) pixels and the photo's (width, height); raises ImageError."""
    limits = state.limits
    image = load_image(data, max_bytes=limits.max_upload_bytes, max_pixels=limits.max_pixels)
    return state.captioner.encoder.preprocess(image), image.size


async def caption_upload(state: ServerState, upload: UploadFile, options: DecodeOptions, attention: bool) -> dict[str, Any]:
    """One upload -> its result record; raises ApiError with the status for this image."""
    began = time.perf_counter()
    filename = (upload.filename or "upload")[:200]
    max_bytes = state.limits.max_upload_bytes
    data = await upload.read(max_bytes + 1)  # never more than one byte past the limit
    if len(data) > max_bytes:
        size = upload.size if upload.size is not None else len(data)
        raise ApiError(413, f"{filename}: {size} bytes, over the {max_bytes}-byte limit")
    try:
        # image decoding is CPU work too: the pool keeps it off the event loop
        pixels, (width, height) = await asyncio.get_running_loop().run_in_executor(state.image_pool, prepare_image, state, data)
    except ImageError as error:
        # the loader names bytes by their length; the client knows the file by its name
        raise ApiError(400, str(error).replace(describe(data), filename, 1)) from None
    read_ms = (time.perf_counter() - began) * 1000
    result: BatchResult = await state.batcher.submit(pixels, options, photo=data)
    caption = result.caption
    return {
        "filename": filename,
        **candidate_record(caption, attention=attention),
        # already best first by score (the beam's, or the reranked one), the order the page shows them in
        "alternatives": [candidate_record(other, attention=attention) for other in caption.alternatives],
        "width": width, "height": height, "beam_size": options.beam_size, "n_best": options.n_best,
        "batch_size": result.batch_size,
        "timings": {"read_ms": round(read_ms, 1), "queue_ms": round(result.queue_ms, 1),
                    "encode_ms": round(result.encode_ms, 1), "decode_ms": round(result.decode_ms, 1),
                    "total_ms": round((time.perf_counter() - began) * 1000, 1)},
    }


async def within_limits(state: ServerState, count: int, work: Coroutine[Any, Any, Result]) -> Result:
    """Run a request's work under the queue bound and the time limit."""
    timeout = state.limits.request_timeout_s
    try:
        with state.batcher.admit(count):
            return await asyncio.wait_for(work, timeout=timeout)
    except Overloaded as error:
        work.close()  # never started: do not leave the coroutine dangling
        raise ApiError(503, str(error)) from None
    except asyncio.TimeoutError:
        raise ApiError(504, f"request took longer than {timeout:g} s; try fewer or smaller images") from None


# --- routes ------------------------------------------------------------------------------------------------
@router.post("/caption", response_model=CaptionResult, response_model_exclude_unset=True, responses=ERRORS)
async def caption_one(
    state: AppState,
    file: Annotated[UploadFile, File(description="the image (JPEG, PNG, GIF, WebP, BMP, TIFF)")],
    beam_size: BeamSize = None,
    n_best: NBest = 1,
    attention: WithAttention = False,
) -> dict[str, Any]:
    """Caption one image."""
    options = resolve_options(state, beam_size, n_best)
    return await within_limits(state, 1, caption_upload(state, file, options, attention))


@router.post("/captions", response_model=CaptionsResponse, response_model_exclude_unset=True, responses=ERRORS)
async def caption_several(
    state: AppState,
    files: Annotated[list[UploadFile], File(min_length=1, description="the images, at most limits.max_files (GET /api/model) "
                                                                      "per request")],
    beam_size: BeamSize = None,
    n_best: NBest = 1,
    attention: WithAttention = False,
) -> dict[str, Any]:
    """Caption several images in one request: one result or error per image, in upload order."""
    max_files = state.limits.max_files
    if len(files) > max_files:
        raise ApiError(413, f"too many files: {len(files)}, the limit is {max_files} per request")
    options = resolve_options(state, beam_size, n_best)
    began = time.perf_counter()

    async def one(upload: UploadFile) -> dict[str, Any]:
        try:
            return await caption_upload(state, upload, options, attention)
        except ApiError as error:
            return {"filename": (upload.filename or "upload")[:200], "status": error.status, "detail": error.message}

    async def all_of_them() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(one(upload) for upload in files)))

    results = await within_limits(state, len(files), all_of_them())
    return {"results": results, "total_ms": round((time.perf_counter() - began) * 1000, 1)}


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(state: AppState) -> Any:
    """Whether the model worker is running, and how much work is queued."""
    batcher = state.batcher
    body = {"status": "ok" if batcher.alive else "unavailable", "queued_images": batcher.outstanding,
            "capacity": batcher.capacity, "batches": batcher.batches, "images": batcher.images,
            "uptime_s": round(time.monotonic() - state.started, 1)}
    return body if batcher.alive else JSONResponse(body, status_code=503)


@router.get("/model", response_model=ModelInfo)
async def model(state: AppState) -> dict[str, Any]:
    """What is being served: encoder, vocabulary, decoding defaults, request limits, test scores."""
    captioner = state.captioner
    spec, decode = captioner.encoder.spec, captioner.config.decode
    return {
        "run": captioner.run_dir.name, "encoder": captioner.config.encoder.name,
        "input_size": spec.input_size, "grid_size": spec.grid_size,
        "vocabulary_size": len(captioner.vocabulary),
        "decode": {"beam_size": decode.beam_size, "length_penalty": decode.length_penalty, "max_length": decode.max_length,
                   "rerank_neighbours": decode.rerank_neighbours, "rerank_weight": decode.rerank_weight,
                   "flip_ensemble": decode.flip_ensemble},
        "test_scores": read_test_scores(captioner.run_dir),
        "limits": dataclasses.asdict(state.limits),
        "code_version": captioner.info.get("code_version"),
    }
