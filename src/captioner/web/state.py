"""What the routes share, stored on `app.state.server`: the model, its batcher, the request limits, the image pool.

Routes ask for it as a FastAPI dependency (`state: AppState`), so each route reads as a plain function of its
request and this state, with nothing captured from `create_app`'s locals.
"""
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from captioner.inference import Captioner
from captioner.web.batching import MicroBatcher

MAX_BEAM_SIZE = 10  # beam search cost grows with the beam; larger beams rarely help captions


@dataclass(frozen=True)
class Limits:
    """Per-request limits; /api/model reports them as they are here (field order included)."""

    max_upload_bytes: int
    max_files: int
    max_pixels: int
    max_beam_size: int
    request_timeout_s: float


@dataclass
class ServerState:
    """One per app: create_app builds it, the lifespan adds the image pool, every route reads it."""

    captioner: Captioner
    batcher: MicroBatcher
    limits: Limits
    started: float = field(default_factory=time.monotonic)  # for the health endpoint's uptime
    image_pool: ThreadPoolExecutor | None = None  # made at startup; None means asyncio's default pool


def state_of(app: FastAPI) -> ServerState:
    """The ServerState that create_app stored on the app."""
    state = getattr(app.state, "server", None)
    if not isinstance(state, ServerState):
        raise RuntimeError("app.state.server holds no ServerState: build the app with captioner.web.app.create_app")
    return state


def get_state(request: Request) -> ServerState:
    """The dependency that gives a route the app's ServerState."""
    return state_of(request.app)


AppState = Annotated[ServerState, Depends(get_state)]
