"""Grounded captions: the decoder's candidates checked against what the encoder's classifier recognises, and a
safe fallback when none of them holds up.

The decoder learned from Flickr8k, mostly people and dogs, and says what it saw there: on a photo unlike its
training photos it invents a man on a bench for a ladybird. Per photo, two signals catch that:
- familiarity: the cosine similarity of the photo's pooled features to its nearest training photo (the
  caption memory that consensus reranking reads). Below `familiar` the decoder is off its home ground.
- the classifier (captioner.grounding): the words it recognises, and its evidence of a person (clothing as
  worn), with the person detector's (captioner.people) asked when that decides.
A candidate conflicts when it names a person with no person evidence on an unfamiliar photo, an animal on an
unfamiliar photo the classifier does not see that animal in, or when the classifier recognises a subject (a word
at least `subject` probable) that the candidate names nothing of, unless its subject is a person the photo
backs. The first candidate (in ranking order) without a conflict is the caption; when every one conflicts, the
fallback says less rather than something false: "a photo of a cat" from the recognised subject, else the
best-recognised thing a candidate names ("a photo of a camera"), else the first candidate's setting without its
invented subject ("a photo of a snowy mountain"), else "a photo". A fallback caption never names a person. The
settings were chosen on the dev halves (benchmarks/tune_grounding.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from captioner.confidence import FEATURES, ConfidenceModel
from captioner.errors import CaptionerError
from captioner.grounding import Recognition, imagenet_classes

SETTINGS_FILE = Path(__file__).with_name("grounding.json")

# the product's own lists (the real-photo benchmark keeps its independent ones): singular forms
PERSON_WORDS = frozenset("""
man woman person people boy girl child kid baby toddler teenager adult guy lady gentleman player crowd rider
cyclist biker skier snowboarder surfer swimmer climber hiker runner jogger skateboarder skater dancer musician
singer drummer guitarist soldier worker officer policeman athlete tourist spectator pedestrian driver fisherman
""".split())
IRREGULAR = {"men": "man", "women": "woman", "children": "child", "people": "person", "geese": "goose",
             "mice": "mouse", "teeth": "tooth", "feet": "foot", "leaves": "leaf", "wolves": "wolf"}
MASS_NOUNS = frozenset("food water fruit coffee clothing furniture snow grass bread meat ice sand wine beer tea".split())
DETERMINERS = frozenset("a an the some two three four several".split())
# a setting phrase begins after the last of these ("in front of" ends in "of")
PREPOSITIONS = frozenset("in on at through near by under over across along into onto of beside behind".split())
NOT_SETTINGS = frozenset("air camera ball toy stick mouth".split())  # "in the air" is where a jump is, not a place
# words that cannot end a noun phrase: a caption cut at "in a brown" has no setting to keep
NOT_NOUNS = frozenset("""
a an the and or of in on at with is are black white brown red blue green yellow orange pink purple grey gray
colorful big small large little young old tall wooden snowy sandy grassy rocky dark bright
""".split())


@dataclass(frozen=True)
class GroundingSettings:
    """Thresholds for one encoder, chosen on the dev halves; see grounding.json."""

    familiar: float  # at least this similar to a training photo: the decoder's own ground, persons and animals trusted
    subject: float  # a recognised word at least this probable is the photo's subject
    support: float = 0.1  # a caption word the classifier gives at least this probability agrees with it
    person_evidence: float = 0.05  # less person evidence than this on an unfamiliar photo: no person in it


@lru_cache(maxsize=8)
def _calibration_file(path: Path) -> dict[str, Any]:
    try:
        encoders = json.loads(path.read_text())["encoders"]
        if not isinstance(encoders, dict):
            raise TypeError("encoders is not an object")
        return encoders
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CaptionerError(f"{path}: not a grounding file ({error})") from None


def calibration(encoder_name: str, run_dir: str | Path | None = None) -> tuple[GroundingSettings | None, ConfidenceModel | None]:
    """The grounding thresholds and confidence model for an encoder: from the run's own grounding.json when it has
    one, else the package's. None for an encoder they were not chosen for (its familiarity has another scale, so
    its captions go ungrounded rather than mis-grounded), and no confidence model before one is fitted."""
    own = Path(run_dir) / SETTINGS_FILE.name if run_dir is not None else None
    path = own if own is not None and own.is_file() else SETTINGS_FILE
    entry = _calibration_file(path).get(encoder_name)
    if entry is None:
        return None, None
    try:
        settings = GroundingSettings(**entry["grounding"])
        model = entry.get("confidence")
        if model is not None and set(model["weights"]) != set(FEATURES):
            raise KeyError(f"confidence weights must be {', '.join(FEATURES)}")
        return settings, None if model is None else ConfidenceModel(model["weights"], float(model["bias"]))
    except (KeyError, TypeError, ValueError) as error:
        raise CaptionerError(f"{path}: the {encoder_name} entry is malformed ({error})") from None


def signals(words: list[str], recognition: Recognition, familiarity: float | None, *, is_fallback: bool,
            person_evidence: float = 0.05) -> dict[str, float]:
    """What the confidence model reads for a final caption (captioner.confidence.FEATURES)."""
    person = names_person(words)
    backed = person_backed(recognition, person_evidence)
    return {"familiarity": familiarity if familiarity is not None else 0.0,
            "support": support(words, recognition) if not is_fallback else _fallback_support(words, recognition),
            "fallback": float(is_fallback), "says_nothing": float(is_fallback and words == ["a", "photo"]),
            "unsupported_person": float(person and not backed), "backed_person": float(person and backed)}


def _fallback_support(words: list[str], recognition: Recognition) -> float:
    # "a photo of a cat": the subject's probability; "a photo of a snowy mountain" and "a photo": none
    return support(words[3:], recognition) if len(words) > 3 else 0.0


def singular(word: str) -> set[str]:
    """A caption word and the singulars it may be the plural of: dogs -> dog, puppies -> puppy, men -> man."""
    forms = {word, IRREGULAR.get(word, word)}
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        forms |= {word[:-1], word[:-2] if word.endswith("es") else word[:-1]}
        if word.endswith("ies"):
            forms.add(word[:-3] + "y")
    return forms


@lru_cache(maxsize=1)
def _word_tables() -> tuple[frozenset[str], dict[str, int], frozenset[str]]:
    """From the class map: the words of animal classes, how many classes each word covers (fewer is more specific),
    and the words that only clothing-as-worn classes use (evidence of a person, not a subject)."""
    animal, count, worn, other = set(), {}, set(), set()
    for entry in imagenet_classes():
        for word in entry["words"]:
            count[word] = count.get(word, 0) + 1
            (worn if entry["person_evidence"] else other).add(word)
            if entry["kind"] == "animal":
                animal.add(word)
    return frozenset(animal), count, frozenset(worn - other)


def _names(words: list[str], vocabulary: frozenset[str] | set[str]) -> list[str]:
    """The words of `vocabulary` that a tokenised caption names, phrases ("space shuttle") included."""
    forms = [singular(word) for word in words]
    found = []
    for entry in vocabulary:
        parts = entry.split()
        for start in range(len(words) - len(parts) + 1):
            if all(part in forms[start + offset] for offset, part in enumerate(parts)):
                found.append(entry)
                break
    return found


def unfamiliar(familiarity: float | None, settings: GroundingSettings) -> bool:
    """Off the decoder's home ground: less like its nearest training photo than `familiar` (or no caption memory)."""
    return familiarity is None or familiarity < settings.familiar


