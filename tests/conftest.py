"""Shared fixtures: a tiny generated Flickr8k-shaped data set and a run trained on it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from captioner.config import load_config

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220)}
SHAPES = ("square", "circle")
SHARED_FLICKR8K = Path(os.environ.get("FLICKR8K_DIR", Path(__file__).resolve().parents[2] / "shared" / "flickr8k"))


def draw_shape(colour: str, shape: str, variant: int, size: int = 96) -> Image.Image:
    image = Image.new("RGB", (size, size), (245, 245, 245))
    draw = ImageDraw.Draw(image)
    margin = 14 + 4 * (variant % 4)
    box = (margin, margin + variant % 3, size - margin, size - margin + variant % 3)
    (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=COLOURS[colour])
    return image


def write_tiny_flickr(folder: Path, variants: int = 4) -> Path:
    """Token-file layout: colour x shape x variants images, 3 captions each, split 2:1:1 by variant."""
    images = folder / "images"
    images.mkdir(parents=True)
    tokens, splits = [], {"train": [], "dev": [], "test": []}
    for colour in COLOURS:
        for shape in SHAPES:
            for variant in range(variants):
                name = f"{colour}_{shape}_{variant}.jpg"
                draw_shape(colour, shape, variant).save(images / name, quality=95)
                captions = [f"A {colour} {shape} .", f"a {colour} {shape} on a white background", f"The {shape} is {colour}!"]
                tokens += [f"{name}#{number}\t{caption}" for number, caption in enumerate(captions)]
                split = "train" if variant < variants // 2 else ("dev" if variant == variants // 2 else "test")
                splits[split].append(name)
    (folder / "Flickr8k.token.txt").write_text("\n".join(tokens) + "\n")
    split_files = (("train", "Flickr_8k.trainImages.txt"), ("dev", "Flickr_8k.devImages.txt"), ("test", "Flickr_8k.testImages.txt"))
    for split, file_name in split_files:
        (folder / file_name).write_text("\n".join(splits[split]) + "\n")
    return folder


@pytest.fixture(scope="session")
def tiny_flickr(tmp_path_factory) -> Path:
    return write_tiny_flickr(tmp_path_factory.mktemp("tiny_flickr"))


def tiny_config(work: Path, data_dir: Path, **overrides):
    settings = [
        f"run_dir={work / 'run'}",
        f"data.data_dir={data_dir}",
        f"data.prepared_dir={work / 'prepared'}",
        "data.min_word_count=1",
        "encoder.name=efficientnet-lite0",
        f"encoder.cache_dir={work / 'features'}",
        "encoder.batch_size=8",
        "model.embed_dim=32", "model.feature_dim=32", "model.attention_dim=32", "model.hidden_dim=64",
        "model.dropout=0.1",
        "train.epochs=40", "train.images_per_batch=4", "train.learning_rate=0.005", "train.warmup_steps=5",
        "train.early_stopping_patience=100", "decode.max_length=12",
    ]
    settings += [f"{key}={value}" for key, value in overrides.items()]
    return load_config(None, settings)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_flickr) -> Path:
    """A run trained on the tiny data: prepare -> features (real lite0 weights) -> train."""
    from captioner.data.flickr import prepare
    from captioner.pipeline import extract_prepared_features
    from captioner.train import train

    work = tmp_path_factory.mktemp("tiny_work")
    config = tiny_config(work, tiny_flickr)
    prepare(config.data.data_dir, config.data.prepared_dir, min_word_count=1)
    extract_prepared_features(config, show_progress=False)
    train(config, show_progress=False)
    return Path(config.run_dir)


# ---- helpers shared by the core pipeline tests ----

def png_header(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` RGB pixels but holds no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def noisy_jpeg_bytes(size: int = 128, seed: int = 0) -> bytes:
    """A JPEG of random noise: large enough that cutting it leaves a valid header and broken pixel data."""
    import io

    import numpy as np

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_bad_images(folder: Path) -> dict[str, Path]:
    """One file per way an image can be bad, keyed by the kind of problem."""
    folder.mkdir(parents=True, exist_ok=True)
    jpeg = noisy_jpeg_bytes()
    files = {
        "empty": (folder / "empty.jpg", b""),
        "text": (folder / "notes.jpg", b"these are my holiday notes, not a photo\n"),
        "garbage": (folder / "garbage.jpg", bytes(range(256)) * 8),
        "truncated": (folder / "truncated.jpg", jpeg[: len(jpeg) // 2]),
        "huge": (folder / "huge.png", png_header(8000, 8000)),
    }
    for path, data in files.values():
        path.write_bytes(data)
    return {kind: path for kind, (path, _) in files.items()}


def write_calibration(run: Path, *, subject: float, bias: float) -> None:
    """A run-local grounding.json for the tiny run's Lite0 encoder: every photo unfamiliar, a recognised word at least
    `subject` probable a sure subject (0: always one), and a confidence of sigmoid(bias + 0.5 x the signals)."""
    import json

    from captioner.confidence import FEATURES

    entry = {"grounding": {"familiar": 2.0, "subject": subject},
             "confidence": {"weights": dict.fromkeys(FEATURES, 0.5), "bias": bias}}
    (run / "grounding.json").write_text(json.dumps({"encoders": {"efficientnet-lite0": entry}}))


@pytest.fixture(scope="session")
def tiny_captioner(tiny_run):
    """The tiny run loaded once for inference; tests must not modify its decoder."""
    from captioner.inference import Captioner

    return Captioner.load(tiny_run)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Run torch on one thread: the test models are tiny, and on a 2-core machine that is already busy
    (a training job) two threads stall on each other, making tiny training steps up to 30 times slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
