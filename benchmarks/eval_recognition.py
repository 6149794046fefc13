"""How often the encoder's own ImageNet classifier names the main subject of the real photos: one JSON object.

    python benchmarks/eval_recognition.py --split dev [--encoder efficientnet-lite2-multiscale] [--details]
    python benchmarks/eval_recognition.py --split dev --word-probe /tmp/wn/usr/share/wordnet   # and a Flickr8k one

For each photo of benchmarks/real_photos, `captioner.grounding.Recogniser` maps the classifier's class
probabilities to caption words; printed are the fractions of photos whose most probable word (top-1), or one
of the three most probable (top-3), is one of the photo's subject words, the same without the generic words
(animal, food, ...) that collect the small probabilities of hundreds of classes, and the mean person
evidence on the photos with and without a person. This is the upper bound of what grounding can add.

With --word-probe WORDNET_DIR (Debian's wordnet-base, as for scripts/build_imagenet_words.py: its noun index says
which caption words are nouns), the same figures for a second recogniser, trained here: a linear probe
(multi-label logistic regression) from the same pooled features to the nouns of Flickr8k's captions, fitted on
the training split's cached features (`captioner features`), a noun counting for a photo when two of its five
captions use it (a noun: in WordNet's noun index and not its adjective or adverb ones, so no "white" or "down").
It knows scenes ImageNet has no class for (mountain, lake, woods) and people, but only what
Flickr8k shows; `dog_in_top1_without_animal` and `person_in_top1_without_person` say how much of its prior it
carries onto photos that have neither.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

import torch
from eval_real_photos import DEFAULT_IMAGES, photo_files
from real_photos.scoring import load_photos

from captioner.config import load_config
from captioner.data.flickr import load_prepared
from captioner.data.images import load_image
from captioner.encoders import Encoder
from captioner.errors import CaptionerError
from captioner.grounded import DETERMINERS, NOT_NOUNS, PERSON_WORDS, singular
from captioner.grounding import Recogniser
from captioner.pipeline import open_prepared_features
from captioner.reranking import pooled_features

GENERIC = {"animal", "food", "fruit", "drink", "plant", "vehicle", "clothing", "instrument", "furniture", "building", "tool"}
MIN_TRAINING_PHOTOS = 15  # a noun the probe learns must describe at least this many training photos


class WordProbe:
    """Caption nouns from pooled encoder features: logistic regression fitted on Flickr8k's training photos."""

    def __init__(self, config_path: str, wordnet_dir: Path, encoder_name: str, *, steps: int = 400, weight_decay: float = 1e-4):
        config = load_config(config_path)
        if config.encoder.name != encoder_name:
            raise CaptionerError(f"{config_path} caches {config.encoder.name} features, not {encoder_name}'s: pass --config")
        _, splits, _ = load_prepared(config.data.prepared_dir)
        cache = open_prepared_features(config, splits)  # CaptionerError when `captioner features` has not run
        nouns = _lemmas(wordnet_dir / "index.noun") - _lemmas(wordnet_dir / "index.adj") - _lemmas(wordnet_dir / "index.adv")
        names = cache.available(sorted(splits["train"]))
        uses = [Counter(word for caption in splits["train"][name] for word in set(caption)) for name in names]  # captions per word
        photos_per_word = Counter(word for photo in uses for word in photo)
        self.words = sorted(word for word, count in photos_per_word.items() if count >= MIN_TRAINING_PHOTOS
                            and word in nouns and word not in NOT_NOUNS | DETERMINERS and not word.endswith("ing"))
        column = {word: index for index, word in enumerate(self.words)}
        targets = torch.zeros(len(names), len(self.words))  # (photos, words): used by two of the five captions
        for row, photo in enumerate(uses):
            for word, count in photo.items():
                if word in column and count >= 2:
                    targets[row, column[word]] = 1.0
        pooled = pooled_features(cache.load(names))  # (photos, channels): what the caption memory compares
        self.mean, self.std = pooled.mean(dim=0), pooled.std(dim=0) + 1e-6
        inputs = (pooled - self.mean) / self.std  # (photos, channels)
        self.linear = torch.nn.Linear(inputs.shape[1], len(self.words))
        with torch.no_grad():  # start from each word's base rate, so the few steps go to the features
            rate = targets.mean(dim=0).clamp(1e-4, 1 - 1e-4)
            self.linear.weight.zero_()
            self.linear.bias.copy_(torch.log(rate / (1 - rate)))
        optimiser = torch.optim.Adam(self.linear.parameters(), lr=3e-3)
        for _ in range(steps):
            optimiser.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(self.linear(inputs), targets)
            (loss + weight_decay * self.linear.weight.pow(2).sum()).backward()
            optimiser.step()

    @torch.inference_mode()
    def ranked(self, grid: torch.Tensor) -> list[str]:
        """(1, pixels, channels) grid -> the probe's nouns, most probable first."""
        probabilities = torch.sigmoid(self.linear((pooled_features(grid) - self.mean) / self.std))[0]
        return [self.words[index] for index in probabilities.argsort(descending=True).tolist()]


