"""Typed configs: YAML presets, `--set` overrides, refused keys and values."""
from __future__ import annotations

import pytest

from captioner.cli import main
from captioner.config import Config, config_from_dict, load_config
from captioner.errors import CaptionerError


def write_preset(tmp_path, text: str):
    path = tmp_path / "preset.yaml"
    path.write_text(text)
    return path


def test_defaults_without_a_file():
    config = load_config()
    assert config == Config()
    assert config.encoder.name == "efficientnet-lite2"
    assert config.decode.beam_size == 3


def test_default_data_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FLICKR8K_DIR", str(tmp_path))
    assert load_config().data.data_dir == str(tmp_path)


def test_yaml_preset_then_overrides_win(tmp_path):
    preset = write_preset(tmp_path, "run_dir: runs/x\nmodel:\n  hidden_dim: 128\n  dropout: 0.3\ntrain:\n  epochs: 3\n")
    config = load_config(preset, ["train.epochs=7", "decode.length_penalty=1", "encoder.name=efficientnet-lite0",
                                  "train.lr_schedule=constant"])
    assert config.run_dir == "runs/x"
    assert config.model.hidden_dim == 128
    assert config.model.dropout == 0.3
    assert config.train.epochs == 7  # the override beats the preset
    assert config.decode.length_penalty == 1.0 and isinstance(config.decode.length_penalty, float)  # int -> float
    assert config.encoder.name == "efficientnet-lite0"
    assert config.train.lr_schedule == "constant"
    assert config.model.embed_dim == Config().model.embed_dim  # untouched keys keep their defaults


def test_repo_presets_load(tmp_path):
    from pathlib import Path

    presets = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    for preset in presets:
        assert isinstance(load_config(preset), Config), preset


def test_a_preset_extends_another_and_overrides_its_keys(tmp_path):
    (tmp_path / "base.yaml").write_text("run_dir: runs/base\nmodel:\n  hidden_dim: 128\ntrain:\n  epochs: 3\n  seed: 4\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nrun_dir: runs/child\ntrain:\n  epochs: 5\n")
    config = load_config(tmp_path / "child.yaml", ["train.seed=9"])
    assert (config.run_dir, config.model.hidden_dim, config.train.epochs, config.train.seed) == ("runs/child", 128, 5, 9)


def test_the_default_preset_is_best_with_fewer_scst_epochs_a_narrower_beam_and_every_epoch_evaluated():
    from pathlib import Path

    configs = Path(__file__).resolve().parents[1] / "configs"
    best, default = load_config(configs / "best.yaml"), load_config(configs / "default.yaml")
    assert default.run_dir == "runs/default" and 0 < default.train.scst_epochs < best.train.scst_epochs
    assert default.decode.beam_size < best.decode.beam_size
    default.run_dir, default.train.scst_epochs = best.run_dir, best.train.scst_epochs
    default.decode.beam_size, default.decode.rerank_weight = best.decode.beam_size, best.decode.rerank_weight
    assert default.train.dev_evaluation_from_epoch == 1 < best.train.dev_evaluation_from_epoch
    default.train.dev_evaluation_from_epoch = best.train.dev_evaluation_from_epoch
    assert default == best


@pytest.mark.parametrize("extends, message", [("loop.yaml", "extends itself through"), ("nope.yaml", "config file not found"),
                                              ("[1, 2]", "extends must name a YAML file")])
def test_bad_extends_is_one_line(tmp_path, extends, message):
    (tmp_path / "loop.yaml").write_text(f"extends: {extends}\n")
    with pytest.raises(CaptionerError, match=message):
        load_config(tmp_path / "loop.yaml")


def test_config_dict_round_trip():
    config = load_config(None, ["model.hidden_dim=64", "train.seed=3"])
    assert config_from_dict(config.to_dict()) == config


@pytest.mark.parametrize("key", ["train.epoch", "nosuchsection.key", "model", "model.hidden_dim.more", "seed"])
def test_unknown_override_key_is_named(key):
    with pytest.raises(CaptionerError) as caught:
        load_config(None, [f"{key}=1"])
    assert f"unknown config key '{key}'" in str(caught.value)
    assert "train.epochs" in str(caught.value)  # and the known keys are listed


