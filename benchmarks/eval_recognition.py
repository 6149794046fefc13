"""How often the encoder's own ImageNet classifier names the main subject of the real photos: one JSON object.

    python benchmarks/eval_recognition.py --split dev [--encoder efficientnet-lite2-multiscale] [--details]

For each photo of benchmarks/real_photos, `captioner.grounding.Recogniser` maps the classifier's class
probabilities to caption words; printed are the fractions of photos whose most probable word (top-1), or one
of the three most probable (top-3), is one of the photo's subject words, the same without the generic words
(animal, food, ...) that collect the small probabilities of hundreds of classes, and the mean person
evidence on the photos with and without a person. This is the upper bound of what grounding can add.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

from eval_real_photos import DEFAULT_IMAGES, photo_files
from real_photos.scoring import load_photos

from captioner.data.images import load_image
from captioner.encoders import Encoder
from captioner.errors import CaptionerError
from captioner.grounding import Recogniser

GENERIC = {"animal", "food", "fruit", "drink", "plant", "vehicle", "clothing", "instrument", "furniture", "building", "tool"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=["dev", "test", "all"], default="dev")
    parser.add_argument("--encoder", default="efficientnet-lite2-multiscale")
    parser.add_argument("--photos", default=str(DEFAULT_IMAGES), help="where fetch.py put the photos")
    parser.add_argument("--details", action="store_true", help="one entry per photo too")
    args = parser.parse_args()
    photos = [photo for photo in load_photos() if args.split in ("all", photo["split"])]
    paths = photo_files(photos, args.photos)
    encoder = Encoder(args.encoder)
    recogniser = Recogniser.for_encoder(encoder)
    if recogniser is None:
        sys.exit(f"error: encoder {args.encoder} has no ImageNet head to recognise with")
    details, hits = [], {"top1": [], "top3": [], "top1_specific": [], "top3_specific": []}
    evidence: dict[bool, list[float]] = {True: [], False: []}
    for photo, path in zip(photos, paths, strict=True):
        try:
            grid = encoder.encode(encoder.preprocess(load_image(path)).unsqueeze(0))
        except CaptionerError as error:
            sys.exit(f"error: {error}")
        [recognition] = recogniser.recognise(grid)
        ranked = list(recognition.words)
        specific = [word for word in ranked if word not in GENERIC]
        subject = set(photo["subject"])
        for name, candidates in (("top1", ranked[:1]), ("top3", ranked[:3]), ("top1_specific", specific[:1]),
                                 ("top3_specific", specific[:3])):
            hits[name].append(bool(subject & set(candidates)))
        evidence[photo["person"]].append(recognition.person_evidence)
        details.append({"id": photo["id"], "subject": photo["subject"][:3], **recognition.to_dict(words=3)})
    result = {"split": args.split, "photos": len(photos), "encoder": args.encoder,
              **{f"subject_in_{name}": round(statistics.mean(values), 4) for name, values in hits.items()},
              "mean_person_evidence": {"with_person": round(statistics.mean(evidence[True]), 4) if evidence[True] else None,
                                       "without_person": round(statistics.mean(evidence[False]), 4) if evidence[False] else None}}
    if args.details:
        result["details"] = details
    print(json.dumps(result))


if __name__ == "__main__":
    main()
