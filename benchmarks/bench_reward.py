"""Cost of each self-critical reward term per sampled caption: CIDEr-D, sentence BLEU-4, the METEOR-like score.

    python benchmarks/bench_reward.py [--images 3000] [--rounds 3]

The references are the prepared training captions as token ids, as in training. The candidates stand in for
samples: for each image one of its own captions cut to a random length and one caption of another image. Each
term scores every candidate once to fill its per-image tables (training fills them in its first epoch), then
the timed rounds follow. Prints one JSON line per term. Needs `captioner prepare` done first.
"""
from __future__ import annotations

import argparse
import json
import random
import time

from captioner.config import Config
from captioner.data.flickr import load_prepared
from captioner.reward import CiderD, SentenceBleu, SentenceMeteor, function_word_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    _, splits, vocabulary = load_prepared(Config().data.prepared_dir)
    references = {name: [vocabulary.encode(caption)[1:-1] for caption in captions] for name, captions in splits["train"].items()}
    generator = random.Random(0)
    keys = generator.sample(sorted(references), min(args.images, len(references)))
    candidates = []
    for key in keys:
        own = generator.choice(references[key])
        cut = own[: generator.randint(min(4, len(own)), len(own))]
        candidates += [(key, cut), (key, generator.choice(references[generator.choice(keys)]))]
    terms = {"CIDEr-D": CiderD(references), "BLEU-4": SentenceBleu(references),
             "METEOR-like": SentenceMeteor(references, function_word_ids(vocabulary.index))}
    for name, term in terms.items():
        for key, candidate in candidates:  # fills the per-image tables
            term.score(key, candidate)
        times = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            for key, candidate in candidates:
                term.score(key, candidate)
            times.append((time.perf_counter() - start) / len(candidates) * 1000)
        print(json.dumps({"term": name, "candidates": len(candidates), "ms_per_sample": [round(value, 4) for value in times]}))


if __name__ == "__main__":
    main()
