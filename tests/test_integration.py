"""The whole pipeline on a slice of the real Flickr8k with the real encoder weights, through the command line.

The data set is read from $FLICKR8K_DIR or ../shared/flickr8k; the tests skip when it is not there.
Nothing is copied into the repository: the slice lives in a temporary folder with its images symlinked.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from captioner.cli import main
from captioner.data.flickr import SPLIT_FILES, read_flickr8k
from captioner.inference import Captioner
from captioner.metrics import METRIC_NAMES

from conftest import SHARED_FLICKR8K

pytestmark = pytest.mark.integration

SLICE = {"train": 60, "dev": 20, "test": 20}
WORD = re.compile(r"[a-z0-9][a-z0-9']*")  # a normalised word, never a <special> token


def flickr8k() -> Path:
    if not SHARED_FLICKR8K.is_dir():
        pytest.skip(f"Flickr8k not found at {SHARED_FLICKR8K}; set FLICKR8K_DIR to run the integration tests")
    return SHARED_FLICKR8K


def split_names(data_dir: Path) -> dict[str, list[str]]:
    return {split: (data_dir / name).read_text().split() for split, name in SPLIT_FILES.items()}


@pytest.fixture(scope="module")
def flickr_slice(tmp_path_factory) -> Path:
    """The first images of each official split: their token lines, split files and symlinked images."""
    source = flickr8k()
    folder = tmp_path_factory.mktemp("flickr8k_slice")
    names = {split: images[: SLICE[split]] for split, images in split_names(source).items()}
    chosen = {name for images in names.values() for name in images}
    lines = [line for line in (source / "Flickr8k.token.txt").read_text().splitlines() if line.split("#", 1)[0] in chosen]
    (folder / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    for split, file_name in SPLIT_FILES.items():
        (folder / file_name).write_text("\n".join(names[split]) + "\n")
    (folder / "images").mkdir()
    for name in sorted(chosen):
        (folder / "images" / name).symlink_to(source / "images" / name)
    return folder


@pytest.fixture(scope="module")
def pipeline(flickr_slice, tmp_path_factory):
    """prepare -> features (efficientnet-lite0) -> train (small model, few epochs) -> evaluate (beam 3), by the CLI."""
    work = tmp_path_factory.mktemp("integration")
    run_dir = work / "run"
    settings = [
        f"data.prepared_dir={work / 'prepared'}", "data.min_word_count=3", "data.max_caption_length=20",
        "encoder.name=efficientnet-lite0", f"encoder.cache_dir={work / 'features'}", "encoder.batch_size=25",
        "model.embed_dim=64", "model.feature_dim=64", "model.attention_dim=64", "model.hidden_dim=128", "model.dropout=0.2",
        "train.epochs=5", "train.images_per_batch=10", "train.learning_rate=0.004", "train.warmup_steps=6",
        "decode.max_length=16",
    ]
    overrides = [argument for setting in settings for argument in ("--set", setting)]
    steps = {
        "prepare": ["prepare", "--data", str(flickr_slice), *overrides],
        "features": ["features", *overrides],
        "train": ["train", "--run", str(run_dir), *overrides],
        "evaluate": ["evaluate", str(run_dir), "--split", "test", "--beam", "3"],
    }
    outputs = {}
    for name, command in steps.items():
        code, out, err = run_cli(command)
        assert code == 0, f"captioner {name} failed: {err}"
        outputs[name] = out
    return {"work": work, "run": run_dir, "outputs": outputs, "overrides": overrides}


def run_cli(command: list[str]) -> tuple[int, str, str]:
    """`captioner COMMAND` in this process; returns the exit code, stdout and stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(command)
    return code, stdout.getvalue(), stderr.getvalue()


def test_prepare_reads_the_slice(pipeline):
    summary = json.loads(pipeline["outputs"]["prepare"])
    assert summary["images"] == SLICE
    assert summary["captions"] == {split: 5 * count for split, count in SLICE.items()}
    assert summary["missing_images"] == 0
    assert summary["skipped_caption_lines"] == 0
    assert 50 < summary["vocabulary_size"] < 1000


