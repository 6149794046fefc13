"""Grounded captions: candidates checked against the classifier, the fallback, and the confidence model."""
from __future__ import annotations

import json

import pytest

from captioner.confidence import FEATURES, ConfidenceModel, fit
from captioner.grounded import (
    GroundingSettings,
    calibration,
    choose,
    conflicts,
    fallback_caption,
    recognised_subject,
    setting_phrase,
    signals,
)
from captioner.grounding import Recognition

SETTINGS = GroundingSettings(familiar=0.6, subject=0.45, support=0.1, person_evidence=0.05)


def seen(words: dict[str, float], *, person: float = 0.0, animal: float = 0.0) -> Recognition:
    ordered = dict(sorted(words.items(), key=lambda item: -item[1]))
    return Recognition(words=ordered, classes=[], kinds={"person-evidence": person, "animal": animal})


CAT = seen({"animal": 0.7, "cat": 0.62, "dog": 0.04}, animal=0.7)
NOTHING = seen({"animal": 0.2, "toy": 0.13, "pinwheel": 0.13}, animal=0.2)


def test_the_most_specific_sure_word_is_the_subject_and_worn_clothing_never_is():
    assert recognised_subject(CAT, SETTINGS) == ("cat", 0.62)  # cat covers 7 classes, animal hundreds
    assert recognised_subject(seen({"animal": 0.76, "dog": 0.32}), SETTINGS) == ("animal", 0.76)
    assert recognised_subject(NOTHING, SETTINGS) is None
    # "jersey" and "swimsuit" are evidence of a person, not what the photo is of
    assert recognised_subject(seen({"jersey": 0.9}, person=0.9), SETTINGS) is None


def test_a_dog_caption_on_an_unfamiliar_cat_photo_conflicts_and_a_cat_caption_does_not():
    dog = "a black and white dog is jumping in the air".split()
    assert conflicts(dog, CAT, 0.46, SETTINGS) == ["names a dog the classifier does not see", "misses the recognised cat"]
    assert conflicts("a black cat looks at the camera".split(), CAT, 0.46, SETTINGS) == []
    assert conflicts("two cats sleep".split(), CAT, 0.46, SETTINGS) == []  # plurals name the same thing


def test_persons_are_trusted_on_familiar_photos_and_where_the_classifier_sees_clothing():
    man = "a man is standing in front of a snowy mountain".split()
    assert conflicts(man, NOTHING, 0.5, SETTINGS) == ["names a person the classifier sees no sign of"]
    assert conflicts(man, NOTHING, 0.7, SETTINGS) == []  # a Flickr8k-like photo: the decoder's home ground
    assert conflicts(man, seen({"clothing": 0.3}, person=0.3), 0.5, SETTINGS) == []
    assert conflicts(man, NOTHING, None, SETTINGS)  # no caption memory: nothing is familiar
    # a backed person need not name the recognised instrument ("a man plays a guitar" beside "bassoon")
    band = seen({"instrument": 0.45, "bassoon": 0.22}, person=0.08)
    assert conflicts("a man in a red shirt is playing a guitar".split(), band, 0.6, SETTINGS) == []


def test_the_first_candidate_without_a_conflict_leads():
    candidates = ["a brown dog is playing".split(), "a man is sitting on a wall".split(), "a cat is sitting on a wall".split()]
    choice = choose(candidates, CAT, 0.46, SETTINGS)
    assert (choice.index, choice.text) == (2, "a cat is sitting on a wall")
    assert choice.conflicts == ["names a dog the classifier does not see", "misses the recognised cat"]
    assert choose(candidates[:1], seen({"dog": 0.8}, animal=0.8), 0.46, SETTINGS).index == 0


def test_the_fallback_names_what_was_recognised_or_the_setting_and_never_an_unbacked_person():
    dog_only = ["a brown dog is playing with a ball".split()]
    assert choose(dog_only, CAT, 0.46, SETTINGS).text == "a photo of a cat"
    assert choose(dog_only, seen({"insect": 0.93, "bee": 0.91}), 0.46, SETTINGS).text == "a photo of a bee"
    assert choose(dog_only, seen({"food": 0.53}), 0.4, SETTINGS).text == "a photo of food"  # a mass noun: no article
    assert choose(dog_only, seen({"animal": 0.7}), 0.4, SETTINGS).text == "a photo of an animal"
    assert choose(["a man is standing in front of a snowy mountain".split()], NOTHING, 0.5, SETTINGS).text == \
        "a photo of a snowy mountain"
    assert choose(["a little girl in a blue shirt is on the beach".split()], NOTHING, 0.5, SETTINGS).text == \
        "a photo of the beach"
    # nothing sure, but a candidate names something the classifier half sees: that thing, never clothing
    camera = seen({"camera": 0.36, "lens cap": 0.06, "jersey": 0.3}, person=0.02)
    assert choose(["a little girl is sitting on a camera".split()], camera, 0.5, SETTINGS).text == "a photo of a camera"
    assert choose(["a little girl in a jersey".split()], camera, 0.5, SETTINGS).text == "a photo"
    # a caption cut off at an adjective has no setting to keep, and a setting with a person in it is not kept
    assert choose(["a man is jumping on a blue".split()], NOTHING, 0.5, SETTINGS).text == "a photo"
    assert setting_phrase("a dog is standing next to a man".split()) is None
    # with fallback off, the decoder's first candidate stays, its doubts still noted
    off = choose(dog_only, CAT, 0.46, SETTINGS, fallback=False)
    assert (off.index, off.text) == (0, "a brown dog is playing with a ball") and off.conflicts


