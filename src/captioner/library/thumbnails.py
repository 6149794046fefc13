"""Thumbnails of library photos, for the HTML export and the web page's grid: one way to make them."""
from __future__ import annotations

import io
from pathlib import Path

from captioner.data.images import load_image

JPEG_QUALITY = 80


def jpeg_thumbnail(path: str | Path, size: int) -> tuple[bytes, int, int]:
    """A photo as JPEG bytes at most size x size (upright, never enlarged), with its width and height; raises
    ImageError for a file that cannot be read (big JPEGs decode at a reduced scale first: load_image's draft)."""
    image = load_image(path, draft=size)
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue(), image.width, image.height
