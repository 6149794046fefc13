"""Training, run directories and resuming; loading broken runs; metrics and the evaluation report."""
from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from captioner import train as train_module
from captioner.checkpoint import load_run, load_tensors, read_json, save_tensors, write_run_info
from captioner.cli import main
from captioner.config import TrainConfig, config_from_dict
from captioner.data.text import SPECIAL_TOKENS, Vocabulary
from captioner.errors import CaptionerError
from captioner.evaluate import evaluate_run
from captioner.inference import Captioner
from captioner.metrics import METRIC_NAMES, fast_scores, score_captions, spice_unavailable_reason
from captioner.pipeline import extract_prepared_features
from captioner.train import HISTORY_COLUMNS, CaptionBatches, train

RUN_FILES = ("config.json", "vocab.json", "model.safetensors")
SOURCE = Path(__file__).resolve().parents[1] / "src" / "captioner"


def small_config(tiny_run: Path, run_dir: Path, **train_settings):
    """The tiny run's config (its prepared data and features) with a short schedule, into `run_dir`."""
    config = config_from_dict(load_run(tiny_run).config.to_dict())
    config.run_dir = str(run_dir)
    config.train.epochs = 3
    config.train.max_train_images = 8
    config.train.max_dev_images = 3
    for key, value in train_settings.items():
        setattr(config.train, key, value)
    return config


def copy_run(tiny_run: Path, destination: Path) -> Path:
    destination.mkdir(parents=True)
    for name in RUN_FILES:
        shutil.copy(tiny_run / name, destination / name)
    return destination


def assert_same_run_state(first: Path, second: Path) -> None:
    for name in ("trainer_state.safetensors", "model.safetensors"):
        expected, actual = load_tensors(first / name), load_tensors(second / name)
        assert expected.keys() == actual.keys()
        for key in expected:
            assert torch.equal(expected[key], actual[key]), f"{name}: {key} differs"
    rows = [list(csv.DictReader((folder / "history.csv").open())) for folder in (first, second)]
    for row in (*rows[0], *rows[1]):
        row.pop("epoch_seconds")
    assert rows[0] == rows[1]


# ---- the run directory ----

def test_run_directory_holds_every_file(tiny_run):
    names = {path.name for path in tiny_run.iterdir()}
    expected = {"config.json", "vocab.json", "model.safetensors", "history.csv", "curves.png",
                "trainer_state.json", "trainer_state.safetensors"}
    assert expected <= names
    assert not [name for name in names if name.endswith(".tmp")]  # atomic writes left nothing behind
    info = json.loads((tiny_run / "config.json").read_text())
    assert info["encoder"]["name"] == "efficientnet-lite0"
    assert re.fullmatch(r"[0-9a-f]{64}", info["encoder"]["weights_sha256"])
    assert info["encoder"]["channels"] == 1280
    assert info["vocabulary_size"] == len(json.loads((tiny_run / "vocab.json").read_text())["words"])
    assert info["config"]["model"]["hidden_dim"] == 64
    assert info["code_version"]


def test_history_and_curves(tiny_run):
    rows = list(csv.DictReader((tiny_run / "history.csv").open()))
    assert len(rows) == 40
    assert tuple(rows[0]) == HISTORY_COLUMNS
    assert [int(row["epoch"]) for row in rows] == list(range(1, 41))
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"]) / 2  # it learned
    state = json.loads((tiny_run / "trainer_state.json").read_text())
    assert state["epoch"] == 40 and state["step"] == 40 * 3
    assert 1 <= state["best_epoch"] <= 40
    assert state["best_dev_CIDEr"] == max(float(row["dev_CIDEr"]) for row in rows)
    with Image.open(tiny_run / "curves.png") as curves:
        assert curves.format == "PNG" and curves.width > 200


def test_no_pickle_in_the_run_directory(tiny_run):
    for path in tiny_run.iterdir():
        head = path.read_bytes()[:4]
        assert not head.startswith(b"\x80") and not head.startswith(b"PK"), f"{path.name} looks like a pickle or torch.save zip"
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as handle:
                assert list(handle.keys())
        else:
            assert path.suffix in (".csv", ".png"), f"unexpected file {path.name}"


