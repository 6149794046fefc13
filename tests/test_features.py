"""Encoders (registry, preprocessing, grid shape) and the resumable on-disk feature cache."""
from __future__ import annotations

import hashlib
import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from captioner import features as features_module
from captioner.data.images import load_image
from captioner.encoders import ENCODERS, Encoder, encoder_spec, mirror_pixels, preprocess
from captioner.errors import CaptionerError
from captioner.features import FeatureCache, cache_folder, extract_features

from conftest import draw_shape

LITE0 = "efficientnet-lite0"
NAMES = ["red_0.jpg", "red_1.jpg", "green_0.jpg", "broken.jpg", "green_1.jpg", "blue_0.jpg", "blue_1.jpg"]


@pytest.fixture(scope="module")
def encoder():
    return Encoder(LITE0)


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("feature_images")
    for name in NAMES:
        if name == "broken.jpg":
            (folder / name).write_bytes(b"\x00\x01 definitely not a jpeg")
        else:
            colour, variant = name[:-4].split("_")
            draw_shape(colour, "circle", int(variant)).save(folder / name)
    return folder


@pytest.fixture(scope="module")
def extracted(images_dir, tmp_path_factory):
    """A finished cache of NAMES, extracted two images at a time."""
    cache_dir = tmp_path_factory.mktemp("features")
    cache = extract_features(NAMES, images_dir, encoder_name=LITE0, cache_dir=cache_dir, batch_size=2, show_progress=False)
    return cache, cache_dir


def count_encoded(monkeypatch) -> list[int]:
    """Record the batch size of every call to the encoder network."""
    calls: list[int] = []
    original = Encoder.encode

    def counting_encode(self, pixels):
        calls.append(pixels.shape[0])
        return original(self, pixels)

    monkeypatch.setattr(Encoder, "encode", counting_encode)
    return calls


def record_loaded(monkeypatch) -> list[str]:
    """Record the name of every image the extractor reads."""
    loaded: list[str] = []

    def recording_load(path, **options):
        loaded.append(path.name)
        return load_image(path, **options)

    monkeypatch.setattr(features_module, "load_image", recording_load)
    return loaded


# ---- encoders ----

def test_unknown_encoder_names_the_available_ones():
    with pytest.raises(CaptionerError) as caught:
        encoder_spec("efficientnet-b7")
    assert str(caught.value) == f"unknown encoder 'efficientnet-b7'; available: {', '.join(ENCODERS)}"
    with pytest.raises(CaptionerError, match="unknown encoder 'vgg'"):
        Encoder("vgg")


@pytest.mark.parametrize(("name", "size"), [("efficientnet-lite0", 224), ("efficientnet-lite2", 260), ("resnet50", 448)])
def test_preprocess_resizes_to_a_square_of_the_encoder_input(name, size):
    pixels = preprocess(Image.new("RGB", (100, 40), (255, 0, 0)), encoder_spec(name))
    assert pixels.shape == (3, size, size)
    assert pixels.dtype == torch.float32


@pytest.mark.parametrize("size", [(500, 375), (333, 500), (101, 67)])
def test_mirrored_pixels_are_the_mirrored_photo_preprocessed(size):
    photo = Image.fromarray(np.random.default_rng(sum(size)).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    spec = encoder_spec("efficientnet-lite2")
    assert torch.equal(mirror_pixels(preprocess(photo, spec)), preprocess(ImageOps.mirror(photo), spec))


def test_lite_preprocessing_scales_pixels_to_minus_one_one():
    spec = encoder_spec(LITE0)
    assert bool((preprocess(Image.new("RGB", (30, 30), (255, 255, 255)), spec) == 1.0).all())
    assert bool((preprocess(Image.new("RGB", (30, 30), (0, 0, 0)), spec) == -1.0).all())
    red = preprocess(Image.new("RGB", (30, 30), (255, 0, 0)), spec)
    assert red[0].min() == 1.0 and red[1].max() == -1.0 and red[2].max() == -1.0


def test_torchvision_preprocessing_uses_imagenet_mean_and_std():
    white = preprocess(Image.new("RGB", (30, 30), (255, 255, 255)), encoder_spec("resnet101"))
    expected = [(1 - mean) / std for mean, std in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), strict=True)]
    torch.testing.assert_close(white[:, 0, 0], torch.tensor(expected))


def test_lite0_grid_is_7_by_7_by_1280(encoder):
    assert (encoder.spec.input_size, encoder.spec.grid_size, encoder.spec.channels) == (224, 7, 1280)
    images = [draw_shape("red", "square", 0), draw_shape("blue", "circle", 1)]
    grid = encoder.encode(torch.stack([encoder.preprocess(image) for image in images]))
    assert grid.shape == (2, 49, 1280)
    assert bool(torch.isfinite(grid).all())
    assert not torch.allclose(grid[0], grid[1])  # different pictures, different features
    assert not any(parameter.requires_grad for parameter in encoder.network.parameters())  # frozen


