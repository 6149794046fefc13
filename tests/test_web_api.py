"""HTTP API: every endpoint, every kind of bad input, image modes, micro-batching, queue bound, time limit."""
from __future__ import annotations

import dataclasses
import io
import json
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from captioner.inference import Captioner
from captioner.web.api import read_test_scores
from captioner.web.app import create_app
from captioner.web.batching import DecodeOptions, MicroBatcher, Overloaded

from conftest import draw_shape
from servers import BackgroundServer

UPLOAD_LIMIT = 200_000  # small, so the 413 test needs no big file
MAX_FILES = 3
TEST_SCORES = {"BLEU-4": 0.25, "CIDEr": 0.5}


def encoded(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size in a few bytes: a decompression bomb's header."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")


RED_CIRCLE = encoded(draw_shape("red", "circle", 3), "JPEG", quality=95)
BLUE_SQUARE = encoded(draw_shape("blue", "square", 3), "PNG")


@pytest.fixture(scope="module")
def served_run(tiny_run, tmp_path_factory) -> Path:
    """A copy of the tiny run with test scores, as `evaluate` would leave them."""
    run = tmp_path_factory.mktemp("served") / "tiny"
    shutil.copytree(tiny_run, run)
    (run / "metrics.json").write_text(json.dumps({"test": {"scores": TEST_SCORES, "images": 4}}))
    return run


@pytest.fixture(scope="module")
def captioner(served_run) -> Captioner:
    return Captioner.load(served_run)


@pytest.fixture(scope="module")
def client(captioner):
    app = create_app(captioner, max_upload_bytes=UPLOAD_LIMIT, max_files=MAX_FILES, batch_wait_ms=5)
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        yield http


def post_one(client: httpx.Client, data: bytes, name: str = "photo.jpg", content_type: str = "image/jpeg",
             **form) -> httpx.Response:
    return client.post("/api/caption", files={"file": (name, data, content_type)}, data={k: str(v) for k, v in form.items()})


# --- endpoints -----------------------------------------------------------------------------------------
def test_caption_returns_caption_score_alternatives_and_timings(client):
    response = post_one(client, RED_CIRCLE, beam_size=3, n_best=3)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["filename"] == "photo.jpg"
    assert result["caption"] == " ".join(result["tokens"]) and result["tokens"]
    assert "red" in result["tokens"] or "circle" in result["tokens"]  # the tiny model learned colours and shapes
    assert result["score"] <= 0 and "attention" not in result
    assert len(result["alternatives"]) == 2
    assert all(other["score"] <= result["score"] for other in result["alternatives"])
    assert (result["beam_size"], result["n_best"], result["width"], result["height"]) == (3, 3, 96, 96)
    timings = result["timings"]
    assert set(timings) == {"read_ms", "queue_ms", "encode_ms", "decode_ms", "total_ms"}
    assert all(value >= 0 for value in timings.values()) and timings["total_ms"] >= timings["encode_ms"]


def test_caption_matches_the_python_api(client, captioner):
    expected = captioner.caption(BLUE_SQUARE, beam_size=2)[0]
    result = post_one(client, BLUE_SQUARE, name="square.png", content_type="image/png", beam_size=2).json()
    assert result["caption"] == expected.text
    assert result["score"] == pytest.approx(expected.score, abs=1e-3)


def test_attention_maps_only_when_asked(client, captioner):
    result = post_one(client, RED_CIRCLE, n_best=2, attention="true").json()
    attention = np.array(result["attention"])
    grid = captioner.encoder.spec.grid_size
    assert attention.shape == (len(result["tokens"]) + result["finished"], grid, grid)  # one map per word, then <end>
    assert np.allclose(attention.sum(axis=(1, 2)), 1.0, atol=0.01)  # softmax over the grid
    assert np.array(result["alternatives"][0]["attention"]).shape[1:] == (grid, grid)


def test_captions_gives_one_result_or_error_per_image_in_order(client):
    files = [("files", ("a.jpg", RED_CIRCLE, "image/jpeg")), ("files", ("empty.jpg", b"", "image/jpeg")),
             ("files", ("b.png", BLUE_SQUARE, "image/png"))]
    response = client.post("/api/captions", files=files, data={"n_best": "2"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [item["filename"] for item in results] == ["a.jpg", "empty.jpg", "b.png"]
    assert results[0]["caption"] and len(results[0]["alternatives"]) == 1
    assert results[1] == {"filename": "empty.jpg", "status": 400, "detail": "empty.jpg: empty file"}
    assert "blue" in results[2]["tokens"] or "square" in results[2]["tokens"]


def test_health_and_model(client, captioner):
    health = client.get("/api/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    model = client.get("/api/model").json()
    assert model["encoder"] == "efficientnet-lite0"
    assert model["vocabulary_size"] == len(captioner.vocabulary)
    assert model["test_scores"] == TEST_SCORES
    assert model["limits"]["max_upload_bytes"] == UPLOAD_LIMIT and model["limits"]["max_files"] == MAX_FILES


def test_a_run_that_decodes_with_flips_serves_the_flip_ensemble_caption(served_run):
    flipping = Captioner.load(served_run)
    flipping.config.decode = dataclasses.replace(flipping.config.decode, flip_ensemble=True)
    with BackgroundServer(create_app(flipping, batch_wait_ms=1)) as url, httpx.Client(base_url=url, timeout=60) as http:
        assert http.get("/api/model").json()["decode"]["flip_ensemble"] is True
        response = post_one(http, BLUE_SQUARE, "photo.png", "image/png", beam_size=3)
    assert response.status_code == 200, response.text
    expected = flipping.caption(Image.open(io.BytesIO(BLUE_SQUARE)), beam_size=3)[0]
    assert response.json()["caption"] == expected.text
    assert response.json()["score"] == pytest.approx(expected.score, abs=1e-3)


def test_test_scores_leave_out_a_metric_that_could_not_run(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"test": {"scores": {"CIDEr": 0.6, "SPICE": None}}}))
    assert read_test_scores(tmp_path) == {"CIDEr": 0.6}


def test_test_scores_are_null_for_an_unevaluated_run(tmp_path):
    assert read_test_scores(tmp_path) is None
    (tmp_path / "metrics.json").write_text("{not json")
    assert read_test_scores(tmp_path) is None


def test_openapi_schema_documents_every_endpoint(client):
    schema = client.get("/api/openapi.json").json()
    assert {"/api/caption", "/api/captions", "/api/health", "/api/model"} <= set(schema["paths"])
    caption = schema["paths"]["/api/caption"]["post"]
    body_ref = caption["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]
    assert {"file", "beam_size", "n_best", "attention"} <= set(schema["components"]["schemas"][body_ref]["properties"])
    assert {"200", "400", "413", "422", "503", "504"} <= set(caption["responses"])


def test_openapi_schema_marks_the_image_fields_required(client):
    # a schema-driven client (schemathesis, generated SDKs) must never send a caption request without its image
    schema = client.get("/api/openapi.json").json()
    bodies = {}
    for path, field in (("/api/caption", "file"), ("/api/captions", "files")):
        request_body = schema["paths"][path]["post"]["requestBody"]
        assert request_body["required"] is True, path
        reference = request_body["content"]["multipart/form-data"]["schema"]["$ref"]
        bodies[field] = schema["components"]["schemas"][reference.split("/")[-1]]
        assert bodies[field].get("required") == [field], path  # the options all have defaults
    assert bodies["files"]["properties"]["files"]["minItems"] == 1  # an empty list is no image either


@pytest.mark.parametrize("decode", [{"length_penalty": 1.0}, {"rerank_neighbours": 4, "rerank_weight": 2.0}],
                         ids=["length-normalised", "reranked"])
def test_candidates_come_in_descending_score_order_with_their_log_probability(served_run, decode):
    # the ranking score is not the log-probability here, so ranking by the wrong one would show
    ranking = Captioner.load(served_run)
    ranking.config.decode = dataclasses.replace(ranking.config.decode, **decode)
    with BackgroundServer(create_app(ranking, batch_wait_ms=1)) as url, httpx.Client(base_url=url, timeout=60) as http:
        responses = [post_one(http, image, beam_size=5, n_best=5) for image in (RED_CIRCLE, BLUE_SQUARE)]
    for response in responses:
        assert response.status_code == 200, response.text
        result = response.json()
        candidates = [result, *result["alternatives"]]
        assert len(candidates) == 5
        scores = [candidate["score"] for candidate in candidates]
        assert scores == sorted(scores, reverse=True), scores
        assert all(candidate["score"] != candidate["log_probability"] for candidate in candidates)
        assert all(candidate["log_probability"] <= 0 for candidate in candidates)


def test_page_and_assets_are_served_without_external_urls(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for path in ("/static/app.js", "/static/style.css"):
        asset = client.get(path)
        assert asset.status_code == 200
        assert "http://" not in asset.text and "https://" not in asset.text  # works offline: no CDN
    assert "http://" not in page.text and "https://" not in page.text


# --- bad input: a clear 4xx JSON error, and the server keeps serving ---------------------------------------
BAD_UPLOADS = {
    "zero-byte": (b"", "empty.jpg", "image/jpeg", 400, "empty file"),
    "text named .jpg": (b"hello, I am not a photo", "photo.jpg", "image/jpeg", 400, "not an image file"),
    "truncated JPEG": (RED_CIRCLE[: len(RED_CIRCLE) // 2], "cut.jpg", "image/jpeg", 400, "truncated"),
    "over the byte limit": (b"\xff" * (UPLOAD_LIMIT + 1), "huge.jpg", "image/jpeg", 413, f"over the {UPLOAD_LIMIT}-byte limit"),
    "over the pixel limit": (png_header_only(8000, 8000), "wide.png", "image/png", 400, "pixel limit"),
    "decompression bomb": (png_header_only(100_000, 100_000), "bomb.png", "image/png", 400, "decompression bomb"),
    "unsupported format (SVG)": (b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', "logo.svg",
                                 "image/svg+xml", 400, "not an image file"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_is_a_clear_error(client, case):
    data, name, content_type, status, message = BAD_UPLOADS[case]
    response = post_one(client, data, name=name, content_type=content_type)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert detail.startswith(name) and message in detail and "\n" not in detail


@pytest.mark.parametrize("form, message", [
    ({"beam_size": "0"}, "beam_size: Input should be greater than or equal to 1"),
    ({"beam_size": "99"}, "beam_size: Input should be less than or equal to 10"),
    ({"n_best": "many"}, "n_best: Input should be a valid integer"),
    ({"attention": "maybe"}, "attention: Input should be a valid boolean"),
    ({"beam_size": "2", "n_best": "3"}, "n_best (3) cannot exceed beam_size (2)"),
])
def test_wrong_option_values_are_422(client, form, message):
    response = post_one(client, RED_CIRCLE, **form)
    assert response.status_code == 422 and message in response.json()["detail"]


def test_missing_file_field_is_422(client):
    response = client.post("/api/caption", data={"beam_size": "3"})
    assert response.status_code == 422
    assert response.json()["detail"] == "no image: send it as the multipart/form-data field 'file'"
    response = client.post("/api/captions", files={"wrong_name": ("a.jpg", RED_CIRCLE, "image/jpeg")})
    assert response.status_code == 422 and "field 'files'" in response.json()["detail"]


def test_too_many_files_is_413(client):
    files = [("files", (f"{index}.png", BLUE_SQUARE, "image/png")) for index in range(MAX_FILES + 1)]
    response = client.post("/api/captions", files=files)
    assert response.status_code == 413
    assert response.json()["detail"] == f"too many files: {MAX_FILES + 1}, the limit is {MAX_FILES} per request"


def test_a_body_over_the_request_limit_is_refused_before_it_is_read(client):
    # like curl with a big file: headers first (Expect: 100-continue), body only if the server agrees
    host, port = client.base_url.host, client.base_url.port
    with socket.create_connection((host, port), timeout=30) as raw:
        raw.sendall(b"POST /api/caption HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                    b"Content-Length: 5000000000\r\nExpect: 100-continue\r\n\r\n")
        received = b""
        while chunk := raw.recv(65536):  # the server closes the connection after its answer
            received += chunk
    answer = received.decode()
    assert answer.startswith("HTTP/1.1 413") and "over the" in answer and "byte limit" in answer
    # a chunked body carries no length: it is counted as it arrives
    limit = UPLOAD_LIMIT * MAX_FILES + 64 * 1024
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
    response = client.post("/api/caption", content=iter([part + b"x" * limit + b"\r\n--b--\r\n"]),
                           headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413 and f"over the {limit}-byte limit" in response.json()["detail"]


def test_server_keeps_serving_after_bad_input(client):
    for data, name, content_type, _, _ in BAD_UPLOADS.values():
        post_one(client, data, name=name, content_type=content_type)
    assert client.get("/api/health").json()["status"] == "ok"
    assert post_one(client, RED_CIRCLE).status_code == 200


# --- image modes: all converted, animations use the first frame, EXIF rotation applied ---------------------
def _image_modes() -> dict[str, tuple[bytes, tuple[int, int]]]:
    red = draw_shape("red", "circle", 3)
    rgba = np.array(red.convert("RGBA"))
    rgba[:10, :, 3] = 0  # a transparent band
    sixteen_bit = Image.fromarray(np.array(red.convert("L")).astype(np.uint16) * 257)
    rotated = Image.Exif()
    rotated[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    return {
        "grayscale": (encoded(red.convert("L"), "PNG"), (96, 96)),
        "CMYK JPEG": (encoded(red.convert("CMYK"), "JPEG"), (96, 96)),
        "palette": (encoded(red.convert("P", palette=Image.ADAPTIVE), "PNG"), (96, 96)),
        "alpha": (encoded(Image.fromarray(rgba), "PNG"), (96, 96)),
        "16-bit": (encoded(sixteen_bit, "PNG"), (96, 96)),
        "EXIF rotated": (encoded(red.resize((120, 80)), "JPEG", exif=rotated), (80, 120)),
    }


IMAGE_MODES = _image_modes()


@pytest.mark.parametrize("mode", list(IMAGE_MODES))
def test_any_image_mode_is_captioned(client, mode):
    data, size = IMAGE_MODES[mode]
    response = post_one(client, data, name="image", content_type="application/octet-stream")
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["tokens"] and (result["width"], result["height"]) == size


def test_animated_gif_uses_the_first_frame(client):
    frames = [draw_shape("red", "circle", 3), draw_shape("blue", "square", 3)]
    gif = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    tokens = post_one(client, gif, name="anim.gif", content_type="image/gif").json()["tokens"]
    assert "red" in tokens and "blue" not in tokens and "square" not in tokens


# --- under load: micro-batching, bounded queue, time limit --------------------------------------------------
def test_concurrent_requests_share_batches_and_keep_their_own_options(captioner):
    app = create_app(captioner, max_batch=4, batch_wait_ms=300)
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        options = [{"beam_size": "1"}, {"beam_size": "3", "n_best": "2"}] * 4
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda form: post_one(http, RED_CIRCLE, **form).json(), options))
    sizes = [result["batch_size"] for result in results]
    assert max(sizes) >= 2 and max(sizes) <= 4  # batched together, never past the cap
    for form, result in zip(options, results, strict=True):
        assert result["beam_size"] == int(form["beam_size"])
        assert len(result["alternatives"]) == int(form.get("n_best", 1)) - 1
    # batching does not change the answer
    assert len({result["caption"] for result in results if result["beam_size"] == 3}) == 1


class _GatedCaptioner:
    """The real captioner, but each batch waits for a gate before encoding: lets a test hold the worker busy."""

    def __init__(self, captioner: Captioner, gate: threading.Event):
        self._captioner, self.gate = captioner, gate

    def __getattr__(self, name):
        return getattr(self._captioner, name)

    def encode_pixels(self, pixels, **options):
        self.gate.wait(30)
        return self._captioner.encode_pixels(pixels, **options)


@pytest.fixture()
def gated(captioner):
    gate = threading.Event()
    app = create_app(_GatedCaptioner(captioner, gate), queue_size=2, request_timeout_s=4, batch_wait_ms=1)
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        yield http, gate
        gate.set()


def test_a_full_queue_answers_503_instead_of_growing(gated):
    http, gate = gated
    with ThreadPoolExecutor(2) as pool:
        waiting = [pool.submit(post_one, http, RED_CIRCLE) for _ in range(2)]
        deadline = time.monotonic() + 20
        while http.get("/api/health").json()["queued_images"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        refused = post_one(http, RED_CIRCLE)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "server busy" in refused.json()["detail"]
        refused = http.post("/api/captions", files=[("files", ("a.jpg", RED_CIRCLE, "image/jpeg"))])
        assert refused.status_code == 503
        gate.set()
        assert [future.result().status_code for future in waiting] == [200, 200]
    assert post_one(http, RED_CIRCLE).status_code == 200  # room again


def test_a_request_past_its_time_limit_is_504_and_the_server_recovers(gated):
    http, gate = gated
    began = time.monotonic()
    response = post_one(http, RED_CIRCLE)
    assert response.status_code == 504 and "longer than 4 s" in response.json()["detail"]
    assert time.monotonic() - began < 10
    gate.set()
    assert post_one(http, RED_CIRCLE).status_code == 200
    assert http.get("/api/health").json()["queued_images"] == 0


def test_batcher_admission_is_bounded(captioner):
    batcher = MicroBatcher(captioner, capacity=3)
    with batcher.admit(2):
        with pytest.raises(Overloaded, match="limit 3"):
            with batcher.admit(2):
                pass
        with batcher.admit(1):
            assert batcher.outstanding == 3
    assert batcher.outstanding == 0
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(captioner, max_batch=0)
    assert DecodeOptions(3, 1) == DecodeOptions(3, 1)  # hashable key for grouping a batch by options


# --- the CLI entry point ------------------------------------------------------------------------------------
def test_captioner_serve_command_serves_the_api(served_run):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "captioner.cli", "serve", str(served_run), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, health = time.monotonic() + 120, None
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read()
                time.sleep(0.2)
        assert health is not None and health.status_code == 200 and health.json()["status"] == "ok"
        response = httpx.post(f"http://127.0.0.1:{port}/api/caption", files={"file": ("a.jpg", RED_CIRCLE)}, timeout=60)
        assert response.status_code == 200 and response.json()["caption"]
    finally:
        process.terminate()
        process.wait(10)