def test_features_cover_every_image(pipeline):
    folders = list((pipeline["work"] / "features").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("efficientnet-lite0-")
    index = json.loads((folders[0] / "index.json").read_text())
    progress = json.loads((folders[0] / "progress.json").read_text())
    assert index["shape"] == [100, 49, 1280]
    assert progress == {"completed": 100, "failed": {}}


def test_training_wrote_the_run(pipeline):
    run = pipeline["run"]
    for name in ("config.json", "vocab.json", "model.safetensors", "history.csv", "curves.png",
                 "trainer_state.json", "trainer_state.safetensors"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3, 4, 5]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert float(rows[-1]["dev_loss"]) < float(rows[0]["dev_loss"])


def test_evaluation_scores_and_report(pipeline):
    out = pipeline["run"] / "eval-test"
    for name in ("metrics.json", "captions.json", "report.md", "samples.png", "attention.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 20 and metrics["beam_size"] == 3
    scores = metrics["scores"]
    for name in METRIC_NAMES:
        assert isinstance(scores[name], float), name
        assert scores[name] >= 0.0
        if name != "CIDEr":
            assert scores[name] <= 1.0, name
    assert scores["BLEU-1"] > 0.3  # even a few epochs on 60 images learn "a man in a ..."
    assert "Show, Attend and Tell, soft (Xu et al. 2015)" in (out / "report.md").read_text()
    captions = json.loads((out / "captions.json").read_text())
    assert len(captions) == 20
    vocabulary = set(json.loads((pipeline["run"] / "vocab.json").read_text())["words"][4:])
    for text in captions.values():
        assert text.split() and all(WORD.fullmatch(word) and word in vocabulary for word in text.split()), text


def test_caption_a_real_photo_through_the_api_and_the_cli(pipeline, flickr_slice, capsys):
    photo = sorted((flickr_slice / "images").iterdir())[0]
    captioner = Captioner.load(pipeline["run"])
    [caption] = captioner.caption(photo, beam_size=3)
    vocabulary = set(captioner.vocabulary.words[4:])
    assert caption.tokens, "empty caption"
    assert all(WORD.fullmatch(word) and word in vocabulary for word in caption.tokens), caption.text
    assert caption.attention.shape[1:] == (7, 7)

    code = main(["caption", str(pipeline["run"]), str(photo), "--beam", "3"])
    out = capsys.readouterr().out
    assert code == 0
    assert out == f"{photo}\t{caption.text}\n"


def test_token_file_csv_and_karpathy_layouts_agree_on_the_real_data(tmp_path):
    source = flickr8k()
    token_layout = read_flickr8k(source)
    sizes = {split: len(images) for split, images in token_layout.splits.items()}
    assert sizes == {"train": 6000, "dev": 1000, "test": 1000}
    caption_counts = {split: sum(map(len, images.values())) for split, images in token_layout.splits.items()}
    assert caption_counts == {"train": 30000, "dev": 5000, "test": 5000}

    csv_folder = tmp_path / "csv"
    csv_folder.mkdir()
    shutil.copy(source / "captions.txt", csv_folder / "captions.txt")
    for file_name in SPLIT_FILES.values():
        shutil.copy(source / file_name, csv_folder / file_name)
    (csv_folder / "images").symlink_to(source / "images")
    csv_layout = read_flickr8k(csv_folder)
    assert csv_layout.splits == token_layout.splits

    # Karpathy's json for the same split, written from the raw token file
    split_of = {name: {"train": "train", "dev": "val", "test": "test"}[split]
                for split, names in split_names(source).items() for name in names}
    sentences: dict[str, list[dict]] = {}
    for line in (source / "Flickr8k.token.txt").read_text().splitlines():
        key, _, raw = line.partition("\t")
        name = key.split("#", 1)[0]
        if name in split_of:
            sentences.setdefault(name, []).append({"raw": raw, "tokens": raw.lower().split()})
    karpathy_folder = tmp_path / "karpathy"
    karpathy_folder.mkdir()
    (karpathy_folder / "dataset_flickr8k.json").write_text(json.dumps({"dataset": "flickr8k", "images": [
        {"filename": name, "split": split_of[name], "sentences": found} for name, found in sentences.items()]}))
    (karpathy_folder / "images").symlink_to(source / "images")
    assert read_flickr8k(karpathy_folder).splits == token_layout.splits


def test_a_transformer_then_self_critical_training_on_the_real_slice(pipeline):
    """The second decoder type and the self-critical phase (CIDEr-D + BLEU-4 + METEOR-like reward), by the CLI, on the
    slice's cached features."""
    run_dir = pipeline["work"] / "transformer"
    settings = ["model.type=transformer", "model.embed_dim=64", "model.layers=1", "model.encoder_layers=1", "model.heads=4",
                "model.ff_dim=128", "train.epochs=3", "train.scst_epochs=1", "train.scst_samples=3", "train.scst_learning_rate=0.0001",
                "train.scst_bleu_weight=1.0", "train.scst_meteor_weight=1.0"]
    code, _, err = run_cli(["train", "--run", str(run_dir), *pipeline["overrides"], *(a for s in settings for a in ("--set", s))])
    assert code == 0, err
    rows = list(csv.DictReader((run_dir / "history.csv").open()))
    assert [row["phase"] for row in rows] == ["xe", "xe", "xe", "scst"]
    assert float(rows[-1]["train_reward"]) > 0.0  # mean reward of the sampled captions
    code, out, err = run_cli(["evaluate", str(run_dir), "--split", "test", "--beam", "2"])
    assert code == 0, err
    assert json.loads(out)["scores"]["CIDEr"] > 0.0


def test_real_photos_indexed_searched_and_their_alt_text_written(pipeline, flickr_slice, tmp_path):
    """The library and the alt-text commands on real Flickr8k photos with the real encoder: index (worker processes),
    search, captions embedded into the JPEGs (pixels unchanged, read back by Pillow), and alt text added to a page."""
    import numpy as np
    from PIL import Image

    from captioner.library.export import as_sentence
    from captioner.library.store import Library

    photos = tmp_path / "photos"
    photos.mkdir()
    for source in sorted((flickr_slice / "images").iterdir())[:6]:  # copies: --embed writes into them
        shutil.copyfile(source, photos / source.name)
    pixels = {path.name: np.asarray(Image.open(path)) for path in photos.iterdir()}
    code, out, err = run_cli(["index", str(photos), "--run", str(pipeline["run"]), "--workers", "1", "--quiet"])
    assert code == 0 and "6 captioned" in out, err
    with Library.open(photos / ".captioner" / "library.sqlite") as library:
        rows = {photo.path: photo for photo in library.photos()}
        assert all(photo.caption and photo.error is None for photo in rows.values())
        word = next(iter(rows.values())).caption.split()[1]
        assert library.search(word), f"nothing found for {word!r}"
    code, out, err = run_cli(["write-metadata", str(photos), "--embed", "--include-unreviewed"])
    assert code == 0 and "6 written" in err, err
    for name, photo in rows.items():
        with Image.open(photos / name) as image:
            assert image.getexif()[0x010E].encode("latin-1").decode("utf-8") == as_sentence(photo.caption)  # EXIF ImageDescription
            assert np.array_equal(np.asarray(image), pixels[name])
    code, out, _ = run_cli(["index", str(photos), "--run", str(pipeline["run"]), "--quiet"])
    assert code == 0 and "6 unchanged" in out  # embedding is not a change to recaption

    site = tmp_path / "site"
    (site / "img").mkdir(parents=True)
    names = sorted(rows)[:2]
    for name in names:
        shutil.copyfile(photos / name, site / "img" / name)
    page = site / "index.html"
    original = "<!doctype html>\n<title>t</title>\n" + "".join(f'<p><img src="img/{name}" width=10></p>\n' for name in names)
    page.write_text(original)
    code, out, err = run_cli(["alt-text", str(site), "--run", str(pipeline["run"]), "--write", "--include-unreviewed",
                              "--report", str(tmp_path / "report.html")])
    assert code == 0, err
    text = page.read_text()
    assert text.count(" alt=\"") == 2 and re.sub(r' alt="[^"]*"', "", text) == original
    assert (tmp_path / "report.csv").read_text().count("\n") == 3  # a header and the two images
