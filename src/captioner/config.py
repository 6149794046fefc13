"""Typed configuration: dataclasses, loaded from YAML presets (a preset may extend another) with
`--set section.key=value` overrides."""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from captioner.errors import CaptionerError


def default_data_dir() -> str:
    """Flickr8k location: $FLICKR8K_DIR, else data/flickr8k (where `captioner download` puts it)."""
    return os.environ.get("FLICKR8K_DIR", "data/flickr8k")


@dataclass
class DataConfig:
    data_dir: str = field(default_factory=default_data_dir)
    prepared_dir: str = "data/prepared"
    min_word_count: int = 5
    max_caption_length: int = 30  # words; longer training captions are cut (not dropped)


@dataclass
class EncoderConfig:
    name: str = "efficientnet-lite2"
    cache_dir: str = "data/features"
    batch_size: int = 8  # images per encoder call when extracting; larger batches run slower per image on CPU


@dataclass
class ModelConfig:
    type: str = "lstm-attention"  # lstm-attention | transformer
    embed_dim: int = 512  # word embeddings; the transformer's width
    feature_dim: int = 512  # lstm-attention: encoder channels are projected to this once per image
    attention_dim: int = 512  # lstm-attention only
    hidden_dim: int = 512  # lstm-attention only
    dropout: float = 0.5
    layers: int = 3  # transformer decoder layers
    encoder_layers: int = 1  # transformer self-attention layers over the grid, run once per image
    heads: int = 8  # transformer attention heads
    ff_dim: int = 2048  # transformer feed-forward width


@dataclass
class TrainConfig:
    epochs: int = 20
    images_per_batch: int = 32  # every caption of each image goes in the batch
    learning_rate: float = 4e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    lr_schedule: str = "cosine"  # cosine | constant
    grad_clip: float = 5.0
    label_smoothing: float = 0.0
    attention_regularisation: float = 1.0  # lambda of the doubly stochastic penalty
    early_stopping_patience: int = 4  # evaluated cross-entropy epochs without a better dev CIDEr
    # epochs before this one skip the dev evaluation, so they cannot become the kept best epoch; the last
    # cross-entropy epoch (where SCST starts from) and the last epoch are always evaluated
    dev_evaluation_from_epoch: int = 1
    # self-critical sequence training (Rennie et al. 2017) after cross-entropy, from its best checkpoint
    scst_epochs: int = 0
    scst_learning_rate: float = 5e-5
    scst_samples: int = 5  # per image; each sample's baseline is the mean reward of the others (Luo 2020)
    scst_max_length: int = 20  # words per sample
    scst_bleu_weight: float = 0.0  # reward = CIDEr-D + this x smoothed sentence BLEU-4 (0: CIDEr-D alone)
    scst_meteor_weight: float = 0.0  # ... + this x a METEOR-like score on exact word matches (reward.SentenceMeteor)
    # each epoch shows every training image either as is or mirrored (features of the flipped photo, extracted
    # by `captioner features`; "left" and "right" swapped in its captions), at random
    flip_augmentation: bool = False
    seed: int = 0
    threads: int = 0  # 0: torch's default
    max_train_images: int = 0  # 0: all; smaller for smoke runs and tests
    max_dev_images: int = 0


@dataclass
class DecodeConfig:
    beam_size: int = 3
    max_length: int = 30
    length_penalty: float = 0.0  # alpha in score / length**alpha; 0 keeps raw log-probabilities
    n_best: int = 1
    # consensus reranking (captioner.reranking): the beam's candidates gain rerank_weight x their CIDEr-D against the
    # captions of the rerank_neighbours most similar training photos; 0 neighbours: off
    rerank_neighbours: int = 0
    rerank_weight: float = 1.0
    # test-time augmentation: decode each photo together with its mirror image, averaging the two views'
    # log-probabilities every step (costs a second encoder pass and twice the decoder work)
    flip_ensemble: bool = False
    # grounding (captioner.grounded): pass over candidates that conflict with what the encoder's ImageNet classifier
    # recognises, and with fallback say less ("a photo of a cat") when every candidate conflicts
    grounding: bool = True
    fallback: bool = True


@dataclass
class Config:
    run_dir: str = "runs/default"
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _known_keys(section: Any, prefix: str = "") -> list[str]:
    keys = []
    for item in dataclasses.fields(section):
        value = getattr(section, item.name)
        if dataclasses.is_dataclass(value):
            keys += _known_keys(value, f"{prefix}{item.name}.")
        else:
            keys.append(f"{prefix}{item.name}")
    return keys


def _set(config: Config, dotted_key: str, value: Any) -> None:
    """Set one dotted key, refusing keys that do not exist and values of the wrong type."""
    target: Any = config
    parts = dotted_key.split(".")
    for part in parts[:-1]:
        child = getattr(target, part, None)
        if not dataclasses.is_dataclass(child):
            raise CaptionerError(f"unknown config key '{dotted_key}'; known keys: {', '.join(_known_keys(config))}")
        target = child
    names = {item.name: item for item in dataclasses.fields(target)}
    if parts[-1] not in names or dataclasses.is_dataclass(getattr(target, parts[-1])):
        raise CaptionerError(f"unknown config key '{dotted_key}'; known keys: {', '.join(_known_keys(config))}")
    current = getattr(target, parts[-1])
    if isinstance(current, bool) and not isinstance(value, bool):
        raise CaptionerError(f"config key '{dotted_key}' expects true/false, got {value!r}")
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(current, float) and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-4 (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, float) and not math.isfinite(value):
        raise CaptionerError(f"config key '{dotted_key}' expects a finite number, got {value!r}")
    if not isinstance(value, type(current)) or (isinstance(value, bool) and not isinstance(current, bool)):  # bool is an int
        raise CaptionerError(f"config key '{dotted_key}' expects {type(current).__name__}, got {value!r}")
    setattr(target, parts[-1], value)


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_from_dict(mapping: dict[str, Any]) -> Config:
    config = Config()
    for key, value in _flatten(mapping).items():
        _set(config, key, value)
    return config


