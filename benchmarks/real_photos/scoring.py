"""Word-level scoring of captions against the real-photo references: pure Python, no model, no Java.

A caption names the main subject when one of its words is in the photo's `subject` list; it invents a
person (an animal) when the photo has none and a caption word is in PERSON_WORDS (ANIMAL_WORDS). Words are
compared after lower-casing and a simple plural match ("puppies" = "puppy", "men" = "man"), never as
substrings ("cathedral" does not name a cat).
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PHOTOS_FILE = Path(__file__).resolve().parent / "photos.jsonl"
CATEGORIES = ("pet", "wild animal", "food", "plant", "object", "vehicle", "building", "street", "landscape",
              "indoor", "portrait", "group")
SPLITS = ("dev", "test")
FIELDS = ("id", "split", "source", "sha256", "references", "subject", "false", "category", "person", "animal")
SOURCE_FIELDS = ("kind", "package", "version", "path", "licence")

# words that say a person is in the photo (singular forms; plurals match through `word_forms`)
PERSON_WORDS = frozenset("""
man woman person people boy girl child kid baby toddler teenager teen adult guy lady gentleman
player crowd rider cyclist biker skier snowboarder surfer swimmer climber hiker runner jogger skateboarder
skater dancer musician singer drummer guitarist soldier worker officer policeman athlete friend tourist
spectator pedestrian driver fisherman
""".split())
# words that name an animal
ANIMAL_WORDS = frozenset("""
animal pet dog puppy pup cat kitten kitty bird horse pony foal cow bull calf cattle ox sheep lamb goat pig
deer elk moose camel llama alpaca elephant giraffe zebra lion tiger leopard cheetah bear panda koala monkey
ape gorilla squirrel rabbit bunny hamster mouse rat snake lizard turtle tortoise frog fish goldfish shark
dolphin whale seal duck goose swan chicken hen rooster penguin owl eagle hawk parrot pigeon seagull gull
butterfly bee insect spider crab wolf fox donkey mule kangaroo chameleon hummingbird retriever poodle
terrier collie labrador dalmatian greyhound beagle pug husky hound
""".split())

IRREGULAR_PLURALS = {
    "men": "man", "women": "woman", "children": "child", "people": "person", "geese": "goose", "mice": "mouse",
    "feet": "foot", "teeth": "tooth", "oxen": "ox", "leaves": "leaf", "knives": "knife", "wolves": "wolf",
    "calves": "calf", "halves": "half", "shelves": "shelf", "loaves": "loaf", "scarves": "scarf",
    "gentlemen": "gentleman", "policemen": "policeman", "fishermen": "fisherman",
}
_WORD = re.compile(r"[a-z]+")


def words(text: str) -> list[str]:
    """Lower-cased words of a caption: letters only, so "close-up" gives close, up and "cat's" gives cat, s."""
    return _WORD.findall(text.lower())


def word_forms(word: str) -> set[str]:
    """The word and the singulars it may be the plural of: puppies -> puppy, buses -> bus, dogs -> dog, men -> man."""
    word = word.lower()
    forms = {word}
    if word in IRREGULAR_PLURALS:
        forms.add(IRREGULAR_PLURALS[word])
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        forms.add(word[:-1])
        if word.endswith("es"):
            forms.add(word[:-2])
        if word.endswith("ies"):
            forms.add(word[:-3] + "y")
    return forms


class WordSet:
    """A set of words that matches a caption word in any of its plural or singular forms."""

    def __init__(self, entries: Iterable[str]):
        self.forms: set[str] = set()
        for entry in entries:
            self.forms |= word_forms(entry)

    def matches(self, word: str) -> bool:
        return bool(word_forms(word) & self.forms)

    def found_in(self, text: str) -> list[str]:
        """The caption's words that are in the set, in caption order."""
        return [word for word in words(text) if self.matches(word)]


PERSONS = WordSet(PERSON_WORDS)
ANIMALS = WordSet(ANIMAL_WORDS)


@dataclass
class PhotoScore:
    id: str
    category: str
    caption: str | None  # None: the photo could not be captioned
    subject_hit: bool
    invented_person: bool  # always False for a photo that has a person
    invented_animal: bool  # always False for a photo that has an animal
    false_words: list[str]
    person_words: list[str]
    animal_words: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "category": self.category, "caption": self.caption, "subject_hit": self.subject_hit,
                "invented_person": self.invented_person, "invented_animal": self.invented_animal,
                "false_words": self.false_words}


