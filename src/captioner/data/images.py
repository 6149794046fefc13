"""The one image loader: paths, bytes or PIL images -> upright RGB, with byte and pixel limits."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from captioner.errors import ImageError

ImageInput = str | Path | bytes | bytearray | Image.Image

MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_IMAGE_PIXELS = 50_000_000  # ~7000 x 7000; larger files are refused before they are decoded
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def describe(image: ImageInput) -> str:
    """A short name for an input, for error messages."""
    if isinstance(image, (str, Path)):
        return str(image)
    if isinstance(image, (bytes, bytearray)):
        return f"<{len(image)} bytes>"
    return f"<PIL image {getattr(image, 'size', '?')}>"


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode (grayscale, 16-bit, CMYK, palette, alpha) -> RGB; alpha is composited onto white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits rather than clip at 255
        image = image.point(lambda value: value / 256).convert("L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def load_image(image: ImageInput, *, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS,
               draft: int | None = None) -> Image.Image:
    """Open and fully decode an image, apply its EXIF rotation, return RGB; raise ImageError otherwise.

    With `draft`, a JPEG at least twice that size on both sides is decoded at a reduced scale (libjpeg's DCT
    scaling: 1/2, 1/4 or 1/8) that still leaves both sides at least `draft`: a 12-megapixel photo bound for a
    260-pixel encoder decodes several times faster. Smaller photos decode exactly as without it."""
    name = describe(image)
    if isinstance(image, Image.Image):
        opened = image
    else:
        if isinstance(image, (str, Path)):
            path = Path(image)
            if not path.exists():
                raise ImageError(f"{name}: file not found")
            if not path.is_file():
                raise ImageError(f"{name}: not a file")
            size = path.stat().st_size
            if size == 0:
                raise ImageError(f"{name}: empty file")
            if size > max_bytes:
                raise ImageError(f"{name}: file is {size} bytes, over the {max_bytes}-byte limit")
            data = path.read_bytes()
        else:
            data = bytes(image)
            if not data:
                raise ImageError(f"{name}: empty file")
            if len(data) > max_bytes:
                raise ImageError(f"{name}: {len(data)} bytes, over the {max_bytes}-byte limit")
        try:
            opened = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError:
            raise ImageError(f"{name}: too many pixels to decode safely (a possible decompression bomb)") from None
        except UnidentifiedImageError:
            raise ImageError(f"{name}: not an image file (or a format Pillow cannot read)") from None
        except Exception as error:  # Pillow raises many types for malformed headers
            raise ImageError(f"{name}: cannot read image ({type(error).__name__}: {error})") from None
    width, height = opened.size
    if width * height > max_pixels:
        raise ImageError(f"{name}: {width}x{height} pixels, over the {max_pixels}-pixel limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF and palette warnings are not the user's problem
            opened.seek(0)  # animated images: the first frame
            if draft is not None and opened.format == "JPEG" and min(width, height) >= 2 * draft:
                opened.draft("RGB", (draft * width // min(width, height), draft * height // min(width, height)))
            opened.load()
            upright = ImageOps.exif_transpose(opened)
            return to_rgb(upright)
    except ImageError:
        raise
    except Exception as error:  # truncated data, broken chunks, decoder errors
        raise ImageError(f"{name}: corrupt or truncated image ({type(error).__name__}: {error})".rstrip()) from None


def square_pixels(image: Image.Image, size: int) -> np.ndarray:
    """An RGB image resized to the encoder's size x size input: (size, size, 3) uint8. The resize half of
    `encoders.preprocess`, without torch, so photo-reading worker processes can do it."""
    return np.asarray(image.resize((size, size), Image.BICUBIC))


def list_images(folder: str | Path) -> list[Path]:
    """Image files in a folder (not recursive), sorted by name."""
    folder = Path(folder)
    return sorted(path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)