def _read_preset(path: Path, extended_by: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A preset's keys, flattened. `extends: other.yaml` (relative to the preset) starts from that preset's keys."""
    if not path.is_file():
        raise CaptionerError(f"config file not found: {path}")
    try:
        mapping = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise CaptionerError(f"config file {path} is not valid YAML: {error}".splitlines()[0]) from None
    if not isinstance(mapping, dict):
        raise CaptionerError(f"config file {path} must hold a mapping of sections, got {type(mapping).__name__}")
    base = mapping.pop("extends", None)
    keys = _flatten(mapping)
    if base is None:
        return keys
    if not isinstance(base, str):
        raise CaptionerError(f"config file {path}: extends must name a YAML file, got {base!r}")
    chain = (*extended_by, path.resolve())
    base_path = path.parent / base
    if base_path.resolve() in chain:
        raise CaptionerError(f"config file {path} extends itself through {base_path}")
    return {**_read_preset(base_path, chain), **keys}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML preset (or the defaults), apply `section.key=value` overrides, and validate the result."""
    config = config_from_dict(_read_preset(Path(path)) if path is not None else {})
    for override in overrides or []:
        if "=" not in override:
            raise CaptionerError(f"override must look like section.key=value, got '{override}'")
        key, raw = override.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise CaptionerError(f"override {override!r}: the value is not valid YAML") from None
        _set(config, key.strip(), value)
    validate_config(config)
    return config


MODEL_TYPES = ("lstm-attention", "transformer")
LR_SCHEDULES = ("cosine", "constant")
# (dotted key, lowest allowed, whether the lowest itself is allowed, highest or None); checked in this order
RANGES: tuple[tuple[str, float, bool, float | None], ...] = (
    ("data.min_word_count", 1, True, None), ("data.max_caption_length", 1, True, None),
    ("encoder.batch_size", 1, True, None),
    ("model.embed_dim", 1, True, None), ("model.feature_dim", 1, True, None), ("model.attention_dim", 1, True, None),
    ("model.hidden_dim", 1, True, None), ("model.dropout", 0, True, 1), ("model.layers", 1, True, None),
    ("model.encoder_layers", 0, True, None), ("model.heads", 1, True, None), ("model.ff_dim", 1, True, None),
    ("train.epochs", 1, True, None), ("train.images_per_batch", 1, True, None), ("train.learning_rate", 0, False, None),
    ("train.weight_decay", 0, True, None), ("train.warmup_steps", 0, True, None), ("train.grad_clip", 0, False, None),
    ("train.label_smoothing", 0, True, 1), ("train.attention_regularisation", 0, True, None),
    ("train.early_stopping_patience", 1, True, None), ("train.dev_evaluation_from_epoch", 1, True, None),
    ("train.scst_epochs", 0, True, None), ("train.scst_learning_rate", 0, False, None), ("train.scst_max_length", 1, True, None),
    # a negative reward weight would punish matching the references
    ("train.scst_bleu_weight", 0, True, None), ("train.scst_meteor_weight", 0, True, None),
    ("train.seed", 0, True, None), ("train.threads", 0, True, None),
    ("train.max_train_images", 0, True, None), ("train.max_dev_images", 0, True, None),
    ("decode.beam_size", 1, True, None), ("decode.max_length", 1, True, None), ("decode.length_penalty", 0, True, None),
    ("decode.n_best", 1, True, None), ("decode.rerank_neighbours", 0, True, None), ("decode.rerank_weight", 0, True, None),
)


def _value(config: Config, dotted_key: str) -> Any:
    target: Any = config
    for part in dotted_key.split("."):
        target = getattr(target, part)
    return target


def validate_config(config: Config) -> None:
    """Refuse a config that would fail later, before any data is read or any file is written: every problem found,
    on one line."""
    from captioner.encoders import ENCODERS  # the registry is the one list of names

    problems = []
    if config.model.type not in MODEL_TYPES:
        problems.append(f"model.type must be one of {', '.join(MODEL_TYPES)}, got {config.model.type!r}")
    if config.train.lr_schedule not in LR_SCHEDULES:
        problems.append(f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {config.train.lr_schedule!r}")
    if config.encoder.name not in ENCODERS:
        problems.append(f"encoder.name must be one of {', '.join(ENCODERS)}, got {config.encoder.name!r}")
    for key, lowest, inclusive, highest in RANGES:
        value = _value(config, key)
        if value < lowest or (not inclusive and value == lowest):
            problems.append(f"{key} must be {'>=' if inclusive else '>'} {lowest}, got {value}")
        elif highest is not None and value >= highest:
            problems.append(f"{key} must be below {highest}, got {value}")
    if config.train.scst_epochs and config.train.scst_samples < 2:
        problems.append(f"train.scst_samples must be >= 2 (each sample's baseline is the others' mean), got {config.train.scst_samples}")
    if config.model.type == "transformer" and config.model.heads >= 1 and config.model.embed_dim % config.model.heads:
        problems.append(f"model.embed_dim ({config.model.embed_dim}) must be a multiple of model.heads ({config.model.heads})")
    if config.decode.n_best > config.decode.beam_size:
        problems.append(f"decode.n_best ({config.decode.n_best}) cannot exceed decode.beam_size ({config.decode.beam_size})")
    if problems:
        raise CaptionerError("invalid config: " + "; ".join(problems))