def score_photo(photo: dict[str, Any], caption: str | None) -> PhotoScore:
    """Score one caption (None for a photo that failed) against one photo's record."""
    text = caption or ""
    person_words = PERSONS.found_in(text)
    animal_words = ANIMALS.found_in(text)
    return PhotoScore(
        id=photo["id"], category=photo["category"], caption=caption,
        subject_hit=bool(WordSet(photo["subject"]).found_in(text)),
        invented_person=not photo["person"] and bool(person_words),
        invented_animal=not photo["animal"] and bool(animal_words),
        false_words=WordSet(photo["false"]).found_in(text),
        person_words=person_words, animal_words=animal_words,
    )


def _fraction(count: int, total: int) -> float | None:
    return round(count / total, 4) if total else None


def summarise(photos: Sequence[dict[str, Any]], scores: Sequence[PhotoScore]) -> dict[str, Any]:
    """The rates over a set of photos. A failed photo counts as a miss for the subject and invents nothing;
    each invention rate is over the photos that have no person (no animal)."""
    if len(photos) != len(scores):
        raise ValueError(f"expected one score per photo, got {len(scores)} for {len(photos)} photos")
    without_person = [score for photo, score in zip(photos, scores, strict=True) if not photo["person"]]
    without_animal = [score for photo, score in zip(photos, scores, strict=True) if not photo["animal"]]
    per_category = {}
    for category in sorted({photo["category"] for photo in photos}):
        chosen = [score for score in scores if score.category == category]
        per_category[category] = {"photos": len(chosen), "subject_accuracy": _fraction(sum(s.subject_hit for s in chosen), len(chosen))}
    return {
        "photos": len(photos),
        "failed": sum(score.caption is None for score in scores),
        "subject_accuracy": _fraction(sum(score.subject_hit for score in scores), len(scores)),
        "invented_person_rate": _fraction(sum(score.invented_person for score in without_person), len(without_person)),
        "photos_without_person": len(without_person),
        "invented_animal_rate": _fraction(sum(score.invented_animal for score in without_animal), len(without_animal)),
        "photos_without_animal": len(without_animal),
        "false_word_rate": _fraction(sum(bool(score.false_words) for score in scores), len(scores)),
        "per_category": per_category,
    }


def load_photos(path: str | Path = PHOTOS_FILE, *, split: str = "all") -> list[dict[str, Any]]:
    """The photo records of photos.jsonl, of one split ("dev", "test") or all of them."""
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split must be dev, test or all, got {split!r}")
    records = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not JSON: {error}") from error
    return [record for record in records if split == "all" or record.get("split") == split]


def problems(records: Sequence[dict[str, Any]]) -> list[str]:
    """What is wrong with a list of photo records, one line each; empty when they are well-formed."""
    found = []
    ids = [record.get("id") for record in records]
    for duplicate in sorted({photo_id for photo_id in ids if ids.count(photo_id) > 1}, key=str):
        found.append(f"id {duplicate} appears more than once")
    for record in records:
        name = record.get("id", "?")
        missing = [key for key in FIELDS if key not in record]
        if missing:
            found.append(f"{name}: missing {', '.join(missing)}")
            continue
        missing_source = [key for key in SOURCE_FIELDS if not record["source"].get(key)]
        if missing_source:
            found.append(f"{name}: source lacks {', '.join(missing_source)}")
        if record["source"].get("kind") not in ("debian", "pypi"):
            found.append(f"{name}: source kind must be debian or pypi")
        if record["split"] not in SPLITS:
            found.append(f"{name}: split {record['split']!r} is not dev or test")
        if record["category"] not in CATEGORIES:
            found.append(f"{name}: unknown category {record['category']!r}")
        if not re.fullmatch(r"[0-9a-f]{64}", str(record["sha256"])):
            found.append(f"{name}: sha256 is not 64 hex digits")
        if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", str(name)):
            found.append(f"{name}: id must be a lower-case slug")
        if not 2 <= len(record["references"]) <= 4 or not all(isinstance(text, str) and text.strip() for text in record["references"]):
            found.append(f"{name}: needs 2-4 non-empty references")
        if not record["subject"]:
            found.append(f"{name}: empty subject list")
        if not isinstance(record["person"], bool) or not isinstance(record["animal"], bool):
            found.append(f"{name}: person and animal must be true or false")
        overlap = sorted(word for word in record["false"] if WordSet(record["subject"]).matches(word))
        if overlap:
            found.append(f"{name}: {', '.join(overlap)} both subject and false")
    return found
