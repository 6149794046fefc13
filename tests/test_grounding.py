"""What the encoder recognises: its ImageNet head on the caption grid, classes mapped to caption words."""
from __future__ import annotations

import types

import pytest
import torch

from captioner.encoders import Encoder
from captioner.grounding import HEAD_CHANNELS, Recogniser, imagenet_classes

from conftest import draw_shape


def classifier_favouring(probabilities: dict[int, float]) -> torch.nn.Linear:
    """A 1280 -> 1000 layer that ignores its input and gives these classes these probabilities (summing to 1;
    the other classes get next to nothing)."""
    layer = torch.nn.Linear(HEAD_CHANNELS, 1000)
    torch.nn.init.zeros_(layer.weight)
    bias = torch.full((1000,), 1e-12).log()
    for index, probability in probabilities.items():
        bias[index] = torch.tensor(probability).log()
    layer.bias.data.copy_(bias)
    return layer


def test_class_words_add_up_across_classes_and_breeds():
    # tabby 281, tiger cat 282, Egyptian cat 285: three cat classes make "cat" their sum
    recogniser = Recogniser(classifier_favouring({281: 0.3, 282: 0.2, 285: 0.1, 834: 0.05, 0: 0.35}))  # 0: tench
    [recognition] = recogniser.recognise(torch.zeros(1, 4, HEAD_CHANNELS + 120))
    assert recognition.words["cat"] == pytest.approx(0.6, abs=1e-3)
    assert recognition.words["animal"] >= recognition.words["cat"]  # every animal class adds to "animal"
    assert [name for name, _ in recognition.classes] == ["tench", "tabby", "tiger cat"]
    assert recognition.person_evidence == pytest.approx(0.05, abs=2e-3)  # the suit (834) is worn by someone
    assert "dog" not in recognition.words  # under the 0.01 floor
    assert list(recognition.words.values()) == sorted(recognition.words.values(), reverse=True)


def test_every_class_contributes_to_some_word_and_to_exactly_one_kind():
    recogniser = Recogniser(classifier_favouring({0: 1.0}))
    assert bool((recogniser.class_words.sum(1) >= 1).all())
    person = recogniser.kinds.index("person-evidence")
    kinds_per_class = recogniser.class_kinds.sum(1) - recogniser.class_kinds[:, person]
    own_kind_is_person = torch.tensor([entry["kind"] == "person-evidence" for entry in imagenet_classes()])
    assert bool((kinds_per_class + own_kind_is_person.float() >= 1).all())


def test_the_head_on_the_caption_grid_is_the_networks_own_classifier():
    encoder = Encoder("efficientnet-lite0")
    recogniser = Recogniser.for_encoder(encoder)
    assert recogniser is not None
    pixels = torch.stack([encoder.preprocess(draw_shape(colour, "circle", 1, size=224)) for colour in ("red", "blue")])
    with torch.inference_mode():
        expected = encoder.network.network(pixels).softmax(-1)  # the whole EfficientNet, classifier included
    probabilities = recogniser.class_probabilities(encoder.encode(pixels))
    torch.testing.assert_close(probabilities, expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(2))


def test_an_encoder_without_an_imagenet_head_has_no_recogniser():
    headless = types.SimpleNamespace(network=torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3)))
    assert Recogniser.for_encoder(headless) is None
