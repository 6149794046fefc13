"""Response schemas of the HTTP API: they document it in /api/openapi.json and shape what the routes return."""
from typing import Any

from pydantic import BaseModel, Field


class CaptionCandidate(BaseModel):
    caption: str
    tokens: list[str]
    score: float | None = Field(description="the ranking score: log-probability (length-normalised if configured), plus the "
                                            "weighted consensus with similar training photos' captions if the run reranks; "
                                            "null for a fallback caption, which the decoder did not write")
    log_probability: float | None = Field(description="natural log of the caption's probability under the model; null for a fallback")
    finished: bool = Field(description="false when the caption hit the length limit before <end>")
    attention: list[list[list[float]]] | None = Field(
        None, description="grid x grid weights per word, then one for <end> if finished; only with attention=true")


class Timings(BaseModel):
    read_ms: float = Field(description="decoding and preprocessing the upload")
    queue_ms: float = Field(description="waiting for a batch")
    encode_ms: float = Field(description="the batch's encoder call")
    decode_ms: float = Field(description="the batch's beam search")
    total_ms: float


class RecognisedWord(BaseModel):
    word: str
    probability: float


class CaptionResult(CaptionCandidate):
    filename: str
    confidence: float | None = Field(None, description="how likely the caption's main subject is right, in [0, 1] (calibrated "
                                                       "on dev photos); null when the run's encoder has no calibration")
    doubtful: bool = Field(False, description="confidence under 0.5: check the caption before trusting it")
    source: str = Field("decoder", description="decoder, or fallback: every candidate conflicted with what the encoder "
                                               "recognised, so the caption says only that (\"a photo of a cat\")")
    doubts: list[str] = Field([], description="why the decoder's first candidate was passed over, one line each")
    recognised: list[RecognisedWord] = Field([], description="the encoder's ImageNet classifier's most probable caption words")
    alternatives: list[CaptionCandidate] = Field(description="the other n-best candidates, in descending score order")
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


# the error answers the caption endpoints document, all {"detail": "one line"}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "not a readable image (empty, corrupt, truncated, unsupported, too many pixels)"},
    413: {"model": ErrorBody, "description": "upload over the byte limit, or too many files"},
    422: {"model": ErrorBody, "description": "missing file field or invalid option"},
    503: {"model": ErrorBody, "description": "queue full; retry after the Retry-After seconds"},
    504: {"model": ErrorBody, "description": "the request ran past its time limit"},
}
