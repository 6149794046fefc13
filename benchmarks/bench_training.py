"""Training speed of a preset on the cached features: seconds per cross-entropy and self-critical step,
the epoch times they project to, and where each kind of step spends its time (torch profiler).

    python benchmarks/bench_training.py configs/best.yaml --steps 20 [--threads 2] [--weights runs/best] [--validation]
        [--set model.layers=3 ...]
    python benchmarks/bench_training.py configs/best.yaml --steps 16 --threads 2 --weights runs/best --compare-attention

`--weights` starts from a trained run's decoder, so self-critical samples have the lengths they have in training
(an untrained decoder samples captions of the maximum length). `--validation` also times the dev evaluation run after
each epoch, with its teacher-forced pass (as after a cross-entropy epoch) and without (as after a self-critical one).
`--compare-attention` instead times the LSTM's hand-written attention backward (`AdditiveAttention.apply`) against
autograd over the same plain ops (`AdditiveAttention.reference`): two decoders with the same weights take the same
batches and random numbers in turn, so that the machine's changing speed hits both alike, and must end with the same
weights bit for bit.

Prints one JSON line per measurement. Needs `captioner prepare` and `captioner features` done first.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import statistics
import time
from pathlib import Path
from unittest import mock

import torch
from torch.profiler import ProfilerActivity, profile

from captioner.checkpoint import load_tensors
from captioner.config import load_config
from captioner.data.flickr import load_prepared
from captioner.model import AdditiveAttention, build_decoder
from captioner.pipeline import open_prepared_features
from captioner.train import _load_split, caption_loss, self_critical_loss, validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each kind (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--weights", help="a run folder whose decoder weights to start from (its config must match)")
    parser.add_argument("--validation", action="store_true", help="also time one dev evaluation with and without its teacher-forced pass")
    parser.add_argument("--compare-attention", action="store_true",
                        help="time the LSTM's hand-written attention backward against autograd's, step by step in turn")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config, args.overrides)
    _, splits, vocabulary = load_prepared(config.data.prepared_dir)
    cache = open_prepared_features(config, splits)
    images_needed = (args.steps + 1) * config.train.images_per_batch
    data = _load_split(cache, splits, "train", vocabulary, config, images_needed)
    torch.manual_seed(0)
    decoder = build_decoder(config.model, vocab_size=len(vocabulary), encoder_channels=int(data.grid.shape[2]))
    if args.weights:
        decoder.load_state_dict(load_tensors(Path(args.weights) / "model.safetensors"))
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=1e-4)
    reward = data.reward(config.train)
    batches = list(data.batches(config.train.images_per_batch, shuffle_seed=0))
    full_epoch_steps = math.ceil(len(splits["train"]) / config.train.images_per_batch)

    def cross_entropy_step(batch, decoder=decoder, optimizer=optimizer) -> None:
        grid, captions, lengths, image_index, _ = batch
        decoder.train()
        loss = caption_loss(decoder(grid, captions, lengths, image_index), config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def self_critical_step(batch, decoder=decoder, optimizer=optimizer) -> None:
        grid, _, _, _, rows = batch
        loss, _ = self_critical_loss(decoder, grid, [data.keys[row] for row in rows], reward, vocabulary, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    common = {"config": args.config, "weights": args.weights, "model": config.model.type, "threads": torch.get_num_threads(),
              "images_per_batch": config.train.images_per_batch,
              "parameters_millions": round(sum(p.numel() for p in decoder.parameters()) / 1e6, 2)}
    if args.validation:  # first, so that the scores are the loaded weights'
        dev = _load_split(cache, splits, "dev", vocabulary, config, config.train.max_dev_images)
        for teacher_forced in (True, False):
            started = time.perf_counter()
            scores = validate(decoder, dev, vocabulary, config, teacher_forced=teacher_forced)
            print(json.dumps({**common, "step": "dev_evaluation", "dev_images": len(dev.names), "teacher_forced": teacher_forced,
                              "seconds": round(time.perf_counter() - started, 1), "dev_CIDEr": round(scores["dev_CIDEr"], 4)}), flush=True)
    if args.compare_attention:
        if decoder.parallel_teacher_forcing:
            parser.error("--compare-attention compares the LSTM's attention (model.type lstm-attention)")
        compare_attention(decoder, batches[: args.steps + 1], {"cross_entropy": cross_entropy_step, "self_critical": self_critical_step},
                          common)
        return
    for name, step in (("cross_entropy", cross_entropy_step), ("self_critical", self_critical_step)):
        step(batches[0])  # warm-up
        seconds = []
        for batch in batches[1 : args.steps + 1]:
            started = time.perf_counter()
            step(batch)
            seconds.append(time.perf_counter() - started)
        median = statistics.median(seconds)
        print(json.dumps({**common, "step": name, "steps": len(seconds), "median_step_seconds": round(median, 3),
                          "projected_epoch_minutes": round(median * full_epoch_steps / 60, 1)}), flush=True)
    for name, step in (("cross_entropy", cross_entropy_step), ("self_critical", self_critical_step)):
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            for batch in batches[1:4]:
                step(batch)
        total = sum(event.self_cpu_time_total for event in profiler.key_averages())
        top = sorted(profiler.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)[:8]
        print(json.dumps({**common, "step": f"{name}_profile",
                          "self_cpu_share": {event.key: round(event.self_cpu_time_total / total, 3) for event in top}}))


def compare_attention(decoder, batches: list, steps: dict, common: dict) -> None:
    """Each batch's step through `AdditiveAttention.apply` and through `AdditiveAttention.reference`, in turn; prints the
    medians and the median ratio per kind of step, then whether the two decoders still have the same weights."""
    reference_decoder = copy.deepcopy(decoder)
    implementations = {"hand_written": (decoder, torch.optim.AdamW(decoder.parameters(), lr=1e-4), contextlib.nullcontext),
                       "autograd": (reference_decoder, torch.optim.AdamW(reference_decoder.parameters(), lr=1e-4),
                                    lambda: mock.patch.object(AdditiveAttention, "apply", AdditiveAttention.reference))}
    for kind, step in steps.items():
        seconds: dict[str, list[float]] = {name: [] for name in implementations}
        for index, batch in enumerate(batches):
            for name in sorted(implementations, reverse=bool(index % 2)):  # alternate which goes first
                member, optimizer, attention = implementations[name]
                torch.manual_seed(index)  # the same dropout masks and samples for both
                started = time.perf_counter()
                with attention():
                    step(batch, member, optimizer)
                if index:  # the first batch warms up
                    seconds[name].append(time.perf_counter() - started)
        ratios = [fast / slow for fast, slow in zip(seconds["hand_written"], seconds["autograd"], strict=True)]
        print(json.dumps({**common, "step": f"{kind}_attention_comparison", "steps": len(ratios),
                          "hand_written_median_seconds": round(statistics.median(seconds["hand_written"]), 3),
                          "autograd_median_seconds": round(statistics.median(seconds["autograd"]), 3),
                          "median_ratio": round(statistics.median(ratios), 3),
                          "ratio_range": [round(min(ratios), 2), round(max(ratios), 2)]}), flush=True)
    same = all(torch.equal(a, b) for a, b in zip(decoder.state_dict().values(), reference_decoder.state_dict().values(), strict=True))
    print(json.dumps({**common, "step": "attention_comparison_check", "weights_identical_after_all_steps": same}))


if __name__ == "__main__":
    main()