def person_backed(recognition: Recognition, person_evidence: float) -> bool:
    """Whether the photo shows signs of a person: clothing as worn, or the person detector's find."""
    return recognition.person_evidence >= person_evidence or bool(recognition.people_seen)


def needs_people(candidates: list[list[str]], recognition: Recognition, familiarity: float | None,
                 settings: GroundingSettings) -> bool:
    """Whether asking the person detector could change the choice: a candidate names a person on an unfamiliar
    photo where the classifier sees no clothing as worn."""
    return (unfamiliar(familiarity, settings) and recognition.people_seen is None and recognition.person_evidence < settings.person_evidence
            and any(names_person(words) for words in candidates))


def names_person(words: list[str]) -> bool:
    return any(forms & PERSON_WORDS for forms in map(singular, words))


def named_animals(words: list[str]) -> list[str]:
    """The animal words (of the class map) a caption names, in their singular form."""
    animal, _, _ = _word_tables()
    return [next(iter(forms & animal)) for forms in map(singular, words) if forms & animal]


def names_animal(words: list[str]) -> bool:
    return bool(named_animals(words))


def recognised_subject(recognition: Recognition, settings: GroundingSettings) -> tuple[str, float] | None:
    """The most specific word the classifier is sure of (at least `subject` probable), not counting what people
    wear: "cat" before "animal". None when it is sure of nothing."""
    _, count, worn = _word_tables()
    sure = [(word, probability) for word, probability in recognition.words.items()
            if probability >= settings.subject and word not in worn]
    if not sure:
        return None
    return min(sure, key=lambda item: (count.get(item[0], 1), -item[1]))


