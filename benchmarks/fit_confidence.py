"""Fit the confidence model (captioner.confidence) on the dev halves and draw its reliability plot.

    python benchmarks/fit_confidence.py runs/default [--flickr-images 300] [--write] [--plot docs/confidence-reliability.png]

Each dev photo is captioned as the product does (grounded with the encoder's settings in grounding.json) and
labelled right or wrong: on the real photos, whether the caption names the main subject (the benchmark's own
scoring); on Flickr8k dev, whether the caption's subject (its first person, animal or recognised-object word)
is in the photo's references (for a person word: whether the references name any person). A logistic model of
that label on the signals is fitted on both together, each set weighing the same; --write stores it in
src/captioner/grounding.json. Printed: the weights, and on each dev set the AUC, the share of the wrong
captions among the least confident 30%, and at thresholds 0.3-0.9 the share marked "needs review", how many of
those were in fact wrong (precision) and how many of the wrong ones were marked (recall); then the threshold of
least expected cost (DOUBTFUL_BELOW was set to it). The test halves are not read (benchmarks/eval_real_photos.py
scores them once).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from real_photos.scoring import score_photo
from tune_grounding import DevPhoto, dev_sets

from captioner.confidence import DOUBTFUL_BELOW, fit
from captioner.grounded import PERSON_WORDS, SETTINGS_FILE, _names, choose, named_animals, names_person, signals, singular
from captioner.inference import Captioner
from captioner.io import atomic_write_text
from captioner.viz import plot_reliability

ROOT = Path(__file__).resolve().parents[1]


def caption_signals(photo: DevPhoto, captioner: Captioner) -> tuple[str, dict[str, float]]:
    recognition = photo.grounded_recognition(captioner.grounding)
    choice = choose(photo.candidates, recognition, photo.familiarity, captioner.grounding)
    words = choice.text.split()
    return choice.text, signals(words, recognition, photo.familiarity, is_fallback=choice.index is None,
                                person_evidence=captioner.grounding.person_evidence)


def flickr_label(text: str, references: list[str], recognised: set[str]) -> bool | None:
    """Whether a Flickr8k caption's subject is in its references; None when it names no subject word."""
    words = text.split()
    reference_forms = [set().union(*map(singular, reference.split())) for reference in references]
    for word in words:
        forms = singular(word)
        if forms & PERSON_WORDS:
            return any(names_person(reference.split()) for reference in references)
        if named_animals([word]) or _names([word], recognised):
            return any(forms & reference for reference in reference_forms)
    return None


def auc(scores: list[float], labels: list[bool]) -> float:
    right = [score for score, label in zip(scores, labels, strict=True) if label]
    wrong = [score for score, label in zip(scores, labels, strict=True) if not label]
    pairs = [(a > b) + 0.5 * (a == b) for a in right for b in wrong]
    return sum(pairs) / len(pairs) if pairs else float("nan")


def wrong_in_least_confident(scores: list[float], labels: list[bool], share: float = 0.3) -> float:
    """The fraction of the wrong captions that are among the least confident `share` of all captions."""
    order = sorted(range(len(scores)), key=lambda index: scores[index])[: round(share * len(scores))]
    wrong = sum(not label for label in labels)
    return sum(not labels[index] for index in order) / wrong if wrong else float("nan")


def flagged_precision(scores: list[float], labels: list[bool], below: float) -> dict[str, float]:
    """What marking the captions under `below` "needs review" does: the share flagged, the share of the flagged that
    were in fact wrong (precision), and the share of the wrong ones that got flagged (recall)."""
    flagged = [label for score, label in zip(scores, labels, strict=True) if score < below]
    wrong = sum(not label for label in labels)
    return {"below": below, "flagged": round(len(flagged) / len(labels), 4),
            "precision": round(sum(not label for label in flagged) / len(flagged), 4) if flagged else float("nan"),
            "recall": round(sum(not label for label in flagged) / wrong, 4) if wrong else float("nan")}


