"""Inference speed of a trained run: one JSON line per measurement.

    python benchmarks/bench_inference.py runs/default [--images DIR] [--repeats 30] [--beam 3] [--rerank-neighbours N]
    python benchmarks/bench_inference.py runs/default --compare-grounding   # what grounding costs, side by side

Single-image latency (median, p90) and batch-of-16 throughput, with encoder and decoder time
measured separately. Images are real Flickr8k test photos (or any folder), read from disk each time.
--compare-grounding decodes every photo of the single-image round twice more, with grounding on and off
(in alternating order, so a load that drifts during the run touches both alike), and prints their medians.
Decoding gets the photos, as the product's callers do, so a caption that asks the person detector pays for it;
one line says what one question costs and how many of the single-image photos asked it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from captioner import people
from captioner.data.images import list_images
from captioner.inference import Captioner


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def timed(function, *args, **kwargs):
    """`function(*args, **kwargs)` and the seconds it took."""
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--images", default=os.path.join(os.environ.get("FLICKR8K_DIR", "../shared/flickr8k"), "images"))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--rerank-neighbours", type=int, default=None, help="consensus reranking (default: the run's)")
    parser.add_argument("--flip-ensemble", action=argparse.BooleanOptionalAction, default=None,
                        help="decode each photo with its mirror image too (default: the run's)")
    parser.add_argument("--grounding", action=argparse.BooleanOptionalAction, default=None,
                        help="check candidates against the encoder's classifier (default: the run's)")
    parser.add_argument("--compare-grounding", action="store_true", help="also time each photo with grounding on and off")
    args = parser.parse_args()
    options = {"beam_size": args.beam, "rerank_neighbours": args.rerank_neighbours, "flip_ensemble": args.flip_ensemble,
               "grounding": args.grounding}

    captioner = Captioner.load(args.run)
    images = list_images(args.images)[: max(args.repeats, 16 * 4)]
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    settings = {"run": args.run, "beam": args.beam, "rerank_neighbours": args.rerank_neighbours, "flip_ensemble": args.flip_ensemble,
                "grounding": args.grounding}
    captioner.caption(images[:2], **options)  # warm-up (and loading the caption memory when reranking)

    asked: list[Path] = []  # the photos whose caption asked the person detector (captioner.people)

    class Noted(list):  # the batch's photos, as decode takes them, noting each one it reads again
        def __getitem__(self, index):
            asked.append(super().__getitem__(index))
            return asked[-1]

    encode_times, decode_times, totals = [], [], []
    compared: dict[bool, list[float]] = {True: [], False: []}  # grounding on / off: encode + decode seconds
    for number, path in enumerate(images[: args.repeats]):
        views, encode_seconds = timed(captioner.encode, [path], flip_ensemble=args.flip_ensemble)
        _, decode_seconds = timed(captioner.decode, *views, photos=Noted([path]), **options)
        encode_times.append(encode_seconds)
        decode_times.append(decode_seconds)
        totals.append(encode_seconds + decode_seconds)
        if args.compare_grounding:
            for grounding in (True, False) if number % 2 else (False, True):
                _, seconds = timed(captioner.decode, *views, photos=Noted([path]), **{**options, "grounding": grounding})
                compared[grounding].append(encode_seconds + seconds)
    if args.compare_grounding:
        on, off = statistics.median(compared[True]), statistics.median(compared[False])
        print(json.dumps({
            "measurement": "grounding_cost_single_image_ms", **settings, "images": len(compared[True]),
            "median_grounded": round(1000 * on, 1), "median_ungrounded": round(1000 * off, 1),
            "grounded_over_ungrounded": round(on / off, 3), **machine,
        }))
    asked_single = len(set(asked))
    detector = people.detector()
    if detector is not None:  # what one question costs (reading the photo again included), asked or not
        detector.seen(people.read(images[0]))  # the graphs' first run
        _, detector_seconds = zip(*(timed(lambda path=path: detector.seen(people.read(path)))
                                    for path in images[: args.repeats]), strict=True)
        print(json.dumps({
            "measurement": "person_detector_ms", **settings, "images": len(detector_seconds),
            "median": round(1000 * statistics.median(detector_seconds), 1), "p90": round(1000 * percentile(list(detector_seconds), 0.9), 1),
            "photos_that_asked_it": asked_single, **machine,
        }))
    print(json.dumps({
        "measurement": "single_image_latency_ms", **settings, "images": len(totals),
        "median": round(1000 * statistics.median(totals), 1), "p90": round(1000 * percentile(totals, 0.9), 1),
        "encoder_median": round(1000 * statistics.median(encode_times), 1),
        "decoder_median": round(1000 * statistics.median(decode_times), 1), **machine,
    }))

    batch_encode, batch_decode, count = 0.0, 0.0, 0
    for start in range(0, len(images) - 15, 16):
        batch = images[start : start + 16]
        views, encode_seconds = timed(captioner.encode, batch, flip_ensemble=args.flip_ensemble)
        _, decode_seconds = timed(captioner.decode, *views, photos=Noted(batch), **options)
        batch_encode += encode_seconds
        batch_decode += decode_seconds
        count += len(batch)
    print(json.dumps({
        "measurement": "batch16_throughput", **settings, "images": count,
        "images_per_second": round(count / (batch_encode + batch_decode), 2),
        "encoder_ms_per_image": round(1000 * batch_encode / count, 1),
        "decoder_ms_per_image": round(1000 * batch_decode / count, 1), **machine,
    }))


if __name__ == "__main__":
    main()
