"""Training loop: teacher forcing on cached features, then optional self-critical sequence training;
dev validation each epoch, best checkpoint, resume.

Every epoch seeds its own shuffling and dropout from (seed, epoch), so a run killed and resumed
gives the same weights as one that never stopped.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from captioner.checkpoint import load_tensors, load_trainer_state, read_json, save_tensors, save_trainer_state, write_run_info
from captioner.config import Config, TrainConfig, validate_config
from captioner.data.flickr import load_prepared
from captioner.data.text import Vocabulary
from captioner.decoding import greedy_decode, sample_captions, suppress_tokens
from captioner.errors import CaptionerError
from captioner.features import FeatureCache
from captioner.io import atomic_write_text
from captioner.metrics import fast_scores
from captioner.model import build_decoder
from captioner.pipeline import open_mirrored_features, open_prepared_features
from captioner.reranking import MEMORY_FILE, save_memory
from captioner.reward import SelfCriticalReward, function_word_ids

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ("epoch", "phase", "learning_rate", "train_loss", "train_reward", "dev_loss", "dev_token_accuracy",
                   "dev_BLEU-4", "dev_CIDEr", "epoch_seconds")
# keys that may differ between a run and its resumption (a finished cross-entropy run can go on to SCST; the
# extraction batch size does not change the features); decoding settings never change the weights, so they may
# differ too (a length penalty tuned after training)
RESUMABLE_CHANGES = {"train.epochs", "train.early_stopping_patience", "train.threads", "train.scst_epochs",
                     "train.scst_learning_rate", "train.scst_samples", "train.scst_max_length", "train.scst_bleu_weight",
                     "train.scst_meteor_weight", "train.dev_evaluation_from_epoch", "encoder.batch_size",
                     "data.data_dir"}  # where the raw photos live: training reads the prepared data


class CaptionBatches:
    """Images with all their captions, batched; captions sorted longest first as the decoder wants.

    With a `mirrored_grid` (the flipped photos' features) there are twice as many rows: row
    `len(names) + i` is image i mirrored, with "left" and "right" swapped in its captions, and
    `keys` names every row. A shuffled epoch shows each image once, as is or mirrored at random.
    """

    def __init__(self, names: list[str], grid: torch.Tensor, captions: dict[str, list[list[str]]], vocabulary: Vocabulary,
                 max_length: int, *, mirrored_grid: torch.Tensor | None = None):
        self.names = names
        self.keys = list(names)
        self.grid = grid  # (rows, pixels, channels) float16
        self.captions = [[vocabulary.encode(words, max_length=max_length) for words in captions[name]] for name in names]
        self.references = [[" ".join(words) for words in captions[name]] for name in names]
        self.function_ids = function_word_ids(vocabulary.index)
        if mirrored_grid is not None:
            self.grid = torch.cat([grid, mirrored_grid])
            self.captions += [[vocabulary.mirrored(ids) for ids in image_captions] for image_captions in self.captions]
            self.keys += [f"{name} (mirrored)" for name in names]

    def reward(self, settings: TrainConfig) -> SelfCriticalReward:
        """The SCST reward against each row's captions (CIDEr-D with document frequencies from them too),
        with the BLEU-4 and METEOR-like terms `settings` weighs in."""
        return SelfCriticalReward({key: [ids[1:-1] for ids in captions] for key, captions in zip(self.keys, self.captions, strict=True)},
                                  bleu_weight=settings.scst_bleu_weight, meteor_weight=settings.scst_meteor_weight,
                                  function_ids=self.function_ids)

    def batches(self, images_per_batch: int, *, shuffle_seed: int | None = None):
        order = np.arange(len(self.names))
        if shuffle_seed is not None:
            generator = np.random.default_rng(shuffle_seed)
            generator.shuffle(order)
            if len(self.keys) > len(self.names):
                order += len(self.names) * (generator.random(len(order)) < 0.5)
        for start in range(0, len(order), images_per_batch):
            rows = order[start : start + images_per_batch].tolist()
            yield *self.collate(rows), rows

    def collate(self, image_rows: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        pairs = [(position, ids) for position, row in enumerate(image_rows) for ids in self.captions[row]]
        padded, lengths, order = pad_longest_first([ids for _, ids in pairs])
        image_index = torch.tensor([pairs[row][0] for row in order.tolist()])
        return self.grid[image_rows], padded, lengths, image_index


def pad_longest_first(sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token-id lists -> (padded ids, lengths) sorted longest first as the decoders want, and that order."""
    order = torch.tensor(sorted(range(len(sequences)), key=lambda row: -len(sequences[row])), dtype=torch.long)
    lengths = torch.tensor([len(sequences[row]) for row in order.tolist()])
    padded = torch.zeros((len(sequences), int(lengths[0])), dtype=torch.long)  # <pad> is id 0
    for position, row in enumerate(order.tolist()):
        padded[position, : len(sequences[row])] = torch.tensor(sequences[row])
    return padded, lengths, order


def learning_rate_at(step: int, total_steps: int, config: Config) -> float:
    """Linear warm-up, then cosine decay to 5% (or constant)."""
    base = config.train.learning_rate
    if step < config.train.warmup_steps:
        return base * (step + 1) / config.train.warmup_steps
    if config.train.lr_schedule == "constant":
        return base
    if config.train.lr_schedule != "cosine":
        raise CaptionerError(f"unknown train.lr_schedule '{config.train.lr_schedule}'; use cosine or constant")
    return _cosine_decay(base, (step - config.train.warmup_steps) / max(1, total_steps - config.train.warmup_steps))


def _cosine_decay(base: float, progress: float) -> float:
    """From `base` at progress 0 to 5% of it at progress 1 (and after)."""
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def scst_learning_rate_at(step: int, total_steps: int, config: Config) -> float:
    """Cosine decay from train.scst_learning_rate to 5% over the self-critical steps, no warm-up."""
    return _cosine_decay(config.train.scst_learning_rate, step / max(1, total_steps))


def caption_loss(output, config: Config) -> torch.Tensor:
    cross_entropy = F.cross_entropy(output.logits, output.targets, label_smoothing=config.train.label_smoothing)
    if output.attention_sums is None:
        return cross_entropy
    attention_penalty = ((1.0 - output.attention_sums) ** 2).mean()  # doubly stochastic regularisation
    return cross_entropy + config.train.attention_regularisation * attention_penalty


def self_critical_loss(decoder, grid: torch.Tensor, image_keys: list[str], reward: SelfCriticalReward, vocabulary: Vocabulary,
                       config: Config) -> tuple[torch.Tensor, float]:
    """REINFORCE with the SCST reward (CIDEr-D, plus the BLEU-4 and METEOR-like terms where configured); each
    sample's baseline is the mean reward of the image's other samples.

    Returns the loss and the mean reward of the samples. Sampling and scoring both run without
    dropout, so the gradient is that of the policy that drew the samples.
    """
    samples = config.train.scst_samples
    decoder.eval()
    # a decoder that teacher-forces all steps at once (the Transformer) scores the samples in a second pass: twice
    # as fast as back-propagating through its step-by-step sampling; the LSTM runs step by step either way, so
    # keeping the sampling pass's graph saves it that second pass
    second_pass = decoder.parallel_teacher_forcing
    with torch.set_grad_enabled(not second_pass):
        drawn = sample_captions(decoder, grid, samples=samples, start_id=vocabulary.start_id, end_id=vocabulary.end_id,
                                max_length=config.train.scst_max_length, suppress_ids=vocabulary.never_emitted_ids)
    image_index = torch.arange(grid.shape[0]).repeat_interleave(samples)  # (images*samples,)
    rewards = torch.tensor(reward.scores([image_keys[row] for row in image_index.tolist()], [words for words, _ in drawn.captions]))
    rewards = rewards.view(-1, samples)  # (images, samples)
    baseline = (rewards.sum(dim=1, keepdim=True) - rewards) / (samples - 1)
    advantage = (rewards - baseline).view(-1)  # (images*samples,)
    log_probabilities = (teacher_forced_log_probabilities(decoder, grid, drawn.captions, image_index, vocabulary)
                         if second_pass else drawn.log_probabilities)
    loss = -(advantage * log_probabilities).sum() / max(drawn.tokens, 1)
    return loss, float(rewards.mean())


def teacher_forced_log_probabilities(decoder, grid: torch.Tensor, captions: list[tuple[list[int], bool]],
                                     image_index: torch.Tensor, vocabulary: Vocabulary) -> torch.Tensor:
    """(captions,) log-probability of each (words, finished) caption of image `image_index[i]`, by teacher forcing.

    The policy is the one sampling draws from: without the never-emitted tokens, which would otherwise soak
    up the probability that negative advantages push away from sampled words.
    """
    sequences = [[vocabulary.start_id, *words] + ([vocabulary.end_id] if finished else []) for words, finished in captions]
    padded, lengths, order = pad_longest_first(sequences)
    output = decoder(grid, padded, lengths, image_index[order])
    logits = suppress_tokens(output.logits, vocabulary.never_emitted_ids)
    token_log_probs = logits.log_softmax(dim=-1).gather(1, output.targets.unsqueeze(1)).squeeze(1)  # (tokens,)
    return token_log_probs.new_zeros(len(captions)).index_add(0, order[output.rows], token_log_probs)


@torch.inference_mode()
def validate(decoder, data: CaptionBatches, vocabulary: Vocabulary, config: Config, *,
             teacher_forced: bool = True) -> dict[str, float]:
    """Greedy-decoded BLEU-4 and CIDEr, and with `teacher_forced` the teacher-forced loss and token accuracy."""
    decoder.eval()
    row: dict[str, float] = {}
    if teacher_forced:
        loss_sum, correct, tokens = 0.0, 0, 0
        # training-sized batches: with 100 photos (500 captions) the per-step attention tensors outgrow the
        # caches and the pass gets much slower
        for grid, captions, lengths, image_index, _ in data.batches(config.train.images_per_batch):
            output = decoder(grid, captions, lengths, image_index)
            loss_sum += F.cross_entropy(output.logits, output.targets, reduction="sum").item()
            correct += (output.logits.argmax(dim=1) == output.targets).sum().item()
            tokens += output.targets.numel()
        row.update(dev_loss=loss_sum / tokens, dev_token_accuracy=correct / tokens)
    candidates: dict[str, str] = {}
    for start in range(0, len(data.names), 100):
        grid = data.grid[start : start + 100]
        for offset, hypothesis in enumerate(greedy_decode(decoder, grid, start_id=vocabulary.start_id, end_id=vocabulary.end_id,
                                                          max_length=config.decode.max_length,
                                                          suppress_ids=vocabulary.never_emitted_ids)):
            candidates[data.names[start + offset]] = " ".join(vocabulary.decode(hypothesis.token_ids))
    references = {name: refs for name, refs in zip(data.names, data.references, strict=True)}
    scores = fast_scores(references, candidates)
    return {**row, "dev_BLEU-4": scores["BLEU-4"], "dev_CIDEr": scores["CIDEr"]}


def _write_history(folder: Path, history: list[dict[str, float]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(folder / "history.csv", buffer.getvalue())
    try:
        from captioner.viz import plot_training_curves

        plot_training_curves(history, folder / "curves.png")
    except Exception as error:  # a plot is never worth losing an epoch over
        log.warning("could not draw training curves: %s", error)


def _check_resumable(folder: Path, config: Config) -> None:
    saved = read_json(folder / "config.json")["config"]
    wanted, defaults = config.to_dict(), Config().to_dict()
    for section, values in wanted.items():
        if not isinstance(values, dict) or section == "decode":
            continue
        for key, value in values.items():
            old = saved.get(section, {}).get(key, defaults[section][key])  # keys newer than the run hold their default
            if old != value and f"{section}.{key}" not in RESUMABLE_CHANGES:
                raise CaptionerError(
                    f"{folder} holds a run with {section}.{key}={old!r}, not {value!r}; "
                    "resume it with the same config or train into another --run folder"
                )


def _load_split(cache, splits, split: str, vocabulary: Vocabulary, config: Config, limit: int,
                mirrored_cache: FeatureCache | None = None) -> CaptionBatches:
    names = sorted(splits.get(split, {}))
    available = cache.available(names)
    if mirrored_cache is not None:
        available = mirrored_cache.available(available)
    if len(available) < len(names):
        log.warning("%s split: %d of %d images have no features (unreadable) and are skipped",
                    split, len(names) - len(available), len(names))
    if limit:
        available = available[:limit]
    if not available:
        raise CaptionerError(f"no {split} images with features; run `captioner features` first")
    mirrored_grid = mirrored_cache.load(available) if mirrored_cache is not None else None
    return CaptionBatches(available, cache.load(available), splits[split], vocabulary, config.data.max_caption_length,
                          mirrored_grid=mirrored_grid)


def _finished(cache: FeatureCache) -> FeatureCache:
    if not cache.complete:
        raise CaptionerError(f"feature cache {cache.folder} is incomplete; rerun `captioner features` to finish it")
    return cache


def train(config: Config, *, show_progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the run in `config.run_dir`; returns a summary of the best epoch."""
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    validate_config(config)  # a config built in code has not been through load_config
    _, splits, vocabulary = load_prepared(config.data.prepared_dir)
    cache = _finished(open_prepared_features(config, splits))
    mirrored_cache = _finished(open_mirrored_features(config, splits)) if config.train.flip_augmentation else None
    train_data = _load_split(cache, splits, "train", vocabulary, config, config.train.max_train_images, mirrored_cache)
    dev_data = _load_split(cache, splits, "dev", vocabulary, config, config.train.max_dev_images)

    folder = Path(config.run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.train.seed)
    channels = int(train_data.grid.shape[2])
    decoder = build_decoder(config.model, vocab_size=len(vocabulary), encoder_channels=channels)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=config.train.learning_rate, weight_decay=config.train.weight_decay)
    counters: dict[str, Any] = {"epoch": 0, "step": 0, "best_epoch": 0, "best_dev_CIDEr": -1.0, "epochs_without_improvement": 0,
                                "history": []}
    if (folder / "trainer_state.json").is_file():
        _check_resumable(folder, config)
        counters = load_trainer_state(folder, decoder, optimizer)
        log.info("resuming %s after epoch %d", folder, counters["epoch"])
        print(f"resuming {folder} after epoch {counters['epoch']}")
    write_run_info(folder, config, encoder_sha256=cache.index["weights_sha256"], encoder_channels=channels, vocabulary=vocabulary)
    originals = len(train_data.names)  # without the mirrored rows
    save_memory(folder / MEMORY_FILE, train_data.grid[:originals],
                [[ids[1:-1] for ids in image_captions] for image_captions in train_data.captions[:originals]])

    steps_per_epoch = math.ceil(len(train_data.names) / config.train.images_per_batch)
    total_steps = steps_per_epoch * config.train.epochs
    last_epoch = config.train.epochs + config.train.scst_epochs
    reward = None
    history: list[dict[str, float]] = counters["history"]
    epoch = counters["epoch"] + 1
    while epoch <= last_epoch:
        self_critical = epoch > config.train.epochs
        if not self_critical and counters["epochs_without_improvement"] >= config.train.early_stopping_patience:
            print(f"early stopping: dev CIDEr has not improved for {counters['epochs_without_improvement']} epochs")
            epoch = config.train.epochs + 1
            continue
        if self_critical and reward is None:
            reward = train_data.reward(config.train)
            if "scst_start_step" not in counters:  # entering SCST: start from the best cross-entropy weights
                decoder.load_state_dict(load_tensors(folder / "model.safetensors"))
                optimizer = torch.optim.AdamW(decoder.parameters(), lr=config.train.scst_learning_rate,
                                              weight_decay=config.train.weight_decay)
                counters.update(scst_start_step=counters["step"], epochs_without_improvement=0)
                print(f"self-critical training from the best cross-entropy epoch ({counters['best_epoch']})")
        started = time.perf_counter()
        torch.manual_seed(config.train.seed * 1000 + epoch)
        loss_sum, reward_sum, batches = 0.0, 0.0, 0
        bar = tqdm(train_data.batches(config.train.images_per_batch, shuffle_seed=config.train.seed * 1000 + epoch),
                   total=steps_per_epoch, desc=f"epoch {epoch}/{last_epoch}" + (" scst" if self_critical else ""),
                   disable=not show_progress, leave=False)
        for grid, captions, lengths, image_index, image_rows in bar:
            if self_critical:
                learning_rate = scst_learning_rate_at(counters["step"] - counters["scst_start_step"],
                                                      steps_per_epoch * config.train.scst_epochs, config)
                image_keys = [train_data.keys[row] for row in image_rows]
                loss, mean_reward = self_critical_loss(decoder, grid, image_keys, reward, vocabulary, config)
                reward_sum += mean_reward
            else:
                learning_rate = learning_rate_at(counters["step"], total_steps, config)
                decoder.train()
                loss = caption_loss(decoder(grid, captions, lengths, image_index), config)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(decoder.parameters(), config.train.grad_clip)
            optimizer.step()
            counters["step"] += 1
            loss_sum += loss.item()
            batches += 1
            bar.set_postfix({"reward" if self_critical else "loss": f"{(reward_sum if self_critical else loss_sum) / batches:.3f}"})
        bar.close()
        row = {"epoch": epoch, "phase": "scst" if self_critical else "xe", "learning_rate": learning_rate,
               "train_loss": loss_sum / max(batches, 1), "train_reward": reward_sum / max(batches, 1) if self_critical else ""}
        evaluated = epoch >= config.train.dev_evaluation_from_epoch or epoch in (config.train.epochs, last_epoch)
        if evaluated:
            # self-critical epochs skip the teacher-forced pass: that loss rises during SCST while the captions improve,
            # and the pass took most of an evaluation's time
            row.update(validate(decoder, dev_data, vocabulary, config, teacher_forced=not self_critical))
        row["epoch_seconds"] = time.perf_counter() - started
        history.append(row)
        improved = evaluated and row["dev_CIDEr"] > counters["best_dev_CIDEr"]
        if improved:
            counters.update(best_epoch=epoch, best_dev_CIDEr=row["dev_CIDEr"], epochs_without_improvement=0)
            save_tensors(folder / "model.safetensors", decoder.state_dict())
        elif evaluated:
            counters["epochs_without_improvement"] += 1
        counters["epoch"] = epoch
        save_trainer_state(folder, decoder, optimizer, counters)
        _write_history(folder, history)
        print(f"epoch {epoch}{' (scst)' if self_critical else ''}: train loss {row['train_loss']:.3f}"
              + (f", train reward {row['train_reward']:.3f}" if self_critical else "")
              + (f", dev loss {row['dev_loss']:.3f}" if "dev_loss" in row else "")
              + (f", dev BLEU-4 {row['dev_BLEU-4']:.4f}, dev CIDEr {row['dev_CIDEr']:.4f}" if evaluated else ", dev not evaluated")
              + f", {row['epoch_seconds']:.0f} s" + (" (best)" if improved else ""), flush=True)
        epoch += 1
    return {
        "run": str(folder),
        "epochs_done": counters["epoch"],
        "best_epoch": counters["best_epoch"],
        "best_dev_CIDEr": counters["best_dev_CIDEr"],
        "train_seconds": sum(row["epoch_seconds"] for row in history),
    }
