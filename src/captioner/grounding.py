"""What the encoder itself recognises in a photo: its ImageNet classifier, run on the grid the decoder reads.

The EfficientNet-Lite encoders end in a 1000-class ImageNet classifier (global average pool + one linear
layer) that the caption features stop just before, so the same forward pass gives the class probabilities
for free. Each class maps to the words a caption may use for it through the committed WordNet map
`imagenet_words.json` (scripts/build_imagenet_words.py): "Egyptian cat" -> cat, animal. A word's
probability is the summed probability of the classes that use it, so five dog breeds at 0.1 each make
"dog" 0.5. ImageNet has no person class: clothing as worn (suit, jersey, ...) is its evidence of a person.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from captioner.encoders import Encoder

WORDS_FILE = Path(__file__).with_name("imagenet_words.json")
HEAD_CHANNELS = 1280  # the EfficientNet-Lite head's width: the first channels of every Lite grid, multi-scale included


@dataclass(frozen=True)
class Recognition:
    """One photo as the classifier sees it."""

    words: dict[str, float]  # caption word -> probability, most probable first
    classes: list[tuple[str, float]]  # the most probable ImageNet classes, most probable first
    kinds: dict[str, float]  # animal, food, plant, vehicle, structure, landscape, object, person-evidence -> probability
    people_seen: bool | None = None  # what the person detector (captioner.people) found; None: not asked

    @property
    def person_evidence(self) -> float:
        return self.kinds.get("person-evidence", 0.0)

    def top_word(self) -> tuple[str, float] | None:
        return next(iter(self.words.items()), None)

    def to_dict(self, *, words: int = 5) -> dict[str, Any]:
        return {"words": [{"word": word, "probability": round(probability, 4)}
                          for word, probability in list(self.words.items())[:words]],
                "classes": [{"class": name, "probability": round(probability, 4)} for name, probability in self.classes],
                "person_evidence": round(self.person_evidence, 4), "people_seen": self.people_seen}


@lru_cache(maxsize=1)
def imagenet_classes() -> list[dict[str, Any]]:
    """The 1000 classes in classifier order, each with its name, caption words, kind and person evidence."""
    classes = json.loads(WORDS_FILE.read_text())["classes"]
    if [entry["index"] for entry in classes] != list(range(1000)):
        raise ValueError(f"{WORDS_FILE} must list the 1000 ImageNet classes in index order")
    return classes


class Recogniser:
    """Class and word probabilities from an encoder's grid; `Recogniser.for_encoder` is None for encoders without
    an ImageNet head here (the torchvision ResNets are cut before theirs)."""

    def __init__(self, classifier: torch.nn.Linear, *, top_classes: int = 3):
        classes = imagenet_classes()
        if classifier.out_features != len(classes):
            raise ValueError(f"expected a {len(classes)}-class classifier, got {classifier.out_features} classes")
        self.classifier = classifier
        self.top_classes = top_classes
        self.names = [entry["name"] for entry in classes]
        vocabulary = sorted({word for entry in classes for word in entry["words"]})
        kinds = sorted({entry["kind"] for entry in classes} | {"person-evidence"})
        # (classes, words) and (classes, kinds) 0/1 matrices: one product turns class probabilities into word ones
        self.words, self.kinds = vocabulary, kinds
        self.class_words = torch.zeros(len(classes), len(vocabulary))
        self.class_kinds = torch.zeros(len(classes), len(kinds))
        word_column = {word: column for column, word in enumerate(vocabulary)}
        kind_column = {kind: column for column, kind in enumerate(kinds)}
        for row, entry in enumerate(classes):
            for word in entry["words"]:
                self.class_words[row, word_column[word]] = 1.0
            self.class_kinds[row, kind_column[entry["kind"]]] = 1.0
            if entry["person_evidence"]:
                self.class_kinds[row, kind_column["person-evidence"]] = 1.0

    @classmethod
    def for_encoder(cls, encoder: Encoder) -> Recogniser | None:
        network = getattr(encoder.network, "network", None)  # the EfficientNet inside the grid module
        head = getattr(network, "_fc", None)
        if not isinstance(head, torch.nn.Linear) or head.in_features != HEAD_CHANNELS:
            return None
        return cls(head)

    @torch.inference_mode()
    def class_probabilities(self, grid: torch.Tensor) -> torch.Tensor:
        """(images, pixels, channels) encoder grid -> (images, 1000) ImageNet class probabilities."""
        pooled = grid[:, :, :HEAD_CHANNELS].float().mean(dim=1)  # (images, 1280): the head's global average pool
        return self.classifier(pooled).softmax(dim=-1)

    def recognise(self, grid: torch.Tensor, mirrored: torch.Tensor | None = None, *,
                  min_probability: float = 0.01) -> list[Recognition]:
        """What each photo of the grid shows, by the classifier: words above `min_probability`, the top classes.
        With the mirrored photos' grid too, the two views' class probabilities are averaged."""
        probabilities = self.class_probabilities(grid)  # (images, 1000)
        if mirrored is not None:
            probabilities = (probabilities + self.class_probabilities(mirrored)) / 2
        word_probabilities = (probabilities @ self.class_words).clamp_(max=1.0)  # (images, words)
        kind_probabilities = (probabilities @ self.class_kinds).clamp_(max=1.0)  # (images, kinds)
        results = []
        for image_classes, image_words, image_kinds in zip(probabilities, word_probabilities, kind_probabilities, strict=True):
            order = image_words.argsort(descending=True).tolist()
            words = {self.words[index]: float(image_words[index]) for index in order if image_words[index] >= min_probability}
            top = image_classes.topk(self.top_classes)
            results.append(Recognition(
                words=words,
                classes=[(self.names[index], float(value)) for value, index in zip(top.values, top.indices.tolist(), strict=True)],
                kinds={kind: float(value) for kind, value in zip(self.kinds, image_kinds, strict=True)},
            ))
        return results