def support(words: list[str], recognition: Recognition) -> float:
    """How much the classifier agrees with a caption: the probability of its best-recognised word (0 for none)."""
    return max((recognition.words[word] for word in _names(words, set(recognition.words))), default=0.0)


def conflicts(words: list[str], recognition: Recognition, familiarity: float | None, settings: GroundingSettings) -> list[str]:
    """Why a candidate caption (its words) does not hold up against the photo; empty when it does."""
    found = []
    off_home = unfamiliar(familiarity, settings)
    person = names_person(words)
    if person and off_home and not person_backed(recognition, settings.person_evidence):
        who = "the classifier and the person detector see" if recognition.people_seen is not None else "the classifier sees"
        found.append(f"names a person {who} no sign of")
    unseen = [word for word in named_animals(words) if recognition.words.get(word, 0.0) < settings.support]
    if off_home and unseen:
        found.append(f"names a {unseen[0]} the classifier does not see")
    subject = recognised_subject(recognition, settings)
    # a person with evidence (clothing, the detector), or one on a familiar photo, need not name the recognised thing:
    # "a man plays a guitar" beside "bassoon", "a man is skiing" beside "ski" (requiring it cost Flickr8k dev 1 CIDEr
    # point; requiring the detector's evidence where the thing is 0.6 probable, 0.6: docs/experiments.md, section 12)
    trusted_person = person and not found  # found: the person conflict above, or an animal nobody sees
    if subject is not None and not trusted_person and support(words, recognition) < settings.support:
        found.append(f"misses the recognised {subject[0]}")
    return found


def with_article(noun: str) -> str:
    if noun.split()[0] in MASS_NOUNS:
        return noun
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def setting_phrase(words: list[str]) -> list[str] | None:
    """The noun phrase after a caption's last preposition, when it names no person or animal and ends in a noun:
    "a man is standing in front of a snowy mountain" -> "a snowy mountain"."""
    for index in range(len(words) - 1, -1, -1):
        if words[index] in PREPOSITIONS:
            phrase = words[index + 1:]
            worn = _word_tables()[2]  # "in a red shirt" is what a person wears, not where the photo is
            if (len(phrase) >= 2 and phrase[0] in DETERMINERS and phrase[-1] not in NOT_NOUNS | NOT_SETTINGS
                    and not names_person(phrase) and not names_animal(phrase) and not _names(phrase, worn)):
                return phrase
            return None
    return None


def fallback_caption(candidates: list[list[str]], recognition: Recognition, settings: GroundingSettings) -> str:
    """Say less: the recognised subject; else the best-supported thing a candidate names ("a little girl is sitting
    on a camera" -> "a photo of a camera"); else the first candidate's setting; else only that it is a photo."""
    subject = recognised_subject(recognition, settings)
    if subject is not None:
        return f"a photo of {with_article(subject[0])}"
    _, _, worn = _word_tables()
    named = [(recognition.words[word], word) for words in candidates for word in _names(words, set(recognition.words))
             if word not in worn and not names_person(word.split())]
    if named and max(named)[0] >= settings.support:
        return f"a photo of {with_article(max(named)[1])}"
    phrase = setting_phrase(candidates[0]) if candidates else None
    if phrase is not None:
        return "a photo of " + " ".join(phrase)
    return "a photo"


@dataclass(frozen=True)
class Choice:
    index: int | None  # the chosen candidate's position, None for the fallback
    text: str
    conflicts: list[str]  # the first candidate's, when it was passed over


def choose(candidates: list[list[str]], recognition: Recognition, familiarity: float | None, settings: GroundingSettings,
           *, fallback: bool = True) -> Choice:
    """The first candidate (tokenised, best first) without a conflict; else the fallback, or with fallback off the
    first candidate as it is."""
    first = conflicts(candidates[0], recognition, familiarity, settings) if candidates else ["no candidate"]
    if not first:
        return Choice(0, " ".join(candidates[0]), [])
    for index, words in enumerate(candidates[1:], start=1):
        if not conflicts(words, recognition, familiarity, settings):
            return Choice(index, " ".join(words), first)
    if fallback or not candidates:
        return Choice(None, fallback_caption(candidates, recognition, settings), first)
    return Choice(0, " ".join(candidates[0]), first)