def test_no_pickle_in_the_code():
    for path in SOURCE.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(pickle|dill|cloudpickle)\b", text, re.MULTILINE), path
        assert "torch.save(" not in text, path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path}: {call}"


# ---- resuming ----

@pytest.fixture
def no_curves(monkeypatch):
    """Skip drawing curves.png after every epoch: it is slow and not what these tests are about."""
    monkeypatch.setattr("captioner.viz.plot_training_curves", lambda history, path: None)


def kill_training_at_validation(config, monkeypatch, call: int) -> None:
    """Train `config` until its `call`-th validation, where the process is 'killed' (that epoch trained, not saved)."""
    original_validate = train_module.validate
    calls = {"count": 0}

    def killed(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == call:
            raise KeyboardInterrupt
        return original_validate(*args, **kwargs)

    monkeypatch.setattr(train_module, "validate", killed)
    with pytest.raises(KeyboardInterrupt):
        train(config, show_progress=False)
    monkeypatch.setattr(train_module, "validate", original_validate)


def test_resume_after_a_kill_gives_identical_weights(tiny_run, tmp_path, monkeypatch, capsys, no_curves):
    straight = small_config(tiny_run, tmp_path / "straight")
    train(straight, show_progress=False)

    killed = small_config(tiny_run, tmp_path / "killed")
    kill_training_at_validation(killed, monkeypatch, call=2)
    assert json.loads((tmp_path / "killed" / "trainer_state.json").read_text())["epoch"] == 1
    capsys.readouterr()

    summary = train(killed, show_progress=False)
    assert f"resuming {tmp_path / 'killed'} after epoch 1" in capsys.readouterr().out
    assert summary["epochs_done"] == 3
    assert_same_run_state(tmp_path / "straight", tmp_path / "killed")


def test_resume_after_a_kill_during_self_critical_training_gives_identical_weights(tiny_run, tmp_path, monkeypatch, no_curves):
    settings = dict(epochs=1, scst_epochs=2, scst_samples=3, scst_learning_rate=1e-3, scst_bleu_weight=1.0,
                    scst_meteor_weight=1.0)
    train(small_config(tiny_run, tmp_path / "straight", **settings), show_progress=False)
    killed = small_config(tiny_run, tmp_path / "killed", **settings)
    kill_training_at_validation(killed, monkeypatch, call=3)  # in the second SCST epoch
    assert json.loads((tmp_path / "killed" / "trainer_state.json").read_text())["epoch"] == 2
    assert train(killed, show_progress=False)["epochs_done"] == 3
    assert_same_run_state(tmp_path / "straight", tmp_path / "killed")


def test_training_more_epochs_later_equals_training_them_at_once(tiny_run, tmp_path, no_curves):
    # a constant schedule: with cosine decay the schedule itself depends on the number of epochs
    straight = small_config(tiny_run, tmp_path / "straight", lr_schedule="constant")
    train(straight, show_progress=False)
    stepwise = small_config(tiny_run, tmp_path / "stepwise", lr_schedule="constant", epochs=1)
    assert train(stepwise, show_progress=False)["epochs_done"] == 1
    stepwise.train.epochs = 3
    assert train(stepwise, show_progress=False)["epochs_done"] == 3
    assert_same_run_state(tmp_path / "straight", tmp_path / "stepwise")
    assert train(stepwise, show_progress=False)["epochs_done"] == 3  # nothing left to do


def test_skipping_early_dev_evaluations_trains_the_same_weights(tiny_run, tmp_path, monkeypatch, capsys):
    # the dev evaluation neither draws random numbers nor changes the weights, so while the best cross-entropy epoch is
    # one still evaluated (here, as in the presets, the last), skipping the others changes nothing but the history
    schedule = {"epochs": 4, "scst_epochs": 2, "scst_learning_rate": 1e-3}
    train(small_config(tiny_run, tmp_path / "every", **schedule), show_progress=False)
    calls = {"count": 0}
    original_validate = train_module.validate

    def counted(*args, **kwargs):
        calls["count"] += 1
        return original_validate(*args, **kwargs)

    monkeypatch.setattr(train_module, "validate", counted)
    capsys.readouterr()
    train(small_config(tiny_run, tmp_path / "skipping", dev_evaluation_from_epoch=6, **schedule), show_progress=False)
    assert calls["count"] == 2  # the last cross-entropy epoch (4), where SCST starts from, and the last epoch (6)
    assert capsys.readouterr().out.count("dev not evaluated") == 4  # epochs 1-3 and 5 say so
    every, skipped = (load_tensors(tmp_path / folder / "trainer_state.safetensors") for folder in ("every", "skipping"))
    assert every.keys() == skipped.keys() and all(torch.equal(every[key], skipped[key]) for key in every)
    rows = {folder: list(csv.DictReader((tmp_path / folder / "history.csv").open())) for folder in ("every", "skipping")}
    assert [row["dev_CIDEr"] != "" for row in rows["skipping"]] == [False, False, False, True, False, True]
    for epoch in (4, 6):
        assert rows["skipping"][epoch - 1]["dev_CIDEr"] == rows["every"][epoch - 1]["dev_CIDEr"]
    # self-critical epochs are scored by greedy captions alone: no teacher-forced dev loss
    assert [row["dev_loss"] != "" for row in rows["every"]] == [True] * 4 + [False] * 2
    assert (tmp_path / "skipping" / "curves.png").is_file()


def test_resuming_with_a_different_model_is_refused(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path / "run")
    shutil.copy(tiny_run / "trainer_state.json", run_dir)
    shutil.copy(tiny_run / "trainer_state.safetensors", run_dir)
    config = small_config(tiny_run, run_dir)
    config.model.hidden_dim = 32
    with pytest.raises(CaptionerError, match=r"holds a run with model.hidden_dim=64, not 32"):
        train(config, show_progress=False)


@pytest.mark.parametrize("setting", ["scst_bleu_weight", "scst_meteor_weight"])
def test_a_negative_reward_weight_is_refused(tiny_run, tmp_path, setting):
    config = small_config(tiny_run, tmp_path / "run", scst_epochs=1, **{setting: -1.0})
    with pytest.raises(CaptionerError, match=f"train.{setting} must be >= 0"):
        train(config, show_progress=False)


def test_training_without_prepared_data_says_what_to_run(tiny_run, tmp_path):
    config = small_config(tiny_run, tmp_path / "run")
    config.data.prepared_dir = str(tmp_path / "not-prepared")
    with pytest.raises(CaptionerError, match="run `captioner prepare` first"):
        train(config, show_progress=False)


def test_training_without_features_says_what_to_run(tiny_run, tmp_path):
    config = small_config(tiny_run, tmp_path / "run")
    config.encoder.cache_dir = str(tmp_path / "no-features")
    with pytest.raises(CaptionerError, match="run `captioner features` first"):
        train(config, show_progress=False)


# ---- flip augmentation ----

def test_flip_augmentation_shows_each_image_once_per_epoch_as_is_or_mirrored():
    vocabulary = Vocabulary([*SPECIAL_TOKENS, "a", "dog", "on", "the", "left", "right"])
    names = [f"image{number:02d}.jpg" for number in range(40)]
    captions = {name: [["a", "dog", "on", "the", "left"], ["a", "dog"]] for name in names}
    grid, mirrored_grid = torch.zeros(40, 2, 3, dtype=torch.float16), torch.ones(40, 2, 3, dtype=torch.float16)
    data = CaptionBatches(names, grid, captions, vocabulary, 30, mirrored_grid=mirrored_grid)
    seen = []
    for batch_grid, batch_captions, _lengths, image_index, rows in data.batches(8, shuffle_seed=3):
        seen += rows
        for position, row in enumerate(rows):
            assert bool(batch_grid[position].eq(1).all()) == (row >= 40)  # the mirrored rows' features
        for caption, image in zip(batch_captions.tolist(), image_index.tolist(), strict=True):
            words = vocabulary.decode(caption)
            if len(words) == 5:
                assert words[-1] == ("right" if rows[image] >= 40 else "left")
    assert sorted(row % 40 for row in seen) == list(range(40))
    assert 8 <= sum(row >= 40 for row in seen) <= 32
    mirrored_row = next(row for row in seen if row >= 40)
    assert data.keys[mirrored_row] == f"{names[mirrored_row - 40]} (mirrored)"
    reward = data.reward(TrainConfig())  # CIDEr-D alone
    right, left = (vocabulary.encode(f"a dog on the {side}".split())[1:-1] for side in ("right", "left"))
    key = data.keys[mirrored_row]
    assert reward.scores([key], [right]) > reward.scores([key], [left])
    assert all(row < 40 for *_, rows in data.batches(8) for row in rows)  # validation never mirrors


def test_training_with_flip_augmentation_uses_the_mirrored_features(tiny_run, tmp_path, no_curves):
    config = small_config(tiny_run, tmp_path / "run", flip_augmentation=True, epochs=2, scst_epochs=1)
    config.encoder.cache_dir = str(tmp_path / "features")
    shutil.copytree(load_run(tiny_run).config.encoder.cache_dir, config.encoder.cache_dir)
    with pytest.raises(CaptionerError, match="run `captioner features` first"):
        train(config, show_progress=False)
    extract_prepared_features(config, show_progress=False)  # adds the mirrored training images only
    assert len(list(Path(config.encoder.cache_dir).iterdir())) == 2
    summary = train(config, show_progress=False)
    assert summary["epochs_done"] == 3


# ---- loading broken runs ----

def drop(path: Path) -> None:
    path.unlink()


def write(content: bytes):
    return lambda path: path.write_bytes(content)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def fewer_words(path: Path) -> None:
    words = json.loads(path.read_text())["words"]
    path.write_text(json.dumps({"words": words[:-1]}))


def other_shapes(path: Path) -> None:
    save_tensors(path, {name: torch.zeros(2, 2) for name in load_tensors(path)})


BROKEN = {
    "config-missing": ("config.json", drop, "missing file"),
    "config-garbage": ("config.json", write(b"{\"config\": {"), "corrupt JSON file"),
    "config-binary": ("config.json", write(b"\x89PNG\r\n\x1a\n\x00\x00"), "corrupt JSON file"),
    "config-wrong-type": ("config.json", write(b"{\"config\": {\"model\": {\"hidden_dim\": \"big\"}}, \"encoder\": {}}"),
                          "corrupt run config"),
    "config-no-encoder": ("config.json", write(b"{\"config\": {}}"), "corrupt run config"),
    "vocab-missing": ("vocab.json", drop, "vocabulary file missing"),
    "vocab-garbage": ("vocab.json", write(b"not json at all"), "vocabulary file is corrupt"),
    "vocab-size": ("vocab.json", fewer_words, "but config.json says"),
    "weights-missing": ("model.safetensors", drop, "missing file"),
    "weights-truncated": ("model.safetensors", truncate, "corrupt file"),
    "weights-garbage": ("model.safetensors", write(b"\x00garbage" * 100), "corrupt file"),
    "weights-empty": ("model.safetensors", write(b""), "corrupt file"),
    "weights-other-model": ("model.safetensors", other_shapes, "does not match the run's config"),
}


@pytest.fixture(params=sorted(BROKEN))
def broken_run(request, tiny_run, tmp_path):
    file_name, damage, reason = BROKEN[request.param]
    run_dir = copy_run(tiny_run, tmp_path / "run")
    damage(run_dir / file_name)
    return run_dir, file_name, reason


def test_broken_run_is_one_line_captioner_error(broken_run):
    run_dir, file_name, reason = broken_run
    for load in (load_run, Captioner.load):
        with pytest.raises(CaptionerError) as caught:
            load(run_dir)
        message = str(caught.value)
        assert reason in message
        assert file_name in message
        assert "\n" not in message


def test_broken_run_on_the_command_line_exits_2(broken_run, tmp_path, capsys):
    run_dir, file_name, reason = broken_run
    for command in (["caption", str(run_dir), str(tmp_path / "photo.jpg")], ["evaluate", str(run_dir)]):
        assert main(command) == 2
        captured = capsys.readouterr()
        assert captured.err.startswith("error: ")
        assert reason in captured.err and file_name in captured.err
        assert captured.err.count("\n") == 1
        assert "Traceback" not in captured.err


def test_run_folder_that_does_not_exist(tmp_path, capsys):
    with pytest.raises(CaptionerError, match="run folder not found"):
        load_run(tmp_path / "nope")
    assert main(["caption", str(tmp_path / "nope"), str(tmp_path / "a.jpg")]) == 2
    assert capsys.readouterr().err.startswith("error: run folder not found")


def test_save_load_round_trip_gives_identical_captions(tiny_run, tiny_captioner, tiny_flickr, tmp_path):
    run = load_run(tiny_run)
    copy = tmp_path / "copy"
    copy.mkdir()
    write_run_info(copy, run.config, encoder_sha256=run.info["encoder"]["weights_sha256"], encoder_channels=1280,
                   vocabulary=run.vocabulary)
    save_tensors(copy / "model.safetensors", run.decoder.state_dict())
    reloaded = Captioner.load(copy)
    images = [tiny_flickr / "images" / name for name in ("red_square_0.jpg", "blue_circle_3.jpg", "green_square_2.jpg")]
    before = tiny_captioner.caption(images, beam_size=3, n_best=2)
    after = reloaded.caption(images, beam_size=3, n_best=2)
    for one, other in zip(before, after, strict=True):
        assert one.text == other.text
        assert one.log_probability == other.log_probability
        assert [item.text for item in one.alternatives] == [item.text for item in other.alternatives]


def test_a_run_records_its_commit_and_package_versions_and_keeps_them_when_resumed(tiny_run, tmp_path, monkeypatch):
    import subprocess

    import captioner.checkpoint
    from captioner.provenance import provenance

    info = load_run(tiny_run).info
    recorded = info["provenance"]
    assert recorded["torch_build"] == torch.__version__ and torch.__version__.startswith(recorded["packages"]["torch"])
    assert recorded["packages"]["efficientnet-lite-pytorch"] == "0.1.0"
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    if head.returncode == 0:  # a checkout (CI clones one); an sdist has no commit to record
        assert recorded["git_commit"] == head.stdout.strip() and isinstance(recorded["git_dirty"], bool)
    run = load_run(tiny_run)
    copy = tmp_path / "copy"
    copy.mkdir()

    def write() -> None:
        write_run_info(copy, run.config, encoder_sha256=info["encoder"]["weights_sha256"], encoder_channels=1280,
                       vocabulary=run.vocabulary)

    write()
    write()  # resumed with the same code: nothing to add
    assert read_json(copy / "config.json")["provenance"] == provenance() and "resumed_with" not in read_json(copy / "config.json")
    later = {**provenance(), "git_commit": "0" * 40}
    monkeypatch.setattr(captioner.checkpoint, "provenance", lambda: later)
    write()
    written = read_json(copy / "config.json")
    assert written["provenance"] == provenance() and written["resumed_with"] == [later]


def test_resume_weights_can_be_loaded_as_a_run(tiny_run):
    last = load_run(tiny_run, weights="trainer_state.safetensors")
    best = load_run(tiny_run)
    assert last.decoder.state_dict().keys() == best.decoder.state_dict().keys()


# ---- metrics ----

REFERENCES = {
    "dog.jpg": ["a brown dog runs across the green grass", "a dog is running on the grass", "a brown dog running outside"],
    "kids.jpg": ["two children play in the sand at the beach", "kids playing on a sandy beach", "two kids at the beach"],
}


@pytest.fixture(scope="module")
def perfect_and_worse():
    """Scores of the first reference as the caption, and of unrelated captions (METEOR's Java takes seconds to start)."""
    perfect = score_captions(REFERENCES, {name: references[0] for name, references in REFERENCES.items()})
    worse = score_captions(REFERENCES, {"dog.jpg": "a cat sleeps on a red sofa", "kids.jpg": "a man rides a bike in the city"})
    return perfect, worse


def test_score_captions_rewards_the_right_caption(perfect_and_worse):
    perfect, worse = perfect_and_worse
    assert set(perfect) == {*METRIC_NAMES, "SPICE"}
    for order in range(1, 5):
        assert perfect[f"BLEU-{order}"] == pytest.approx(1.0, abs=1e-6)
        assert worse[f"BLEU-{order}"] < 0.5
    assert perfect["ROUGE-L"] == pytest.approx(1.0, abs=1e-6)
    for name in ("METEOR", "ROUGE-L", "CIDEr"):
        assert perfect[name] > worse[name], name
    assert 0.5 < perfect["METEOR"] <= 1.0  # METEOR ran (Java)
    for name in METRIC_NAMES:
        assert isinstance(worse[name], float) and worse[name] >= 0.0


def test_spice_is_none_with_a_reason_when_it_cannot_run(perfect_and_worse, monkeypatch):
    perfect, _ = perfect_and_worse
    reason = spice_unavailable_reason()
    if reason is not None:  # on this machine: no CoreNLP jars, no internet
        assert "Stanford CoreNLP" in reason
        assert perfect["SPICE"] is None
    else:
        assert isinstance(perfect["SPICE"], float)
    monkeypatch.setattr("captioner.metrics.shutil.which", lambda name: None)
    assert spice_unavailable_reason() == "java not found"


def test_score_captions_needs_the_same_images():
    with pytest.raises(ValueError, match="same images"):
        score_captions({"a": ["a dog"]}, {"b": "a dog"})


def test_fast_scores_without_java():
    scores = fast_scores({name: refs for name, refs in REFERENCES.items()}, {name: refs[0] for name, refs in REFERENCES.items()})
    assert set(scores) == {"BLEU-4", "CIDEr"}
    assert scores["BLEU-4"] == pytest.approx(1.0, abs=1e-6)


# ---- evaluation ----

def test_evaluate_run_writes_the_report(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path / "run")
    metrics = evaluate_run(run_dir, split="test", beam_size=3)
    out = run_dir / "eval-test"
    assert {"metrics.json", "captions.json", "report.md", "samples.png", "attention.png"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert metrics["images"] == 6 and metrics["beam_size"] == 3 and metrics["references_per_image"] == 3.0
    scores = metrics["scores"]
    for name in METRIC_NAMES:
        assert scores[name] >= 0.0
        if name != "CIDEr":
            assert scores[name] <= 1.0
    # the tiny model names the colour and the shape of the held-out pictures
    assert scores["BLEU-1"] > 0.6
    assert scores["BLEU-4"] > 0.5
    assert scores["CIDEr"] > 1.0
    captions = json.loads((out / "captions.json").read_text())
    assert len(captions) == 6 and all(text.strip() for text in captions.values())

    report = (out / "report.md").read_text()
    assert "| system | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | METEOR | ROUGE-L | CIDEr | SPICE |" in report
    assert "| Show, Attend and Tell, soft (Xu et al. 2015) | 67.0 | 44.8 | 29.9 | 19.5 | 18.9 | n/a | n/a | n/a |" in report
    assert "| Show, Attend and Tell, hard (Xu et al. 2015) | 67.0 | 45.7 | 31.4 | 21.3 | 20.3 |" in report
    assert f"| **captioner `run`** | {100 * scores['BLEU-1']:.1f} |" in report
    if scores["SPICE"] is None:
        assert f"SPICE: unavailable ({metrics['spice_unavailable']})" in report
    for picture in ("samples.png", "attention.png"):
        with Image.open(out / picture) as image:
            assert image.format == "PNG" and image.width > 100
    # the run remembers its latest score per split
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["scores"] == json.loads(json.dumps(scores))


def test_evaluate_unknown_split_is_named(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path / "run")
    with pytest.raises(CaptionerError, match="unknown split 'validation'; the prepared data has train, dev, test"):
        evaluate_run(run_dir, split="validation", pictures=False)


def test_ensemble_evaluation_is_reported_apart_from_the_run(tiny_run, tmp_path):
    run_dir, other = copy_run(tiny_run, tmp_path / "run"), copy_run(tiny_run, tmp_path / "other")
    single = evaluate_run(run_dir, split="test", beam_size=3, pictures=False)
    both = evaluate_run(run_dir, split="test", beam_size=3, pictures=False, ensemble=[str(other)])
    assert both["ensemble"] == [str(other)] and single["ensemble"] == []
    assert both["scores"] == single["scores"]  # a model voting with its copy decodes as it does alone
    assert "| **captioner `run + other`** |" in (run_dir / "eval-test-ensemble" / "report.md").read_text()
    assert json.loads((run_dir / "eval-test-ensemble" / "metrics.json").read_text())["ensemble"] == [str(other)]
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["scores"] == json.loads(json.dumps(single["scores"]))


def test_flip_ensemble_evaluation_encodes_the_mirrored_photos_once_and_records_the_setting(tiny_run, tmp_path, capsys):
    run_dir = copy_run(tiny_run, tmp_path / "run")
    flipped = evaluate_run(run_dir, split="test", beam_size=3, pictures=False, flip_ensemble=True)
    assert "feature extraction (mirrored): 6 images" in capsys.readouterr().out
    assert flipped["flip_ensemble"] is True and flipped["images"] == 6
    assert flipped["scores"]["BLEU-1"] > 0.6  # the tiny model still names the colour and shape of mirrored shapes
    assert "each photo decoded together with its mirror image" in (run_dir / "eval-test" / "report.md").read_text()
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["flip_ensemble"] is True
    again = evaluate_run(run_dir, split="test", beam_size=3, pictures=False, flip_ensemble=True)
    assert "feature extraction" not in capsys.readouterr().out  # read from their cache
    assert again["scores"] == flipped["scores"]
    plain = evaluate_run(run_dir, split="test", beam_size=3, pictures=False)  # the run's own setting: no flips
    assert plain["flip_ensemble"] is False
    assert "mirror image" not in (run_dir / "eval-test" / "report.md").read_text()


def test_ensemble_of_runs_with_different_vocabularies_is_refused(tiny_run, tmp_path):
    other = copy_run(tiny_run, tmp_path / "other")
    vocabulary = json.loads((other / "vocab.json").read_text())
    vocabulary["words"][4], vocabulary["words"][5] = vocabulary["words"][5], vocabulary["words"][4]
    (other / "vocab.json").write_text(json.dumps(vocabulary))
    with pytest.raises(CaptionerError, match=f"cannot ensemble {other} with {tiny_run}: their vocabularies differ"):
        Captioner.load(tiny_run, ensemble=[other])
    assert main(["caption", str(tiny_run), str(tmp_path), "--ensemble", str(other)]) == 2


# ---- the Transformer decoder, trained ----

def test_a_transformer_run_trains_and_captions_held_out_pictures(tiny_run, tmp_path, no_curves):
    config = config_from_dict(load_run(tiny_run).config.to_dict())
    config.run_dir = str(tmp_path / "transformer")
    config.model.type, config.model.embed_dim, config.model.ff_dim, config.model.heads = "transformer", 32, 64, 4
    config.model.layers, config.model.encoder_layers = 2, 1
    config.train.epochs, config.train.learning_rate, config.train.label_smoothing = 25, 0.002, 0.1
    train(config, show_progress=False)
    metrics = evaluate_run(config.run_dir, split="test", beam_size=3, pictures=False)
    # it names the colour and shape of pictures it never saw (in the shortest reference's words: no 4-grams to score)
    assert metrics["scores"]["BLEU-1"] > 0.6 and metrics["scores"]["CIDEr"] > 1.0
    assert load_run(config.run_dir).config.model.type == "transformer"


# ---- self-critical sequence training ----

def test_self_critical_training_continues_a_finished_run_from_its_best_epoch(tiny_run, tmp_path, capsys, no_curves):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    config = config_from_dict(load_run(tiny_run).config.to_dict())
    config.run_dir = str(run_dir)
    config.train.scst_epochs = 4
    config.train.scst_learning_rate = 1e-3
    best_epoch = json.loads((run_dir / "trainer_state.json").read_text())["best_epoch"]
    summary = train(config, show_progress=False)
    assert f"self-critical training from the best cross-entropy epoch ({best_epoch})" in capsys.readouterr().out
    assert summary["epochs_done"] == 44
    rows = list(csv.DictReader((run_dir / "history.csv").open()))
    assert [row["phase"] for row in rows] == ["xe"] * 40 + ["scst"] * 4
    rewards = [float(row["train_reward"]) for row in rows[40:]]
    assert all(reward > 0 for reward in rewards)
    print(rewards, [row["dev_CIDEr"] for row in rows[38:]])


def test_atomic_writes_give_files_the_usual_permissions(tmp_path):
    import os
    import stat

    from captioner.io import atomic_write_text

    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "new.txt", "a")
        assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o644  # not mkstemp's 0600
        (tmp_path / "new.txt").chmod(0o600)
        atomic_write_text(tmp_path / "new.txt", "b")  # a rewrite keeps the mode the user chose
        assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o600
    finally:
        os.umask(umask)