def test_unknown_key_in_a_preset_is_named(tmp_path):
    preset = write_preset(tmp_path, "train:\n  epochs: 3\n  learning_rat: 0.1\n")
    with pytest.raises(CaptionerError, match="unknown config key 'train.learning_rat'"):
        load_config(preset)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epochs=abc", "config key 'train.epochs' expects int, got 'abc'"),
        ("train.epochs=2.5", "config key 'train.epochs' expects int, got 2.5"),
        ("model.dropout=high", "config key 'model.dropout' expects float, got 'high'"),
        ("encoder.name=[1, 2]", "config key 'encoder.name' expects str, got [1, 2]"),
        ("train.epochs=true", "config key 'train.epochs' expects int, got True"),
        ("train.learning_rate=nan", "config key 'train.learning_rate' expects a finite number, got nan"),
    ],
)
def test_wrong_value_type_is_refused(override, expected):
    with pytest.raises(CaptionerError) as caught:
        load_config(None, [override])
    assert expected in str(caught.value)


def test_wrong_value_type_in_a_preset(tmp_path):
    preset = write_preset(tmp_path, "decode:\n  beam_size: three\n")
    with pytest.raises(CaptionerError, match="config key 'decode.beam_size' expects int, got 'three'"):
        load_config(preset)


def test_override_without_equals_sign():
    with pytest.raises(CaptionerError, match="override must look like section.key=value, got 'train.epochs'"):
        load_config(None, ["train.epochs"])


def test_missing_preset_file(tmp_path):
    with pytest.raises(CaptionerError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_is_one_line(tmp_path):
    preset = write_preset(tmp_path, "train: [unclosed\n  epochs: 3\n")
    with pytest.raises(CaptionerError) as caught:
        load_config(preset)
    assert "is not valid YAML" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_yaml_that_is_not_a_mapping(tmp_path):
    preset = write_preset(tmp_path, "- train\n- model\n")
    with pytest.raises(CaptionerError, match="must hold a mapping of sections, got list"):
        load_config(preset)


def test_cli_reports_a_bad_override_in_one_line(capsys, tmp_path):
    code = main(["prepare", "--data", str(tmp_path), "--set", "data.min_word_cont=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown config key 'data.min_word_cont'")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.type=gru", "model.type must be one of lstm-attention, transformer, got 'gru'"),
        ("train.lr_schedule=linear", "train.lr_schedule must be one of cosine, constant, got 'linear'"),
        ("encoder.name=vgg", "encoder.name must be one of efficientnet-lite2, "),
        ("train.learning_rate=0", "train.learning_rate must be > 0, got 0.0"),
        ("train.scst_learning_rate=-1e-4", "train.scst_learning_rate must be > 0, got -0.0001"),
        ("train.scst_meteor_weight=-1", "train.scst_meteor_weight must be >= 0, got -1.0"),
        ("model.dropout=1.5", "model.dropout must be below 1, got 1.5"),
        ("train.epochs=0", "train.epochs must be >= 1, got 0"),
        ("decode.beam_size=0", "decode.beam_size must be >= 1, got 0"),
        ("decode.n_best=5", "decode.n_best (5) cannot exceed decode.beam_size (3)"),
    ],
)
def test_a_bad_value_is_refused_when_the_config_loads(override, expected):
    with pytest.raises(CaptionerError) as caught:
        load_config(None, [override])
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_scst_settings_are_checked_only_when_scst_runs():
    assert load_config(None, ["train.scst_samples=1"]).train.scst_samples == 1
    with pytest.raises(CaptionerError, match=r"train.scst_samples must be >= 2 \(each sample's baseline"):
        load_config(None, ["train.scst_samples=1", "train.scst_epochs=2"])


def test_every_problem_is_named_on_one_line():
    with pytest.raises(CaptionerError) as caught:
        load_config(None, ["model.type=transformer", "model.embed_dim=100", "model.heads=8", "train.warmup_steps=-1"])
    message = str(caught.value)
    assert message.startswith("invalid config: ") and "\n" not in message
    assert "train.warmup_steps must be >= 0, got -1" in message
    assert "model.embed_dim (100) must be a multiple of model.heads (8)" in message


def test_cli_refuses_a_bad_config_before_reading_data_or_writing_files(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing prepared here: a config error must come first
    code = main(["train", "--config", str(write_preset(tmp_path, "train:\n  lr_schedule: linear\n")), "--run", "runs/x"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: invalid config: train.lr_schedule must be one of cosine, constant, got 'linear'")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["preset.yaml"]  # no run folder, no data folder


def test_download_and_prepare_agree_on_the_data_folder(monkeypatch):
    from captioner.cli import build_parser
    from captioner.config import default_data_dir

    monkeypatch.delenv("FLICKR8K_DIR", raising=False)
    assert default_data_dir() == "data/flickr8k"
    assert build_parser().parse_args(["download"]).out == default_data_dir() == load_config().data.data_dir
    monkeypatch.setenv("FLICKR8K_DIR", "/somewhere/flickr8k")
    assert build_parser().parse_args(["download"]).out == "/somewhere/flickr8k" == load_config().data.data_dir
