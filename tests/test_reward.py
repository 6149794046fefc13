"""The CIDEr-D and BLEU rewards on token ids agree with pycocoevalcap and reward what they should."""
from __future__ import annotations

import math
import random

import pytest
from pycocoevalcap.bleu.bleu_scorer import BleuScorer
from pycocoevalcap.cider.cider import Cider

from captioner.reward import CiderD, SelfCriticalReward, SentenceBleu

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


def pycocoevalcap_sentence_bleu4(references: list[list[int]], candidate: list[int]) -> float:
    scorer = BleuScorer(n=4)
    scorer.cook_append(as_text(candidate), [as_text(reference) for reference in references])
    _, per_sentence = scorer.compute_score(option="closest", verbose=0)
    return per_sentence[3][0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sentence_bleu_matches_pycocoevalcap_where_every_order_has_a_match(seed):
    # smoothing only moves orders 2-4 by one count, so where all four orders match the two agree closely
    references, _ = random_corpus(30, seed)
    bleu = SentenceBleu(references)
    generator = random.Random(seed)
    checked = 0
    for key, refs in references.items():
        source = max(refs, key=len)
        start = generator.randrange(0, max(1, len(source) - 4))
        candidate = source[start:]
        if len(candidate) < 4:
            continue
        expected = pycocoevalcap_sentence_bleu4(refs, candidate)
        assert bleu.score(key, candidate) == pytest.approx(expected, rel=0.25)
        checked += 1
    assert checked >= 10
    assert bleu.score("image0", max(references["image0"], key=len)) == pytest.approx(1.0)


def test_sentence_bleu_smooths_missing_orders_and_penalises_brevity():
    bleu = SentenceBleu({"image0": [[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 7], [8, 2, 3, 4, 5, 9, 10]]})
    # 3 words: every order's precision is 1 (orders 2-4 smoothed), the closest reference has 5 words
    assert bleu.score("image0", [1, 2, 3]) == pytest.approx(math.exp(1 - 5 / 3))
    # one wrong word in 5: 4/5 unigrams, 2/4 bigrams, 1/3 trigrams, 0/2 4-grams, smoothed (+1) from order 2 on
    expected = math.exp((math.log(4 / 5) + math.log(3 / 5) + math.log(2 / 4) + math.log(1 / 3)) / 4)
    assert bleu.score("image0", [1, 2, 3, 11, 5]) == pytest.approx(expected)
    assert bleu.score("image0", [11, 12]) == 0.0  # no word in common
    assert bleu.score("image0", []) == 0.0


def test_self_critical_reward_adds_weighted_bleu_to_cider():
    references, candidates = random_corpus(10, 3)
    keys = list(references)
    drawn = [candidates[key] for key in keys]
    cider = CiderD(references).scores(keys, drawn)
    bleu = [SentenceBleu(references).score(key, candidate) for key, candidate in zip(keys, drawn)]
    assert SelfCriticalReward(references).scores(keys, drawn) == cider
    mixed = SelfCriticalReward(references, bleu_weight=2.0).scores(keys, drawn)
    assert mixed == pytest.approx([c + 2.0 * b for c, b in zip(cider, bleu)])
    assert any(b > 0 for b in bleu)