def test_multiscale_grid_is_the_lite2_grid_plus_the_pooled_stride_16_stage():
    multiscale, plain = Encoder("efficientnet-lite2-multiscale"), Encoder("efficientnet-lite2")
    images = [draw_shape("red", "square", 0), draw_shape("green", "circle", 1)]
    pixels = torch.stack([plain.preprocess(image) for image in images])
    stage_outputs = []
    hook = plain.network.network._blocks[14].register_forward_hook(lambda module, inputs, output: stage_outputs.append(output))
    try:
        top = plain.encode(pixels)  # (2, 81, 1280)
    finally:
        hook.remove()
    assert stage_outputs[0].shape[1:] == (120, 17, 17)
    middle = 0.2 * torch.nn.functional.adaptive_avg_pool2d(stage_outputs[0], 9).flatten(2).transpose(1, 2)  # (2, 81, 120)
    grid = multiscale.encode(pixels)
    assert grid.shape == (2, 81, multiscale.spec.channels) == (2, 81, 1400)
    torch.testing.assert_close(grid[..., :1280], top)
    torch.testing.assert_close(grid[..., 1280:], middle)


def test_encoder_weights_hash_is_the_sha256_of_the_weights_file(encoder):
    assert re.fullmatch(r"[0-9a-f]{64}", encoder.weights_sha256)
    assert encoder.weights_sha256 == hashlib.sha256(encoder.weights_path.read_bytes()).hexdigest()


