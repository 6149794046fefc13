"""The committed ImageNet class -> caption words map (scripts/build_imagenet_words.py writes it)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

WORDS_FILE = Path(__file__).resolve().parents[1] / "src" / "captioner" / "imagenet_words.json"
KINDS = {"animal", "person-evidence", "food", "plant", "vehicle", "structure", "landscape", "object"}
PERSON_WORDS = {"person", "man", "woman", "boy", "girl", "child", "people", "player", "diver", "groom"}


@pytest.fixture(scope="module")
def classes() -> list[dict]:
    return json.loads(WORDS_FILE.read_text(encoding="utf-8"))["classes"]


def test_1000_classes_in_class_index_order(classes):
    assert [entry["index"] for entry in classes] == list(range(1000))
    wnids = [entry["wnid"] for entry in classes]
    assert len(set(wnids)) == 1000
    assert wnids == sorted(wnids)  # ILSVRC-2012 indices are the sorted wnids
    assert (classes[0]["wnid"], classes[0]["name"]) == ("n01440764", "tench")
    assert (classes[999]["wnid"], classes[999]["name"]) == ("n15075141", "toilet tissue")


def test_every_class_is_well_formed(classes):
    for entry in classes:
        words = entry["words"]
        assert words and all(isinstance(word, str) and word == word.lower().strip() and word for word in words), entry
        assert len(set(words)) == len(words), entry
        assert len(entry["in_flickr8k_vocabulary"]) == len(words), entry
        assert all(isinstance(flag, bool) for flag in entry["in_flickr8k_vocabulary"]), entry
        assert entry["kind"] in KINDS, entry
        assert isinstance(entry["person_evidence"], bool), entry
        assert (entry["kind"] == "person-evidence") == entry["person_evidence"], entry


@pytest.mark.parametrize(
    ("index", "name", "expected"),
    [
        (285, "Egyptian cat", ["cat", "animal"]),
        (281, "tabby", ["cat", "animal"]),
        (10, "brambling", ["bird", "animal"]),
        (207, "golden retriever", ["dog", "animal"]),
        (967, "espresso", ["coffee", "cup", "drink"]),
        (970, "alp", ["mountain"]),
        (963, "pizza", ["pizza", "food"]),
        (817, "sports car", ["car", "vehicle"]),
        (985, "daisy", ["daisy", "flower", "plant"]),
        (951, "lemon", ["lemon", "fruit"]),
        (950, "orange", ["orange", "fruit"]),
    ],
)
def test_words_for_the_examples_of_the_issue(classes, index, name, expected):
    entry = classes[index]
    assert entry["name"] == name
    assert entry["words"][: len(expected)] == expected


@pytest.mark.parametrize(
    ("index", "name", "any_of"),
    [
        (301, "ladybug", {"ladybug", "ladybird", "beetle", "insect"}),
        (335, "fox squirrel", {"squirrel"}),
        (323, "monarch", {"butterfly"}),
        (805, "soccer ball", {"ball"}),
        (872, "tripod", {"tripod"}),
        (21, "kite", {"bird"}),  # the bird of prey, not the toy
        (934, "hotdog", {"hot dog"}),
    ],
)
def test_a_caption_word_for_the_subject(classes, index, name, any_of):
    entry = classes[index]
    assert entry["name"] == name
    assert any_of & set(entry["words"]), entry


def test_misleading_names_are_not_lent(classes):
    assert "kite" not in classes[21]["words"]  # a bird
    assert "boxer" not in classes[242]["words"]  # a dog, not a person
    assert "cardigan" not in classes[264]["words"]  # a corgi, not the sweater
    assert "notebook" not in classes[681]["words"]  # a laptop
    assert "dog" not in classes[934]["words"]  # the hot dog is food
    assert classes[934]["kind"] == "food"


@pytest.mark.parametrize(
    ("index", "name"),
    [(834, "suit"), (610, "jersey"), (457, "bow tie"), (655, "miniskirt"), (474, "cardigan"), (841, "sweatshirt"),
     (903, "wig"), (617, "lab coat"), (982, "groom"), (983, "scuba diver"), (981, "ballplayer")],
)
def test_person_evidence(classes, index, name):
    assert classes[index]["name"] == name
    assert classes[index]["person_evidence"] is True


def test_animals_and_things_alone_are_no_person_evidence(classes):
    dogs = [entry for entry in classes if "dog" in entry["words"]]
    assert len(dogs) >= 118  # every breed and the wild dogs
    assert not any(entry["person_evidence"] for entry in dogs)
    assert not any(entry["person_evidence"] for entry in classes if entry["kind"] == "animal")
    for index in (806, 770, 518, 785):  # sock, running shoe, crash helmet, seat belt: photographed alone
        assert classes[index]["person_evidence"] is False, classes[index]


def test_only_person_classes_name_a_person(classes):
    for entry in classes:
        if PERSON_WORDS & set(entry["words"]):
            assert entry["index"] in (981, 982, 983), entry


def test_kinds_of_some_classes(classes):
    expected = {285: "animal", 967: "food", 985: "plant", 817: "vehicle", 497: "structure", 970: "landscape",
                872: "object", 968: "object", 834: "person-evidence"}
    assert {index: classes[index]["kind"] for index in expected} == expected


def test_vocabulary_flags(classes):
    assert classes[285]["in_flickr8k_vocabulary"][0] is True  # "cat"
    lemon = classes[951]
    assert dict(zip(lemon["words"], lemon["in_flickr8k_vocabulary"], strict=True)) == {"lemon": False, "fruit": True}
