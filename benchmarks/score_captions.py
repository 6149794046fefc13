"""Score captions.json files (image name -> caption) against a prepared split: every metric and the mean length.

    python benchmarks/score_captions.py dev/b1/captions.json dev/base/captions.json --split dev

For captions written elsewhere, e.g. by benchmarks/gpu_harness.py, which skips METEOR (it needs Java).
"""
from __future__ import annotations

import argparse
import json
import sys

from captioner.checkpoint import read_json
from captioner.config import DataConfig
from captioner.data.flickr import load_prepared
from captioner.errors import CaptionerError
from captioner.metrics import score_captions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("captions", nargs="+", help="captions.json files")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--prepared", default=DataConfig().prepared_dir)
    args = parser.parse_args()
    _, splits, _ = load_prepared(args.prepared)
    references = {name: [" ".join(words) for words in captions] for name, captions in splits[args.split].items()}
    for path in args.captions:
        try:
            candidates = read_json(path)
            if not isinstance(candidates, dict) or not candidates:
                raise CaptionerError(f"{path} is not a non-empty mapping of image names to captions")
            unknown = [name for name in candidates if name not in references]
            if unknown:
                raise CaptionerError(f"{path}: {unknown[0]} is not in the {args.split} split")
        except CaptionerError as error:
            print(f"error: {error}", file=sys.stderr)
            continue
        scores = score_captions({name: references[name] for name in candidates}, candidates, spice=False)
        words = sum(len(caption.split()) for caption in candidates.values()) / len(candidates)
        print(json.dumps({"captions": path, "split": args.split, "images": len(candidates),
                          **{name: round(value, 4) for name, value in scores.items() if value is not None},
                          "mean_words": round(words, 2)}), flush=True)


if __name__ == "__main__":
    main()
