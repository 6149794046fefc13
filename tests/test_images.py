"""The one image loader: bad files become ImageError with a reason; any mode and orientation become upright RGB."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from captioner.data.images import list_images, load_image
from captioner.errors import CaptionerError, ImageError

from conftest import noisy_jpeg_bytes, png_header, write_bad_images

EXIF_ORIENTATION = 0x0112


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def two_colour_image(width: int = 60, height: int = 30) -> Image.Image:
    """Left half red, right half blue: enough to tell which way it was turned."""
    image = Image.new("RGB", (width, height), (255, 0, 0))
    image.paste((0, 0, 255), (width // 2, 0, width, height))
    return image


def assert_close(pixel, expected, tolerance=12):
    assert all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, expected, strict=True)), (pixel, expected)


@pytest.fixture(scope="module")
def bad_images(tmp_path_factory):
    return write_bad_images(tmp_path_factory.mktemp("bad_images"))


def test_image_error_is_a_captioner_error():
    assert issubclass(ImageError, CaptionerError)


def test_path_that_does_not_exist(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.jpg: file not found"):
        load_image(tmp_path / "nope.jpg")


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("empty", "empty file"),
        ("text", "not an image file"),
        ("garbage", "not an image file"),
        ("truncated", "corrupt or truncated image"),
        ("huge", "8000x8000 pixels, over the 50000000-pixel limit"),
    ],
)
def test_bad_image_files_raise_image_error_naming_the_file(bad_images, kind, reason):
    path = bad_images[kind]
    with pytest.raises(ImageError) as caught:
        load_image(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert reason in message
    assert "\n" not in message


@pytest.mark.parametrize("kind", ["empty", "text", "garbage", "truncated", "huge"])
def test_bad_image_bytes_raise_image_error(bad_images, kind):
    with pytest.raises(ImageError, match=r"^<\d+ bytes>: "):
        load_image(bad_images[kind].read_bytes())


def test_huge_image_is_refused_before_its_pixels_are_decoded(monkeypatch):
    # the file declares 64 megapixels and holds none: had it been decoded, the error would say "truncated"
    decoded = []
    original_load = ImageFile.ImageFile.load

    def recording_load(self):
        decoded.append(self.size)
        return original_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    with pytest.raises(ImageError, match="over the 50000000-pixel limit"):
        load_image(png_header(8000, 8000))
    assert decoded == []
    load_image(encode(Image.new("RGB", (4, 4)), "PNG"))
    assert set(decoded) == {(4, 4)}  # the spy does see decoding


def test_gigantic_header_is_refused():
    with pytest.raises(ImageError, match="pixels"):
        load_image(png_header(100_000, 100_000))


def test_small_pixel_and_byte_limits_are_respected():
    data = encode(Image.new("RGB", (64, 64), (10, 20, 30)), "PNG")
    with pytest.raises(ImageError, match="64x64 pixels, over the 1000-pixel limit"):
        load_image(data, max_pixels=1000)
    with pytest.raises(ImageError, match="over the 10-byte limit"):
        load_image(data, max_bytes=10)
    assert load_image(data, max_pixels=64 * 64).size == (64, 64)


def test_truncated_jpeg_from_a_path(tmp_path):
    data = noisy_jpeg_bytes(seed=1)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) * 3 // 4])
    with pytest.raises(ImageError, match="truncated"):
        load_image(path)
    path.write_bytes(data)
    assert load_image(path).size == (128, 128)  # the whole file is fine


def test_grayscale_is_converted_to_rgb():
    image = load_image(encode(Image.new("L", (20, 10), 77), "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((3, 3)) == (77, 77, 77)


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    values = np.zeros((10, 20), dtype=np.uint16)
    values[:, :10] = 32768
    values[:, 10:] = 65535
    source = Image.fromarray(values)
    assert source.mode.startswith("I;16")
    image = load_image(encode(source, "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((2, 2)) == (128, 128, 128)
    assert image.getpixel((15, 2)) == (255, 255, 255)


def test_cmyk_is_converted_to_rgb():
    image = load_image(encode(Image.new("CMYK", (20, 10), (0, 255, 255, 0)), "JPEG", quality=95))
    assert image.mode == "RGB"
    assert_close(image.getpixel((5, 5)), (255, 0, 0))


def test_palette_is_converted_to_rgb():
    source = Image.new("RGB", (20, 10), (0, 200, 0)).convert("P", palette=Image.ADAPTIVE)
    image = load_image(encode(source, "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((3, 3)) == (0, 200, 0)


def test_palette_transparency_is_composited_on_white():
    source = Image.new("P", (20, 10), 0)
    source.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    source.putpixel((0, 0), 1)
    image = load_image(encode(source, "PNG", transparency=0))
    assert image.getpixel((0, 0)) == (0, 0, 255)
    assert image.getpixel((5, 5)) == (255, 255, 255)


def test_alpha_is_composited_on_white():
    source = Image.new("RGBA", (20, 10), (255, 0, 0, 0))  # fully transparent red
    source.putpixel((1, 1), (0, 0, 255, 255))
    source.putpixel((2, 2), (0, 0, 0, 128))
    image = load_image(encode(source, "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((1, 1)) == (0, 0, 255)
    assert_close(image.getpixel((2, 2)), (127, 127, 127), tolerance=2)
    grey_alpha = load_image(encode(Image.new("LA", (4, 4), (0, 0)), "PNG"))
    assert grey_alpha.getpixel((1, 1)) == (255, 255, 255)


def test_black_and_white_bilevel_image():
    image = load_image(encode(Image.new("1", (8, 8), 1), "PNG"))
    assert image.mode == "RGB" and image.getpixel((1, 1)) == (255, 255, 255)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (20, 10), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    image = load_image(encode(frames[0], "GIF", save_all=True, append_images=frames[1:]))
    assert image.mode == "RGB"
    assert image.getpixel((1, 1)) == (255, 0, 0)


@pytest.mark.parametrize(
    ("orientation", "size", "top_left", "bottom_right"),
    [
        (1, (60, 30), (255, 0, 0), (0, 0, 255)),  # upright already
        (3, (60, 30), (0, 0, 255), (255, 0, 0)),  # upside down
        (6, (30, 60), (255, 0, 0), (0, 0, 255)),  # turned 90 degrees: the left half ends up on top
        (8, (30, 60), (0, 0, 255), (255, 0, 0)),  # turned 270 degrees: the right half ends up on top
    ],
)
@pytest.mark.parametrize("format", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(tmp_path, orientation, size, top_left, bottom_right, format):
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    path = tmp_path / f"photo.{format.lower()}"
    path.write_bytes(encode(two_colour_image(), format, exif=exif, **({"quality": 95} if format == "JPEG" else {})))
    image = load_image(path)
    assert image.size == size
    assert_close(image.getpixel((2, 2)), top_left)
    assert_close(image.getpixel((size[0] - 3, size[1] - 3)), bottom_right)


def test_pil_input_is_returned_as_upright_rgb():
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    opened = Image.open(io.BytesIO(encode(two_colour_image(), "PNG", exif=exif)))
    image = load_image(opened)
    assert image.size == (30, 60) and image.mode == "RGB"
    assert load_image(Image.new("L", (5, 5))).mode == "RGB"
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(encode(two_colour_image(), "PNG", exif=exif)))).convert("RGB")
    assert np.array_equal(np.asarray(image), np.asarray(expected))


def test_list_images_is_sorted_not_recursive_and_filters_suffixes(tmp_path):
    for name in ("b.JPG", "a.png", "c.jpeg", "notes.txt", "d.webp"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.jpg").write_bytes(b"x")
    (tmp_path / "folder.jpg").mkdir()
    assert [path.name for path in list_images(tmp_path)] == ["a.png", "b.JPG", "c.jpeg", "d.webp"]
    assert list_images(tmp_path / "sub") == [tmp_path / "sub" / "e.jpg"]


def test_draft_decodes_a_big_jpeg_at_a_reduced_scale_and_leaves_small_photos_alone(tmp_path):
    big, small = tmp_path / "big.jpg", tmp_path / "small.jpg"
    Image.new("RGB", (2400, 1800), (200, 40, 40)).save(big, quality=90)
    Image.new("RGB", (500, 375), (40, 200, 40)).save(small, quality=90)
    reduced = load_image(big, draft=260)
    assert reduced.size == (600, 450) and min(reduced.size) >= 260  # 1/4 scale: the smallest that keeps 260
    assert load_image(big).size == (2400, 1800)
    np.testing.assert_array_equal(np.asarray(load_image(small, draft=260)), np.asarray(load_image(small)))
