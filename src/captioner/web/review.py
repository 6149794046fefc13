"""The review view: a person checks the model's captions one photo at a time and accepts one, picks one of its
alternatives or writes their own; what a person decides stands against any later `captioner index --recaption`.

    GET  /library/review                              the page (static/review.html, review.js)
    GET  /api/library/review?filter=&offset=&limit=   photos to review: doubtful ones first, then the rest, each by path
    GET  /api/library/review/{path}                   one photo's review record
    POST /api/library/review/{path}                   a person's verdict (JSON, below); answers the updated record

filter: needs-review (the default: doubtful, and no person has looked at it), unreviewed (every caption no person
has looked at) or all (every captioned photo). Reviewing a photo never moves it in that order, so a client that
steps `offset` by what it got, less what it reviewed out of an unreviewed filter, meets each photo once.

A verdict is one of
    {"accept": "caption"}            the caption as it stands (the model's, or the one a person wrote before)
    {"accept": 2}                    the model's alternative caption number 2 (its index in `alternatives`)
    {"text": "...", "edited": true}  a person's own words; edited false says they chose one of the model's own
                                     captions (the store still marks it edited when it is none of them)
and the record answered says `review`: approved (a person accepted the model's words) or edited (a person wrote
them), with `reviewed_at`. Text has its whitespace collapsed; empty, over MAX_CAPTION_CHARS or holding control
characters is 422. A verdict must come as application/json (415), and from this server's own page when the browser
says where it comes from (403): no other web site can make a visitor's browser change the library.
"""
import logging
import unicodedata
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

from captioner.library.store import LibraryError, Photo
from captioner.web.errors import ApiError
from captioner.web.library import ERRORS, LibraryPhoto, Served, addressable, finite, library_key, photo_record, row_of
from captioner.web.page import STATIC
from captioner.web.schemas import ErrorBody

log = logging.getLogger(__name__)

router = APIRouter()

MAX_CAPTION_CHARS = 500
DEFAULT_BATCH, MAX_BATCH = 20, 100
ReviewFilter = Literal["needs-review", "unreviewed", "all"]
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: ERRORS[400],
    403: {"model": ErrorBody, "description": "sent by a page of another web site"},
    404: {"model": ErrorBody, "description": "no library served, or a path not in it"},
    415: {"model": ErrorBody, "description": "not sent as application/json"},
    422: {"model": ErrorBody, "description": "a malformed verdict: not one of its forms, empty or over-long text, no such alternative"},
    503: {"model": ErrorBody, "description": "the library file cannot be written now (read-only, gone, locked over 30 s)"},
}


# --- schemas ---------------------------------------------------------------------------------------------
class Alternative(BaseModel):
    text: str
    score: float | None = Field(description="the decoder's score for it (higher is better); null if unknown")


class ReviewPhoto(LibraryPhoto):
    machine_caption: str | None = Field(description="what the model wrote (the caption itself until a person edits it)")
    alternatives: list[Alternative] = Field(description="the model's other captions, best first: {\"accept\": index} picks one")
    review_url: str | None = Field(description="where to POST a verdict; null when the name cannot be named by a URL")


class ReviewQueue(BaseModel):
    filter: ReviewFilter
    offset: int
    limit: int
    total: int = Field(description="how many photos the filter holds now")
    photos: list[ReviewPhoto]


class Verdict(BaseModel):
    """What a person decided about one photo's caption: `accept` or `text` (with `edited`)."""

    model_config = ConfigDict(extra="forbid")

    accept: Literal["caption"] | StrictInt | None = Field(None, description='"caption", or the index of an alternative')
    text: StrictStr | None = Field(None, description=f"a caption in a person's words, at most {MAX_CAPTION_CHARS} characters")
    edited: StrictBool = Field(True, description="with text: false when the person chose one of the model's own captions")

    @model_validator(mode="after")
    def one_form(self) -> "Verdict":
        if (self.accept is None) == (self.text is None):
            raise ValueError('send either {"accept": "caption" | index} or {"text": "...", "edited": true}')
        if self.accept is not None and "edited" in self.model_fields_set:
            raise ValueError("edited goes with text only")
        return self


