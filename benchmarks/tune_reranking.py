"""Score consensus-reranking settings on the dev split: one JSON line per setting.

    python benchmarks/tune_reranking.py runs/best --beams 3,5 --neighbours 5,10,15,20 --weights 0.5,1,2,3,5

Each beam size is decoded once, every beam candidate kept (each photo together with its mirror image where
the run's decode.flip_ensemble or --flip-ensemble says so), then reranked with every number of neighbours
and weight; those lines carry BLEU-4 and CIDEr (no Java). The best setting per beam by
CIDEr, and no reranking, are then scored with every metric (METEOR too). Decoding choices are made on
dev only; the test split is scored once, with the chosen setting.
"""
from __future__ import annotations

import argparse
import json
import time

from captioner.data.flickr import load_prepared
from captioner.inference import Captioner
from captioner.metrics import fast_scores, score_captions
from captioner.pipeline import extract_mirrored_features, open_prepared_features


def _values(text: str, kind: type) -> list:
    return [kind(value) for value in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--beams", default="3,5")
    parser.add_argument("--neighbours", default="5,10,15,20")
    parser.add_argument("--weights", default="0.5,1,2,3,5")
    parser.add_argument("--max-images", type=int, default=0)
    parser.add_argument("--flip-ensemble", action=argparse.BooleanOptionalAction, default=None,
                        help="decode each photo together with its mirror image (default: the run's decode.flip_ensemble)")
    args = parser.parse_args()
    captioner = Captioner.load(args.run)
    config, vocabulary = captioner.config, captioner.vocabulary
    flips = captioner.decode_settings(flip_ensemble=args.flip_ensemble).flip_ensemble
    images_dir, splits, _ = load_prepared(config.data.prepared_dir)
    cache = open_prepared_features(config, splits)
    names = cache.available(sorted(splits["dev"]))[: args.max_images or None]
    mirrored_cache = extract_mirrored_features(config, names, images_dir) if flips else None
    if mirrored_cache is not None:
        names = mirrored_cache.available(names)
    grid = cache.load(names)
    mirrored = mirrored_cache.load(names) if mirrored_cache is not None else None
    references = {name: [" ".join(words) for words in splits["dev"][name]] for name in names}

    def texts(hypotheses) -> dict[str, str]:
        return {name: " ".join(vocabulary.decode(ranked[0].token_ids)) for name, ranked in zip(names, hypotheses, strict=True)}

    def report(setting: dict, candidates: dict[str, str], *, full: bool = False) -> None:
        scores = score_captions(references, candidates, spice=False) if full else fast_scores(references, candidates)
        print(json.dumps({"split": "dev", **setting, **{name: round(value, 4) for name, value in scores.items() if value is not None}}),
              flush=True)

    for beam in _values(args.beams, int):
        started = time.perf_counter()
        decoded = [hypotheses for start in range(0, len(names), 50)
                   for hypotheses in captioner.beam_hypotheses(grid[start : start + 50],
                                                               None if mirrored is None else mirrored[start : start + 50],
                                                               beam_size=beam, n_best=beam, flip_ensemble=flips)]
        seconds = time.perf_counter() - started
        print(f"beam {beam}{' with flips' if flips else ''}: decoded {len(names)} dev images in {seconds:.1f} s", flush=True)
        plain = texts(decoded)
        best = (-1.0, {}, plain)
        for neighbours in _values(args.neighbours, int):
            for weight in _values(args.weights, float):
                candidates = texts(captioner.memory.rerank(grid, decoded, neighbours=neighbours, weight=weight))
                setting = {"beam": beam, "flip_ensemble": flips, "rerank_neighbours": neighbours, "rerank_weight": weight}
                cider = fast_scores(references, candidates)["CIDEr"]
                print(json.dumps({"split": "dev", **setting, "CIDEr": round(cider, 4)}), flush=True)
                if cider > best[0]:
                    best = (cider, setting, candidates)
        report({"beam": beam, "flip_ensemble": flips, "rerank_neighbours": 0}, plain, full=True)
        report({**best[1], "best": True}, best[2], full=True)


if __name__ == "__main__":
    main()
