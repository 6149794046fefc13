"""Choose the grounding thresholds (captioner.grounded.GroundingSettings) on the dev halves: one JSON line each.

    python benchmarks/tune_grounding.py runs/default [--flickr-images 300] [--familiar 0.55,0.6,0.65] [--subject 0.35,0.45]

The run decodes each dev photo once (its own decode settings, every beam candidate kept; cached in
data/tune-cache); each setting then only re-chooses among those candidates, so a sweep of hundreds of
settings takes a minute. Printed per setting:
the real photos' dev-half subject accuracy, invented-person and invented-animal rates and CIDEr, and Flickr8k dev
BLEU-4 and CIDEr (fast scores: no Java, plain words) on its first --flickr-images photos, beside the ungrounded
captions' figures. The test halves are not read.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from eval_real_photos import photo_files
from real_photos.scoring import load_photos, score_photo, summarise

from captioner import people
from captioner.data.flickr import load_prepared
from captioner.data.images import load_image
from captioner.grounded import GroundingSettings, choose, needs_people
from captioner.grounding import Recognition
from captioner.inference import Captioner
from captioner.io import atomic_write_text
from captioner.metrics import fast_scores

CACHE_DIR = Path(__file__).resolve().parents[1] / "data" / "tune-cache"


@dataclass
class DevPhoto:
    key: str
    candidates: list[list[str]]  # the decoder's candidates, tokenised, in ranking order
    recognition: Recognition
    familiarity: float | None
    people: bool | None = None  # the person detector's answer (captioner.people), used where the product asks it

    def grounded_recognition(self, settings: GroundingSettings) -> Recognition:
        """The recognition as the product's grounding sees it: with the detector's answer where it asks."""
        if self.people is not None and needs_people(self.candidates, self.recognition, self.familiarity, settings):
            return dataclasses.replace(self.recognition, people_seen=self.people)
        return self.recognition


def decode_candidates(captioner: Captioner, images: list, *, batch: int = 25) -> list[DevPhoto]:
    """Every beam candidate of each image, with what the classifier recognised and the photo's familiarity."""
    photos = []
    beam = captioner.config.decode.beam_size
    flips = captioner.config.decode.flip_ensemble
    for start in range(0, len(images), batch):
        keys = [key for key, _ in images[start : start + batch]]
        grid, mirrored = captioner.encode([image for _, image in images[start : start + batch]])
        captions = captioner.decode(grid, mirrored, n_best=beam, grounding=False)
        recognitions = captioner.recogniser.recognise(grid, mirrored if flips else None)
        for key, caption, recognition, familiarity in zip(keys, captions, recognitions, captioner.familiarity(grid), strict=True):
            candidates = [caption.tokens] + [other.tokens for other in caption.alternatives]
            photos.append(DevPhoto(key, candidates, recognition, familiarity))
    return photos


def dev_sets(captioner: Captioner, flickr_images: int):
    """The real photos' dev half (records, decoded) and Flickr8k dev's first images (references, decoded).

    The decoded candidates (and the person detector's answers) are kept in data/tune-cache, one file per set,
    keyed by the run's weights and decode settings and by the photos, so the sweeps and
    benchmarks/fit_confidence.py decode each dev photo once."""
    real = load_photos(split="dev")
    images_dir, splits, _ = load_prepared(captioner.config.data.prepared_dir)
    names = sorted(splits["dev"])[:flickr_images]
    references = {name: [" ".join(words) for words in splits["dev"][name]] for name in names}
    flickr_decoded = _decoded(captioner, "flickr", names, [images_dir / name for name in names])
    real_decoded = _decoded(captioner, "real", [photo["id"] for photo in real], photo_files(real))
    return real, real_decoded, references, flickr_decoded


