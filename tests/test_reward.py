"""The CIDEr-D, BLEU and METEOR-like rewards on token ids agree with pycocoevalcap and reward what they should."""
from __future__ import annotations

import math
import random
import shutil

import pytest
from pycocoevalcap.bleu.bleu_scorer import BleuScorer
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor

from captioner.reward import FUNCTION_WORDS, CiderD, SelfCriticalReward, SentenceBleu, SentenceMeteor

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


# words no stem, synonym or paraphrase of METEOR's joins, so its matches are exact ones
METEOR_WORDS = "the a on in with dog grass ball red water man jumps child beach bicycle".split()


def as_meteor_text(ids: list[int]) -> str:
    return " ".join(METEOR_WORDS[index] for index in ids)


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR 1.5 needs Java")
def test_sentence_meteor_equals_meteor_1_5_where_matches_are_exact_and_unrepeated():
    generator = random.Random(0)
    references, candidates = {}, {}
    for index in range(40):
        refs = [generator.sample(range(len(METEOR_WORDS)), generator.randint(3, 9)) for _ in range(3)]
        source = list(refs[0])
        if index % 2:  # shuffled: several chunks
            generator.shuffle(source)
        candidate = generator.sample(source, generator.randint(1, len(source)))
        candidate += [word for word in generator.sample(range(len(METEOR_WORDS)), 2) if word not in candidate][:1]
        references[f"image{index}"], candidates[f"image{index}"] = refs, candidate
    _, expected = Meteor().compute_score({key: [as_meteor_text(ref) for ref in refs] for key, refs in references.items()},
                                         {key: [as_meteor_text(candidates[key])] for key in references})
    meteor = SentenceMeteor(references, {index for index, word in enumerate(METEOR_WORDS) if word in FUNCTION_WORDS})
    assert [meteor.score(key, candidates[key]) for key in references] == pytest.approx(list(expected), abs=1e-4)


def test_sentence_meteor_weighs_recall_function_words_and_fragmentation():
    dog, runs, grass, the, on = 1, 2, 3, 4, 5
    meteor = SentenceMeteor({"image0": [[the, dog, runs, on, the, grass], [dog, grass]]}, {the, on})
    # a copy of a reference: one chunk of n matches, penalty 0.6 x (1/n)^0.2
    assert meteor.score("image0", [dog, grass]) == pytest.approx(1 - 0.6 * 0.5**0.2)
    # the longer reference is better matched by its own copy
    full = meteor.score("image0", [the, dog, runs, on, the, grass])
    assert full == pytest.approx(1 - 0.6 * (1 / 6) ** 0.2)
    # recall counts most: leaving out a content word costs more than leaving out a function word
    assert meteor.score("image0", [the, dog, runs, on, the]) < meteor.score("image0", [dog, runs, on, the, grass])
    # the same words in a scrambled order make more chunks
    assert meteor.score("image0", [runs, the, grass, dog, on]) < meteor.score("image0", [the, dog, runs, on, grass])
    assert meteor.score("image0", [7, 8]) == 0.0
    assert meteor.score("image0", []) == 0.0


def test_self_critical_reward_adds_weighted_bleu_and_meteor_to_cider():
    references, candidates = random_corpus(10, 3)
    keys = list(references)
    drawn = [candidates[key] for key in keys]
    cider = CiderD(references).scores(keys, drawn)
    bleu = [SentenceBleu(references).score(key, candidate) for key, candidate in zip(keys, drawn, strict=True)]
    function_ids = {WORDS.index(word) for word in WORDS if word in FUNCTION_WORDS}
    meteor = [SentenceMeteor(references, function_ids).score(key, candidate) for key, candidate in zip(keys, drawn, strict=True)]
    assert SelfCriticalReward(references).scores(keys, drawn) == cider
    mixed = SelfCriticalReward(references, bleu_weight=2.0).scores(keys, drawn)
    assert mixed == pytest.approx([c + 2.0 * b for c, b in zip(cider, bleu, strict=True)])
    mixed = SelfCriticalReward(references, bleu_weight=2.0, meteor_weight=0.5, function_ids=function_ids).scores(keys, drawn)
    assert mixed == pytest.approx([c + 2.0 * b + 0.5 * m for c, b, m in zip(cider, bleu, meteor, strict=True)])
    assert any(b > 0 for b in bleu) and any(m > 0 for m in meteor)
