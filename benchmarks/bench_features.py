"""Feature-extraction speed: milliseconds per image for the encoder network in both memory layouts and
several batch sizes, for preprocessing (decode + resize), and end to end through `extract_features`.

    python benchmarks/bench_features.py ../shared/flickr8k/images [--encoder efficientnet-lite2] [--images 96]

Prints one JSON line per measurement. The cache of the end-to-end measurement goes to a temporary folder.
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from captioner.data.images import load_image
from captioner.encoders import Encoder
from captioner.features import extract_features


def milliseconds_per_image(work, images: int, repeats: int = 3) -> float:
    """Median over `repeats` timed calls of `work()` (after one warm-up call), per image."""
    work()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return 1000 * statistics.median(timings) / images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images_dir", type=Path)
    parser.add_argument("--encoder", default="efficientnet-lite2")
    parser.add_argument("--images", type=int, default=96, help="photos for the preprocessing and end-to-end runs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = sorted(path.name for path in args.images_dir.glob("*.jpg"))[: args.images]
    if not names:
        raise SystemExit(f"no .jpg photos in {args.images_dir}")
    encoder = Encoder(args.encoder)
    side = encoder.spec.input_size
    print(json.dumps({"encoder": args.encoder, "input_size": side, "threads": torch.get_num_threads()}))

    for layout, memory_format in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
        network = encoder.network.to(memory_format=memory_format)
        for batch in (1, 4, 8, 16, 32):
            pixels = torch.randn(batch, 3, side, side).contiguous(memory_format=memory_format)
            with torch.inference_mode():
                cost = milliseconds_per_image(functools.partial(network, pixels), batch)
            print(json.dumps({"measure": "encoder network", "layout": layout, "batch": batch, "ms_per_image": round(cost, 1)}))
    encoder.network.to(memory_format=torch.channels_last)  # back to what Encoder uses

    paths = [args.images_dir / name for name in names]
    cost = milliseconds_per_image(lambda: [encoder.preprocess(load_image(path)) for path in paths], len(paths), repeats=1)
    print(json.dumps({"measure": "decode + resize + normalise", "ms_per_image": round(cost, 1)}))

    for batch in (8, 32):
        with tempfile.TemporaryDirectory() as cache_dir:
            started = time.perf_counter()
            extract_features(names, args.images_dir, encoder_name=args.encoder, cache_dir=cache_dir, batch_size=batch, show_progress=False)
            seconds = time.perf_counter() - started
        print(json.dumps({"measure": "extract_features", "batch": batch, "images": len(names),
                          "images_per_second": round(len(names) / seconds, 1)}))


if __name__ == "__main__":
    main()
