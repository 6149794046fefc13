"""The CIDEr-D reward on token ids agrees with pycocoevalcap's CIDEr and rewards what it should."""
from __future__ import annotations

import random

import pytest
from pycocoevalcap.cider.cider import Cider

from captioner.reward import CiderD

WORDS = "a dog cat man woman runs jumps on the grass in water red ball with playing two".split()


def random_corpus(images: int, seed: int) -> tuple[dict[str, list[list[int]]], dict[str, list[int]]]:
    generator = random.Random(seed)
    references = {f"image{index}": [[generator.randrange(len(WORDS)) for _ in range(generator.randint(3, 12))] for _ in range(5)]
                  for index in range(images)}
    candidates = {key: list(refs[0][: generator.randint(1, len(refs[0]))]) + [generator.randrange(len(WORDS))]
                  for key, refs in references.items()}
    return references, candidates


def as_text(ids: list[int]) -> str:
    return " ".join(WORDS[index] for index in ids)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pycocoevalcap_cider_per_image(seed):
    references, candidates = random_corpus(40, seed)
    expected_mean, expected = Cider().compute_score({key: [as_text(ref) for ref in refs] for key, refs in references.items()},
                                                    {key: [as_text(candidates[key])] for key in references})
    reward = CiderD(references)
    got = reward.scores(list(references), [candidates[key] for key in references])
    assert got == pytest.approx(list(expected), abs=1e-9)
    assert sum(got) / len(got) == pytest.approx(expected_mean, abs=1e-9)


def test_copying_a_reference_beats_an_unrelated_caption_which_scores_zero():
    references, _ = random_corpus(30, 3)
    reward = CiderD(references)
    copy = reward.score("image0", references["image0"][0])
    unrelated = reward.score("image0", [len(WORDS) + 5, len(WORDS) + 6, len(WORDS) + 7])  # ids never seen
    assert copy > 1.0
    assert unrelated == 0.0


def test_repeating_a_rewarded_word_does_not_raise_the_score():
    references = {"image0": [[1, 2, 3, 4]] * 5, "image1": [[5, 6, 7]] * 5, "image2": [[8, 9]] * 5}
    reward = CiderD(references)
    assert reward.score("image0", [1, 1, 1, 1]) < reward.score("image0", [1, 2, 3, 4])
    assert reward.score("image0", [1, 2, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4]) < reward.score("image0", [1, 2, 3, 4])


def test_empty_candidate_and_bad_arguments():
    references = {"image0": [[1, 2]], "image1": [[3]]}
    reward = CiderD(references)
    assert reward.score("image0", []) == 0.0
    with pytest.raises(ValueError, match="2 keys for 1 candidates"):
        reward.scores(["image0", "image1"], [[1]])
    with pytest.raises(ValueError, match="at least one image"):
        CiderD({})