def _lemmas(index_file: Path) -> set[str]:
    """The words a WordNet index file lists (its header lines begin with a space)."""
    with index_file.open() as lines:
        return {line.split()[0] for line in lines if not line.startswith(" ")}


def names_any(words: list[str], vocabulary: set[str]) -> bool:
    return any(singular(word) & vocabulary for word in words)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=["dev", "test", "all"], default="dev")
    parser.add_argument("--encoder", default="efficientnet-lite2-multiscale")
    parser.add_argument("--photos", default=str(DEFAULT_IMAGES), help="where fetch.py put the photos")
    parser.add_argument("--details", action="store_true", help="one entry per photo too")
    parser.add_argument("--word-probe", type=Path, metavar="WORDNET_DIR",
                        help="also a linear probe trained on Flickr8k's caption nouns (WordNet's dict folder tells nouns)")
    parser.add_argument("--config", default="configs/default.yaml", help="where the probe finds Flickr8k and its features")
    args = parser.parse_args()
    photos = [photo for photo in load_photos() if args.split in ("all", photo["split"])]
    paths = photo_files(photos, args.photos)
    encoder = Encoder(args.encoder)
    recogniser = Recogniser.for_encoder(encoder)
    if recogniser is None:
        sys.exit(f"error: encoder {args.encoder} has no ImageNet head to recognise with")
    try:
        probe = WordProbe(args.config, args.word_probe, args.encoder) if args.word_probe else None
    except (CaptionerError, OSError) as error:
        sys.exit(f"error: the word probe: {error}")
    probe_hits: dict[str, list[bool]] = {"top1": [], "top3": [], "dog_in_top1_without_animal": [],
                                         "person_in_top1_without_person": []}
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
        if probe is not None:
            nouns = probe.ranked(grid)
            probe_hits["top1"].append(names_any(nouns[:1], subject))
            probe_hits["top3"].append(names_any(nouns[:3], subject))
            if not photo["animal"]:
                probe_hits["dog_in_top1_without_animal"].append(names_any(nouns[:1], {"dog"}))
            if not photo["person"]:
                probe_hits["person_in_top1_without_person"].append(names_any(nouns[:1], PERSON_WORDS))
            details[-1]["probe_words"] = nouns[:3]
    result = {"split": args.split, "photos": len(photos), "encoder": args.encoder,
              **{f"subject_in_{name}": round(statistics.mean(values), 4) for name, values in hits.items()},
              "mean_person_evidence": {"with_person": round(statistics.mean(evidence[True]), 4) if evidence[True] else None,
                                       "without_person": round(statistics.mean(evidence[False]), 4) if evidence[False] else None}}
    if probe is not None:
        result["word_probe"] = {"words": len(probe.words), **{name: round(statistics.mean(values), 4) if values else None
                                                              for name, values in probe_hits.items()}}
    if args.details:
        result["details"] = details
    print(json.dumps(result))


if __name__ == "__main__":
    main()
