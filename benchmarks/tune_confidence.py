"""Which signals tell a right caption from a wrong one on the real photos' dev half: one JSON object.

    python benchmarks/tune_confidence.py runs/default

For each dev photo the run's caption (its own decode settings) is scored right or wrong on its main subject
(`real_photos.scoring`), and four candidate confidence signals are computed: the caption's mean log-probability
per token; the classifier's agreement (the caption names one of the three most probable specific recognised
words); the classifier's top specific word probability; and familiarity, the cosine similarity of the photo's
pooled features to the nearest training photo (the reranking memory). Printed per signal: its ROC AUC for
"the caption is right", and the share of the wrong captions that fall among the least confident 30% (the
issue's target is at least 70% on the test half). A first look, to choose what a fitted confidence combines.
"""
from __future__ import annotations

import argparse
import json

import torch
from eval_real_photos import photo_files
from eval_recognition import GENERIC
from real_photos.scoring import load_photos, score_photo

from captioner.data.images import load_image
from captioner.grounding import Recogniser
from captioner.inference import Captioner


def roc_auc(values: list[float], right: list[bool]) -> float | None:
    """The chance that a right caption scores above a wrong one (ties count half)."""
    positives = [value for value, ok in zip(values, right, strict=True) if ok]
    negatives = [value for value, ok in zip(values, right, strict=True) if not ok]
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def wrong_in_least_confident(values: list[float], right: list[bool], share: float = 0.3) -> float | None:
    """Of the wrong captions, the fraction among the `share` least confident."""
    wrong = sum(not ok for ok in right)
    if not wrong:
        return None
    order = sorted(range(len(values)), key=lambda index: values[index])[: round(share * len(values))]
    return sum(not right[index] for index in order) / wrong


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    args = parser.parse_args()
    captioner = Captioner.load(args.run)
    recogniser = Recogniser.for_encoder(captioner.encoder)
    photos = load_photos(split="dev")
    paths = photo_files(photos)
    grid, mirrored = captioner.encode([load_image(path) for path in paths])
    captions = captioner.decode(grid, mirrored)
    recognitions = recogniser.recognise(grid)
    familiarity = captioner.memory.familiarity(grid)  # (photos,)
    right = [score_photo(photo, caption.text).subject_hit for photo, caption in zip(photos, captions, strict=True)]
    signals: dict[str, list[float]] = {"mean_log_probability": [], "classifier_agreement": [], "classifier_top_probability": [],
                                       "familiarity": [float(value) for value in familiarity]}
    for caption, recognition in zip(captions, recognitions, strict=True):
        specific = [(word, probability) for word, probability in recognition.words.items() if word not in GENERIC]
        named = set(caption.tokens)
        signals["mean_log_probability"].append(caption.log_probability / (len(caption.tokens) + 1))
        signals["classifier_agreement"].append(float(any(set(word.split()) <= named for word, _ in specific[:3])))
        signals["classifier_top_probability"].append(specific[0][1] if specific else 0.0)
    result = {"run": args.run, "split": "dev", "photos": len(photos), "right": sum(right),
              "signals": {name: {"roc_auc": round(roc_auc(values, right), 3),
                                 "wrong_in_least_confident_30pct": round(wrong_in_least_confident(values, right), 3)}
                          for name, values in signals.items()}}
    print(json.dumps(result))


if __name__ == "__main__":
    with torch.inference_mode():
        main()