def test_torchvision_encoder_without_weights_says_where_to_put_them(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty weights cache
    with pytest.raises(CaptionerError, match="resnet50"):
        Encoder("resnet50")


# ---- the feature cache ----

def test_extraction_writes_the_cache(extracted, images_dir, encoder):
    cache, cache_dir = extracted
    assert cache.folder == cache_folder(cache_dir, LITE0, NAMES)
    assert {path.name for path in cache.folder.iterdir()} == {"features.f16", "index.json", "progress.json"}
    index = json.loads((cache.folder / "index.json").read_text())
    assert index == {"encoder": LITE0, "weights_sha256": encoder.weights_sha256, "shape": [7, 49, 1280], "images": NAMES}
    assert (cache.folder / "features.f16").stat().st_size == 7 * 49 * 1280 * 2  # float16
    assert cache.complete
    assert cache.encoder_name == LITE0

    good = [name for name in NAMES if name != "broken.jpg"]
    loaded = cache.load(good)
    assert loaded.shape == (6, 49, 1280) and loaded.dtype == torch.float16
    direct = encoder.encode(torch.stack([encoder.preprocess(load_image(images_dir / name)) for name in good]))
    torch.testing.assert_close(loaded.float(), direct, atol=0.02, rtol=0.01)


def test_mirrored_extraction_caches_the_flipped_photos_apart(encoder, tmp_path):
    names = ["left_red.png", "left_blue.png"]
    for name, colour in zip(names, ("red", "blue"), strict=True):
        picture = Image.new("RGB", (120, 90), "white")
        picture.paste(Image.new("RGB", (40, 90), colour), (0, 0))  # a bar on the left: the flip differs
        picture.save(tmp_path / name)
    mirrored = extract_features(names, tmp_path, encoder_name=LITE0, cache_dir=tmp_path / "cache", mirrored=True, show_progress=False)
    assert mirrored.folder == cache_folder(tmp_path / "cache", LITE0, names, mirrored=True)
    assert mirrored.folder != cache_folder(tmp_path / "cache", LITE0, names)
    assert json.loads((mirrored.folder / "index.json").read_text())["mirrored"] is True
    photos = [load_image(tmp_path / name) for name in names]
    flipped = encoder.encode(torch.stack([encoder.preprocess(ImageOps.mirror(photo)) for photo in photos]))
    as_is = encoder.encode(torch.stack([encoder.preprocess(photo) for photo in photos]))
    torch.testing.assert_close(mirrored.load(names).float(), flipped, atol=0.02, rtol=0.01)
    assert (mirrored.load(names).float() - as_is).abs().max() > 0.5


def test_unreadable_image_is_recorded_and_skipped_not_zero_filled(extracted):
    cache, _ = extracted
    assert list(cache.failed) == ["broken.jpg"]
    assert "not an image file" in cache.failed["broken.jpg"]
    assert cache.available(NAMES) == [name for name in NAMES if name != "broken.jpg"]
    assert cache.available(["broken.jpg", "not_in_cache.jpg"]) == []
    progress = json.loads((cache.folder / "progress.json").read_text())
    assert progress["completed"] == 7 and list(progress["failed"]) == ["broken.jpg"]


def test_extraction_reports_the_skipped_images(images_dir, tmp_path, capsys):
    extract_features(NAMES[2:5], images_dir, encoder_name=LITE0, cache_dir=tmp_path, batch_size=8, show_progress=False)
    out = capsys.readouterr().out
    assert "feature extraction: 3 images" in out
    assert "1 images could not be read and were skipped: broken.jpg" in out


def test_rerun_of_a_finished_cache_encodes_nothing(extracted, images_dir, monkeypatch):
    cache, cache_dir = extracted
    before = np.array(cache.features)
    calls = count_encoded(monkeypatch)
    again = extract_features(NAMES, images_dir, encoder_name=LITE0, cache_dir=cache_dir, batch_size=2, show_progress=False)
    assert calls == []
    assert np.array_equal(np.array(again.features), before)


def copy_cache(cache: FeatureCache, cache_dir):
    shutil.copytree(cache.folder, cache_folder(cache_dir, LITE0, NAMES))


def test_resume_after_progress_was_cut_back_recomputes_only_the_rest(extracted, images_dir, tmp_path, monkeypatch):
    cache, _ = extracted
    copy_cache(cache, tmp_path)
    folder = cache_folder(tmp_path, LITE0, NAMES)
    # as if killed after the first batch: progress says 2 images, the later rows are stale
    progress = json.loads((folder / "progress.json").read_text())
    progress.update(completed=2, failed={})
    (folder / "progress.json").write_text(json.dumps(progress))
    stale = np.memmap(folder / "features.f16", dtype=np.float16, mode="r+", shape=(7, 49, 1280))
    stale[2:] = 7.0
    stale.flush()
    del stale

    calls = count_encoded(monkeypatch)
    loaded = record_loaded(monkeypatch)
    resumed = extract_features(NAMES, images_dir, encoder_name=LITE0, cache_dir=tmp_path, batch_size=2, show_progress=False)
    assert loaded == NAMES[2:]  # the first two images were not read again
    assert calls == [1, 2, 1]  # batches [green_0, (broken)], [green_1, blue_0], [blue_1]
    assert resumed.complete
    assert list(resumed.failed) == ["broken.jpg"]
    good = resumed.available(NAMES)
    assert np.array_equal(resumed.load(good).numpy(), cache.load(good).numpy())


def test_resume_after_a_crash_mid_extraction_gives_identical_features(extracted, images_dir, tmp_path, monkeypatch):
    cache, _ = extracted
    original = Encoder.encode
    calls = {"count": 0}

    def crashing_encode(self, pixels):
        calls["count"] += 1
        if calls["count"] == 3:
            raise KeyboardInterrupt  # the user pressed ctrl-c during the third batch
        return original(self, pixels)

    monkeypatch.setattr(Encoder, "encode", crashing_encode)
    with pytest.raises(KeyboardInterrupt):
        extract_features(NAMES, images_dir, encoder_name=LITE0, cache_dir=tmp_path, batch_size=2, show_progress=False)
    folder = cache_folder(tmp_path, LITE0, NAMES)
    assert json.loads((folder / "progress.json").read_text())["completed"] == 4
    partial = FeatureCache(folder)
    assert not partial.complete
    assert partial.available(NAMES) == ["red_0.jpg", "red_1.jpg", "green_0.jpg"]

    monkeypatch.setattr(Encoder, "encode", original)
    loaded = record_loaded(monkeypatch)
    resumed = extract_features(NAMES, images_dir, encoder_name=LITE0, cache_dir=tmp_path, batch_size=2, show_progress=False)
    assert loaded == NAMES[4:]
    assert resumed.complete
    assert np.array_equal(np.array(resumed.features), np.array(cache.features))


def test_a_different_image_list_gets_its_own_cache(tmp_path):
    assert cache_folder(tmp_path, LITE0, NAMES) != cache_folder(tmp_path, LITE0, NAMES[:-1])
    assert cache_folder(tmp_path, LITE0, NAMES) != cache_folder(tmp_path, "efficientnet-lite2", NAMES)
    assert cache_folder(tmp_path, LITE0, NAMES) == cache_folder(tmp_path, LITE0, list(NAMES))


def test_missing_cache_says_what_to_run(tmp_path):
    with pytest.raises(CaptionerError, match="run `captioner features` first"):
        FeatureCache(tmp_path / "nothing-here")


def test_corrupt_cache_index_is_a_captioner_error(extracted, tmp_path):
    cache, _ = extracted
    copy_cache(cache, tmp_path)
    folder = cache_folder(tmp_path, LITE0, NAMES)
    (folder / "index.json").write_text("{\"encoder\": ")
    with pytest.raises(CaptionerError, match="corrupt; delete it and rerun `captioner features`"):
        FeatureCache(folder)
