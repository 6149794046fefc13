"""Run directories: safetensors for tensors, JSON for everything else, atomic writes, no pickle.

    config.json                 config, encoder name + weights sha256, vocabulary size, code version and provenance
                                (git commit, uncommitted changes, Python and package versions)
    vocab.json                  the vocabulary
    model.safetensors           the best decoder weights (by dev CIDEr)
    trainer_state.safetensors   last epoch's decoder + optimizer tensors, for resuming
    trainer_state.json          last epoch's counters, schedule and optimizer hyper-parameters
    memory.safetensors          the training images' pooled features and captions, for consensus reranking
    history.csv, curves.png     one row per epoch, and its plot
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from captioner import __version__
from captioner.config import Config, config_from_dict
from captioner.data.text import Vocabulary
from captioner.errors import CaptionerError
from captioner.io import atomic_write, atomic_write_json
from captioner.model import build_decoder
from captioner.provenance import provenance


@dataclass
class LoadedRun:
    folder: Path
    config: Config
    info: dict[str, Any]  # the whole config.json
    vocabulary: Vocabulary
    decoder: torch.nn.Module


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    contiguous = {name: tensor.detach().contiguous() for name, tensor in tensors.items()}
    atomic_write(path, lambda temp: save_file(contiguous, temp))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CaptionerError(f"missing file {path}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise CaptionerError(f"corrupt file {path} ({error})".splitlines()[0]) from None


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CaptionerError(f"missing file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CaptionerError(f"corrupt JSON file {path}") from None


def write_run_info(folder: Path, config: Config, *, encoder_sha256: str, encoder_channels: int, vocabulary: Vocabulary) -> None:
    """config.json (and vocab.json). A resumed run keeps the provenance it started with; code or packages that differ
    from every earlier session's are appended to `resumed_with`."""
    current = provenance()
    try:
        earlier = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        earlier = {}
    started = earlier.get("provenance") if isinstance(earlier, dict) else None
    resumed_with = list(earlier.get("resumed_with", [])) if started else []
    if started and current != started and current not in resumed_with:
        resumed_with.append(current)
    atomic_write_json(folder / "config.json", {
        "config": config.to_dict(),
        "encoder": {"name": config.encoder.name, "weights_sha256": encoder_sha256, "channels": encoder_channels},
        "vocabulary_size": len(vocabulary),
        "code_version": __version__,
        "provenance": started or current,
        **({"resumed_with": resumed_with} if resumed_with else {}),
    })
    vocabulary.save(folder / "vocab.json")


def load_run(folder: str | Path, *, weights: str = "model.safetensors") -> LoadedRun:
    """Load a run's config, vocabulary and decoder weights; every missing or corrupt file is a CaptionerError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CaptionerError(f"run folder not found: {folder}")
    info = read_json(folder / "config.json")
    try:
        config = config_from_dict(info["config"])
        channels = int(info["encoder"]["channels"])
    except (KeyError, TypeError, ValueError, CaptionerError) as error:
        raise CaptionerError(f"corrupt run config {folder / 'config.json'} ({error})") from None
    vocabulary = Vocabulary.load(folder / "vocab.json")
    if len(vocabulary) != info.get("vocabulary_size"):
        raise CaptionerError(f"{folder}: vocab.json has {len(vocabulary)} words but config.json says {info.get('vocabulary_size')}")
    decoder = build_decoder(config.model, vocab_size=len(vocabulary), encoder_channels=channels)
    state = load_tensors(folder / weights)
    prefix = "model." if weights.startswith("trainer_state") else ""
    state = {name[len(prefix):]: tensor for name, tensor in state.items() if name.startswith(prefix)}
    try:
        decoder.load_state_dict(state)
    except RuntimeError as error:
        raise CaptionerError(f"{folder / weights} does not match the run's config: {str(error).splitlines()[0]}") from None
    return LoadedRun(folder, config, info, vocabulary, decoder.eval())


def save_trainer_state(folder: Path, decoder: torch.nn.Module, optimizer: torch.optim.Optimizer, counters: dict[str, Any]) -> None:
    """Last epoch's model and optimizer (tensors in safetensors, the rest in JSON) for resuming."""
    tensors = {f"model.{name}": tensor for name, tensor in decoder.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    for index, slots in optimizer_state["state"].items():
        for slot, value in slots.items():
            tensors[f"optimizer.{index}.{slot}"] = value if torch.is_tensor(value) else torch.tensor(value)
    save_tensors(folder / "trainer_state.safetensors", tensors)
    # JSON last: its presence says the tensors beside it are complete
    atomic_write_json(folder / "trainer_state.json", {**counters, "optimizer_param_groups": optimizer_state["param_groups"]})


def load_trainer_state(folder: Path, decoder: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    counters = read_json(folder / "trainer_state.json")
    tensors = load_tensors(folder / "trainer_state.safetensors")
    decoder.load_state_dict({name[6:]: tensor for name, tensor in tensors.items() if name.startswith("model.")})
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, index, slot = name.split(".", 2)
            slots.setdefault(int(index), {})[slot] = tensor
    optimizer.load_state_dict({"state": slots, "param_groups": counters.pop("optimizer_param_groups")})
    return counters