REVIEW_THRESHOLDS = [round(0.3 + 0.05 * step, 2) for step in range(13)]  # 0.3 ... 0.9
MISS_COST = 2  # a wrong caption that goes out unflagged misleads a blind reader: it costs two needless reviews


def review_threshold(scored: dict[str, tuple[list[float], list[bool]]]) -> tuple[float, dict[float, float]]:
    """The threshold with the least expected cost per photo (MISS_COST per wrong caption not flagged, 1 per right one
    flagged), each dev set weighing the same; ties go to the lower threshold (fewer reviews)."""
    costs = {}
    for below in REVIEW_THRESHOLDS:
        per_set = []
        for scores, labels in scored.values():
            missed = sum(not label and score >= below for score, label in zip(scores, labels, strict=True))
            needless = sum(label and score < below for score, label in zip(scores, labels, strict=True))
            per_set.append((MISS_COST * missed + needless) / len(labels))
        costs[below] = round(sum(per_set) / len(per_set), 4)
    return min(costs, key=lambda below: (costs[below], below)), costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--flickr-images", type=int, default=1000)
    parser.add_argument("--write", action="store_true", help="store the fitted model in src/captioner/grounding.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "confidence-reliability.png")
    args = parser.parse_args()
    captioner = Captioner.load(args.run)
    if captioner.grounding is None:
        raise SystemExit(f"error: {args.run}'s encoder has no grounding settings in grounding.json")
    real, real_decoded, references, flickr_decoded = dev_sets(captioner, args.flickr_images)
    rows: dict[str, tuple[list[dict[str, float]], list[bool]]] = {"real photos, dev": ([], []), "Flickr8k dev": ([], [])}
    for photo, decoded in zip(real, real_decoded, strict=True):
        text, values = caption_signals(decoded, captioner)
        rows["real photos, dev"][0].append(values)
        rows["real photos, dev"][1].append(score_photo(photo, text).subject_hit)
    for decoded in flickr_decoded:
        text, values = caption_signals(decoded, captioner)
        label = flickr_label(text, references[decoded.key], set(decoded.recognition.words))
        if label is not None:
            rows["Flickr8k dev"][0].append(values)
            rows["Flickr8k dev"][1].append(label)
    # each dev set counts as much as the other: 40 real photos against 300 Flickr8k ones
    model = fit([row for signals_, _ in rows.values() for row in signals_], [label for _, labels in rows.values() for label in labels],
                weights=[1 / len(labels) for _, labels in rows.values() for _ in labels])
    report = {"run": args.run, "model": model.to_dict()}
    scored = {}
    for name, (signals_, labels) in rows.items():
        scores = [model(row) for row in signals_]
        scored[name] = (scores, labels)
        report[name] = {"photos": len(labels), "subject_right": round(sum(labels) / len(labels), 4),
                        "mean_confidence": round(sum(scores) / len(scores), 4), "auc": round(auc(scores, labels), 4),
                        "wrong_in_least_confident_30%": round(wrong_in_least_confident(scores, labels), 4),
                        "needs_review_at": [flagged_precision(scores, labels, below) for below in REVIEW_THRESHOLDS]}
    chosen, costs = review_threshold(scored)
    report["needs_review_below"] = {"chosen": chosen, "in_use": DOUBTFUL_BELOW, "miss_cost": MISS_COST, "cost_per_photo": costs}
    plot_reliability(scored, args.plot)
    report["plot"] = str(args.plot)
    if args.write:
        settings = json.loads(SETTINGS_FILE.read_text())
        entry = settings["encoders"][captioner.config.encoder.name]
        entry["confidence"] = {**model.to_dict(), "fitted_on": {name: len(labels) for name, (_, labels) in rows.items()},
                               "fitted_with": f"benchmarks/fit_confidence.py {args.run} --flickr-images {args.flickr_images} --write"}
        atomic_write_text(SETTINGS_FILE, json.dumps(settings, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
