"""Training speed of a preset on the cached features: seconds per cross-entropy and self-critical step,
the epoch times they project to, and where each kind of step spends its time (torch profiler).

    python benchmarks/bench_training.py configs/best.yaml --steps 20 [--threads 2] [--weights runs/best] [--validation] [--set model.layers=3 ...]

`--weights` starts from a trained run's decoder, so self-critical samples have the lengths they have in training
(an untrained decoder samples captions of the maximum length). `--validation` also times the dev evaluation run after
each epoch, with its teacher-forced pass (as after a cross-entropy epoch) and without (as after a self-critical one).

Prints one JSON line per measurement. Needs `captioner prepare` and `captioner features` done first.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from captioner.checkpoint import load_tensors
from captioner.config import load_config
from captioner.data.flickr import load_prepared
from captioner.model import build_decoder
from captioner.pipeline import open_prepared_features
from captioner.train import _load_split, caption_loss, self_critical_loss, validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each kind (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--weights", help="a run folder whose decoder weights to start from (its config must match)")
    parser.add_argument("--validation", action="store_true", help="also time one dev evaluation with and without its teacher-forced pass")
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

    def cross_entropy_step(batch) -> None:
        grid, captions, lengths, image_index, _ = batch
        decoder.train()
        loss = caption_loss(decoder(grid, captions, lengths, image_index), config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def self_critical_step(batch) -> None:
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


if __name__ == "__main__":
    main()