def _decoded(captioner: Captioner, part: str, keys: list[str], paths: list[Path]) -> list[DevPhoto]:
    weights = captioner.run_dir / "model.safetensors"
    key = hashlib.sha256(json.dumps([weights.stat().st_size, weights.stat().st_mtime_ns, str(captioner.run_dir.resolve()),
                                     vars(captioner.config.decode), keys]).encode()).hexdigest()[:16]
    cache = CACHE_DIR / f"{captioner.run_dir.name}-{part}-{key}.json"
    if cache.is_file():
        return [_photo(item) for item in json.loads(cache.read_text())]
    # the real photos are decoded from memory, Flickr8k's from their paths (as captioner.caption reads them)
    images = [(name, load_image(path) if part == "real" else path) for name, path in zip(keys, paths, strict=True)]
    decoded = decode_candidates(captioner, images)
    detector = people.detector()
    if detector is None:
        raise SystemExit("error: the person detector (mediapipe) is not installed; `make setup` installs it")
    for photo, path in zip(decoded, paths, strict=True):
        photo.people = detector.seen(people.read(path))
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache, json.dumps([_record(photo) for photo in decoded]))
    return decoded


def _record(photo: DevPhoto) -> dict:
    recognition = photo.recognition
    return {"key": photo.key, "candidates": photo.candidates, "familiarity": photo.familiarity,
            "words": recognition.words, "classes": recognition.classes, "kinds": recognition.kinds, "people": photo.people}


def _photo(item: dict) -> DevPhoto:
    recognition = Recognition(words=item["words"], classes=[tuple(entry) for entry in item["classes"]], kinds=item["kinds"])
    return DevPhoto(item["key"], item["candidates"], recognition, item["familiarity"], item.get("people"))


def chosen(decoded: list[DevPhoto], settings: GroundingSettings | None) -> list[str]:
    if settings is None:
        return [" ".join(photo.candidates[0]) for photo in decoded]
    return [choose(photo.candidates, photo.grounded_recognition(settings), photo.familiarity, settings).text for photo in decoded]


def report(real, real_decoded, references, flickr_decoded, settings: GroundingSettings | None) -> dict:
    real_texts = chosen(real_decoded, settings)
    summary = summarise(real, [score_photo(photo, text) for photo, text in zip(real, real_texts, strict=True)])
    real_scores = fast_scores({photo["id"]: photo["references"] for photo in real},
                              {photo["id"]: text for photo, text in zip(real, real_texts, strict=True)})
    scores = fast_scores(references, dict(zip(references, chosen(flickr_decoded, settings), strict=True)))
    return {"settings": None if settings is None else vars(settings),
            "real_dev_subject_accuracy": summary["subject_accuracy"], "real_dev_invented_person_rate": summary["invented_person_rate"],
            "real_dev_invented_animal_rate": summary["invented_animal_rate"], "real_dev_CIDEr": round(real_scores["CIDEr"], 4),
            "flickr_dev_BLEU-4": round(scores["BLEU-4"], 4), "flickr_dev_CIDEr": round(scores["CIDEr"], 4)}


def floats(text: str) -> list[float]:
    return [float(value) for value in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--flickr-images", type=int, default=1000)
    parser.add_argument("--familiar", type=floats, default=floats("0.55,0.6,0.62,0.65,0.7,2"), help="2: every photo unfamiliar")
    parser.add_argument("--subject", type=floats, default=floats("0.35,0.45,0.55,0.65"))
    parser.add_argument("--support", type=floats, default=floats("0.05,0.1,0.2"))
    parser.add_argument("--person-evidence", type=floats, default=floats("0.03,0.05,0.1"))
    args = parser.parse_args()
    captioner = Captioner.load(args.run)
    if captioner.recogniser is None:
        raise SystemExit(f"error: {args.run}'s encoder has no ImageNet head or no grounding entry in grounding.json")
    sets = dev_sets(captioner, args.flickr_images)
    print(json.dumps(report(*sets, None)), flush=True)
    for familiar, subject, support, evidence in itertools.product(args.familiar, args.subject, args.support, args.person_evidence):
        settings = GroundingSettings(familiar=familiar, subject=subject, support=support, person_evidence=evidence)
        print(json.dumps(report(*sets, settings)), flush=True)


if __name__ == "__main__":
    main()
