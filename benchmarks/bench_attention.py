"""What the LSTM's hand-written attention backward saves per training step: the same real batches run in turn through
`AdditiveAttention.apply` and through autograd over the same plain ops (`AdditiveAttention.reference`), one
cross-entropy or self-critical step each, so that the machine's changing speed hits both alike.

    python benchmarks/bench_attention.py configs/best.yaml [--steps 16] [--threads 2] [--weights runs/best]

`--weights` starts from a trained run's decoder, so self-critical samples have their training lengths. The two
decoders start from the same weights and see the same batches and random numbers, so they stay equal bit for bit;
the script checks that at the end. Prints one JSON line per kind of step. Needs `captioner prepare` and
`captioner features` done first.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path
from unittest import mock

import torch

from captioner.checkpoint import load_tensors
from captioner.config import load_config
from captioner.data.flickr import load_prepared
from captioner.model import AdditiveAttention, build_decoder
from captioner.pipeline import open_prepared_features
from captioner.train import _load_split, caption_loss, self_critical_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=16, help="timed steps of each kind and implementation (after one warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--weights", help="a run folder whose decoder weights to start from (its config must match)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config)
    _, splits, vocabulary = load_prepared(config.data.prepared_dir)
    cache = open_prepared_features(config, splits)
    data = _load_split(cache, splits, "train", vocabulary, config, (args.steps + 1) * config.train.images_per_batch)
    reward = data.reward(config.train)
    batches = list(data.batches(config.train.images_per_batch, shuffle_seed=0))
    torch.manual_seed(0)
    first = build_decoder(config.model, vocab_size=len(vocabulary), encoder_channels=int(data.grid.shape[2]))
    if first.parallel_teacher_forcing:
        parser.error("the attention this compares is the LSTM's (model.type lstm-attention)")
    if args.weights:
        first.load_state_dict(load_tensors(Path(args.weights) / "model.safetensors"))
    second = build_decoder(config.model, vocab_size=len(vocabulary), encoder_channels=int(data.grid.shape[2]))
    second.load_state_dict(first.state_dict())
    implementations = {"hand_written": (first, contextlib.nullcontext),
                       "autograd": (second, lambda: mock.patch.object(AdditiveAttention, "apply", AdditiveAttention.reference))}
    optimizers = {name: torch.optim.AdamW(decoder.parameters(), lr=1e-5) for name, (decoder, _) in implementations.items()}
    for kind in ("cross_entropy", "self_critical"):
        seconds: dict[str, list[float]] = {name: [] for name in implementations}
        for index, (grid, captions, lengths, image_index, rows) in enumerate(batches[: args.steps + 1]):
            for name in sorted(implementations, reverse=bool(index % 2)):  # alternate which goes first
                decoder, patched = implementations[name]
                torch.manual_seed(index)  # the same dropout masks and samples for both
                started = time.perf_counter()
                with patched():
                    if kind == "cross_entropy":
                        decoder.train()
                        loss = caption_loss(decoder(grid, captions, lengths, image_index), config)
                    else:
                        loss, _ = self_critical_loss(decoder, grid, [data.keys[row] for row in rows], reward, vocabulary, config)
                    optimizers[name].zero_grad(set_to_none=True)
                    loss.backward()
                optimizers[name].step()
                if index:  # the first batch warms up
                    seconds[name].append(time.perf_counter() - started)
        ratios = [fast / slow for fast, slow in zip(seconds["hand_written"], seconds["autograd"])]
        print(json.dumps({"config": args.config, "weights": args.weights, "step": kind, "threads": torch.get_num_threads(),
                          "steps": args.steps, "hand_written_median_seconds": round(statistics.median(seconds["hand_written"]), 3),
                          "autograd_median_seconds": round(statistics.median(seconds["autograd"]), 3),
                          "median_ratio": round(statistics.median(ratios), 3),
                          "ratio_range": [round(min(ratios), 2), round(max(ratios), 2)]}), flush=True)
    same = all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    print(json.dumps({"step": "check", "weights_identical_after_all_steps": same}))


if __name__ == "__main__":
    main()