@pytest.mark.parametrize("caption", [
    "a man is standing in the street", "a group of people are sitting on a bench", "a woman in a red shirt walks",
    "a boy and a girl play", "two men and a child are standing in front of a building",
])
def test_a_low_confidence_caption_of_a_photo_with_no_recognised_subject_never_names_a_person(caption):
    from captioner.grounded import names_person

    choice = choose([caption.split(), "a man is jumping on a blue".split()], NOTHING, 0.3, SETTINGS)
    assert choice.index is None and not names_person(choice.text.split())
    assert not names_person(fallback_caption([caption.split()], NOTHING, SETTINGS).split())


def test_the_presets_encoder_has_settings_and_other_encoders_go_ungrounded(tmp_path):
    settings, _ = calibration("efficientnet-lite2-multiscale")
    assert settings is not None and 0 < settings.familiar < 1
    assert calibration("resnet50") == (None, None)
    assert calibration("resnet50", tmp_path) == (None, None)  # a run without its own file reads the package's


def test_a_run_may_carry_its_own_calibration_and_a_broken_one_is_a_clear_error(tmp_path):
    from captioner.errors import CaptionerError

    own = {"encoders": {"efficientnet-lite0": {"grounding": {"familiar": 0.5, "subject": 0.4},
                                               "confidence": {"weights": dict.fromkeys(FEATURES, 1.0), "bias": -1.0}}}}
    (tmp_path / "grounding.json").write_text(json.dumps(own))
    settings, model = calibration("efficientnet-lite0", tmp_path)
    assert (settings.familiar, settings.subject) == (0.5, 0.4) and model.bias == -1.0
    for number, broken in enumerate(["{not json", '{"encoders": []}',
                                     '{"encoders": {"efficientnet-lite0": {"grounding": {"familiar": 0.5}}}}',
                                     '{"encoders": {"efficientnet-lite0": {"grounding": {"familiar": 0.5, "subject": 0.4}, '
                                     '"confidence": {"weights": {"support": 1}, "bias": 0}}}}']):
        folder = tmp_path / f"broken{number}"
        folder.mkdir()
        (folder / "grounding.json").write_text(broken)
        with pytest.raises(CaptionerError, match="grounding.json"):
            calibration("efficientnet-lite0", folder)


def test_signals_read_the_final_caption():
    values = signals("a photo of a cat".split(), CAT, 0.46, is_fallback=True)
    assert values == {"familiarity": 0.46, "support": 0.62, "fallback": 1.0, "says_nothing": 0.0, "unsupported_person": 0.0,
                      "backed_person": 0.0}
    values = signals("a man is sitting on a wall".split(), CAT, None, is_fallback=False)
    assert values == {"familiarity": 0.0, "support": 0.0, "fallback": 0.0, "says_nothing": 0.0, "unsupported_person": 1.0,
                      "backed_person": 0.0}
    assert set(values) == set(FEATURES)
    assert signals(["a", "photo"], NOTHING, 0.5, is_fallback=True)["says_nothing"] == 1.0
    assert signals("a man plays".split(), seen({"clothing": 0.3}, person=0.3), 0.5, is_fallback=False)["backed_person"] == 1.0


def test_the_confidence_model_learns_which_signals_predict_a_right_subject():
    rows = [{"familiarity": f, "support": s, "fallback": 0.0, "says_nothing": 0.0, "unsupported_person": 0.0, "backed_person": 0.0}
            for f in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8) for s in (0.0, 0.5, 0.9)]
    correct = [row["familiarity"] + row["support"] > 0.9 for row in rows]
    model = fit(rows, correct)
    assert model.weights["familiarity"] > 0 and model.weights["support"] > 0
    low, high = model(rows[0]), model(rows[-1])
    assert 0.0 <= low < 0.5 < high <= 1.0
    assert ConfidenceModel(**model.to_dict())(rows[-1]) == pytest.approx(high, abs=1e-3)
    with pytest.raises(ValueError, match="both right and wrong"):
        fit(rows, [True] * len(rows))
