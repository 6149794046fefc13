"""Score beam sizes and length penalties on the dev split: one JSON line per setting.

    python benchmarks/tune_decoding.py runs/default --beams 1,3,5 --length-penalties 0,0.5,1

Decoding choices are made on dev only; the test split is scored once, with the chosen setting.
"""
from __future__ import annotations

import argparse
import json

from captioner.evaluate import evaluate_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--beams", default="3")
    parser.add_argument("--length-penalties", default="0,0.5,1")
    parser.add_argument("--max-images", type=int, default=0)
    args = parser.parse_args()
    for beam in [int(value) for value in args.beams.split(",")]:
        for penalty in [float(value) for value in args.length_penalties.split(",")]:
            metrics = evaluate_run(args.run, split="dev", beam_size=beam, length_penalty=penalty, max_images=args.max_images,
                                   output_dir=f"{args.run}/tune-dev/beam{beam}-lp{penalty}", pictures=False)
            scores = {name: round(value, 4) for name, value in metrics["scores"].items() if value is not None}
            print(json.dumps({"split": "dev", "beam": beam, "length_penalty": penalty, **scores,
                              "decode_seconds": round(metrics["decode_seconds"], 1)}), flush=True)


if __name__ == "__main__":
    main()