# --- helpers ---------------------------------------------------------------------------------------------
def review_record(photo: Photo) -> dict[str, Any]:
    """A row as the review view shows it: the search record, the model's own caption and alternatives."""
    record = photo_record(photo)
    alternatives = [{"text": item["text"], "score": finite(item.get("score"))} for item in photo.alternatives
                    if isinstance(item, dict) and isinstance(item.get("text"), str)]
    review_url = f"/api/library/review/{quote(photo.path, safe='/')}" if addressable(photo.path) else None
    return {**record, "machine_caption": photo.machine_caption, "alternatives": alternatives, "review_url": review_url}


def caption_text(text: str) -> str:
    """A person's caption as stored: whitespace collapsed; 422 when empty, too long or holding control characters."""
    text = " ".join(text.split())
    if not text:
        raise ApiError(422, "text: a caption cannot be empty")
    if len(text) > MAX_CAPTION_CHARS:
        raise ApiError(422, f"text: a caption is at most {MAX_CAPTION_CHARS} characters (this one has {len(text)})")
    if any(unicodedata.category(character) in ("Cc", "Cs") for character in text):
        raise ApiError(422, "text: a caption cannot hold control characters")  # nor would an XMP sidecar
    return text


def chosen_caption(photo: Photo, verdict: Verdict) -> tuple[str, bool]:
    """The text a verdict names for this photo, and whether a person wrote it."""
    if verdict.text is not None:
        return caption_text(verdict.text), verdict.edited
    if verdict.accept == "caption":
        if not photo.caption:
            raise ApiError(422, f"{photo.path}: has no caption to accept; send text")
        return photo.caption, False
    count = len(photo.alternatives)
    if not isinstance(verdict.accept, int) or not 0 <= verdict.accept < count:
        raise ApiError(422, f"accept: {photo.path} has no alternative {verdict.accept} (it has {count}: 0..{count - 1})"
                       if count else f"accept: {photo.path} has no alternatives")
    return photo.alternatives[verdict.accept]["text"], False


def same_site_json(request: Request) -> None:
    """A write comes from this server's own page, as JSON: a form or a script of another site cannot send it (JSON
    needs a CORS preflight, which this server never grants), and a browser's Origin / Sec-Fetch-Site must agree."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError(415, "send the verdict as JSON (content-type: application/json)")
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site not in (None, "same-origin", "none") or (origin is not None and urlsplit(origin).netloc != request.headers.get("host")):
        raise ApiError(403, "a review can be saved only from this server's own page")


# --- routes ------------------------------------------------------------------------------------------------
@router.get("/library/review", include_in_schema=False)
async def review_page() -> FileResponse:
    """The page; it asks /api/library/review for the photos."""
    return FileResponse(STATIC / "review.html")


@router.get("/api/library/review", response_model=ReviewQueue, responses={404: ERRORS[404], 422: ERRORS[422], 503: ERRORS[503]})
def review_queue(
    library: Served,
    filter_: Annotated[ReviewFilter, Query(alias="filter", description="which photos")] = "needs-review",
    offset: Annotated[int, Query(ge=0, description="how many of them to skip")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_BATCH)] = DEFAULT_BATCH,
) -> dict[str, Any]:
    """Photos to review, doubtful first, then the rest, each by path: their captions, alternatives and review state."""
    with library.reading() as opened:
        window, total = opened.review_queue(filter_, offset=offset, limit=limit)
    return {"filter": filter_, "offset": offset, "limit": limit, "total": total, "photos": [review_record(photo) for photo in window]}


@router.get("/api/library/review/{path:path}", response_model=ReviewPhoto,
            responses={code: ERRORS[code] for code in (400, 404, 503)})
def review_one(library: Served, path: str) -> dict[str, Any]:
    """One photo's caption, alternatives and review state."""
    return review_record(row_of(library, path)[1])


@router.post("/api/library/review/{path:path}", response_model=ReviewPhoto, responses=WRITE_ERRORS)
def review_photo(library: Served, path: str, verdict: Verdict, _: Annotated[None, Depends(same_site_json)]) -> dict[str, Any]:
    """Save a person's verdict on a photo's caption: accept it, pick an alternative, or give their own text."""
    key = library_key(path)
    with library.writing() as opened:  # one short transaction; it waits (up to 30 s) for `captioner index` to commit
        photo = opened.get(key)
        if photo is None:
            raise ApiError(404, f"{path}: not in the library")
        text, edited = chosen_caption(photo, verdict)
        try:
            updated = opened.set_review(key, text, edited=edited)
        except LibraryError as error:  # only what the checks above let through (a row removed meanwhile)
            raise ApiError(422, str(error)) from None
    log.info("review: %s %s", path, updated.review)
    return review_record(updated)
