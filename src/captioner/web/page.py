"""The web page: index.html at `/`; create_app mounts its scripts and styles (static/, no CDN) at /static."""
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).parent / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    """The page; it reads its defaults (beam size, limits) from /api/model."""
    return FileResponse(STATIC / "index.html")
