"""CIDEr-D (and sentence BLEU-4) on token ids: the rewards of self-critical sequence training (Rennie et al. 2017).

Document frequencies come from the training references once, so scoring a sampled caption needs
no tokenizer, no Java and no text: n-gram counts of id tuples, tf-idf vectors, a cosine per n.
CIDEr-D (Vedantam et al. 2015) clips the candidate's counts at the reference's and multiplies by
a Gaussian penalty on the length difference, so repeating a good word earns nothing. This is
the same formula as pycocoevalcap's `Cider`, the evaluation metric (tests check they agree).
`SelfCriticalReward` can add a smoothed sentence-level BLEU-4 and a METEOR-like score to it.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

MAX_ORDER = 4
SIGMA = 6.0  # width of the length penalty, in words


def _ngram_counts(tokens: Sequence[int]) -> Counter:
    counts: Counter = Counter()
    for order in range(1, MAX_ORDER + 1):
        for start in range(len(tokens) - order + 1):
            counts[tuple(tokens[start : start + order])] += 1
    return counts


class CiderD:
    """Scores candidates (lists of token ids) against the references of one image each.

    `references` holds, per image key, its reference captions as token-id lists (no <start>/<end>).
    """

    def __init__(self, references: dict[str, list[list[int]]]):
        if not references:
            raise ValueError("CIDEr-D needs at least one image with references")
        self.document_frequency: Counter = Counter()
        for captions in references.values():
            # an n-gram counts once per image, however many of its references contain it
            self.document_frequency.update({ngram for caption in captions for ngram in _ngram_counts(caption)})
        self.log_images = math.log(float(len(references)))
        self.references = references
        self._reference_vectors: dict[str, list] = {}  # filled on first use: reranking reads a few images' references

    def _vectors_of(self, key: str) -> list:
        if key not in self._reference_vectors:
            self._reference_vectors[key] = [self._vector(caption) for caption in self.references[key]]
        return self._reference_vectors[key]

    def _vector(self, tokens: Sequence[int]) -> tuple[list[dict[tuple, float]], list[float], int]:
        """tf-idf weights per n-gram order, their norms, and the caption's length in words."""
        weights: list[dict[tuple, float]] = [{} for _ in range(MAX_ORDER)]
        for ngram, count in _ngram_counts(tokens).items():
            idf = self.log_images - math.log(max(1.0, self.document_frequency[ngram]))
            weights[len(ngram) - 1][ngram] = count * idf
        norms = [math.sqrt(sum(value * value for value in order.values())) for order in weights]
        return weights, norms, len(tokens)

    def _similarity(self, candidate, reference) -> float:
        candidate_weights, candidate_norms, candidate_length = candidate
        reference_weights, reference_norms, reference_length = reference
        penalty = math.exp(-((candidate_length - reference_length) ** 2) / (2 * SIGMA**2))
        total = 0.0
        for order in range(MAX_ORDER):
            if not candidate_norms[order] or not reference_norms[order]:
                continue
            ref = reference_weights[order]
            dot = 0.0
            for ngram, value in candidate_weights[order].items():
                if ngram in ref:
                    dot += min(value, ref[ngram]) * ref[ngram]
            total += dot / (candidate_norms[order] * reference_norms[order])
        return penalty * total / MAX_ORDER

    def score(self, key: str, candidate: Sequence[int]) -> float:
        """CIDEr-D of one candidate against image `key`'s references (x10, as the metric reports)."""
        return self.consensus([key], candidate)

    def consensus(self, keys: Sequence[str], candidate: Sequence[int]) -> float:
        """CIDEr-D of one candidate against the references of several images together (x10)."""
        vector = self._vector(candidate)
        references = [reference for key in keys for reference in self._vectors_of(key)]
        return 10.0 * sum(self._similarity(vector, reference) for reference in references) / len(references)

    def scores(self, keys: Sequence[str], candidates: Sequence[Sequence[int]]) -> list[float]:
        if len(keys) != len(candidates):
            raise ValueError(f"got {len(keys)} keys for {len(candidates)} candidates")
        return [self.score(key, candidate) for key, candidate in zip(keys, candidates, strict=True)]


class SentenceBleu:
    """Smoothed sentence-level BLEU-4 of a candidate against one image's references (0-1).

    As pycocoevalcap's BLEU: counts clipped at the most any one reference holds, brevity penalty
    against the reference closest in length (the shorter on a tie). Orders 2-4 add one to both their
    matched and total counts (Lin & Och 2004), so a sample without a 4-gram match still earns
    credit for its shorter matches instead of a flat zero.
    """

    def __init__(self, references: dict[str, list[list[int]]]):
        self.references = references
        self._tables: dict[str, tuple[Counter, list[int]]] = {}  # per image: clip counts, reference lengths

    def _table(self, key: str) -> tuple[Counter, list[int]]:
        if key not in self._tables:
            clips: Counter = Counter()
            for caption in self.references[key]:
                clips |= _ngram_counts(caption)  # | keeps the larger count per n-gram
            self._tables[key] = clips, [len(caption) for caption in self.references[key]]
        return self._tables[key]

    def score(self, key: str, candidate: Sequence[int]) -> float:
        if not candidate:
            return 0.0
        clips, reference_lengths = self._table(key)
        matched, total = [0] * MAX_ORDER, [0] * MAX_ORDER
        for ngram, count in _ngram_counts(candidate).items():
            order = len(ngram) - 1
            matched[order] += min(count, clips[ngram])
            total[order] += count
        if not matched[0]:
            return 0.0
        log_precision = math.log(matched[0] / total[0])
        log_precision += sum(math.log((matched[order] + 1) / (total[order] + 1)) for order in range(1, MAX_ORDER))
        length = len(candidate)
        closest = min(reference_lengths, key=lambda reference: (abs(reference - length), reference))
        brevity = min(0.0, 1.0 - closest / length)
        return math.exp(brevity + log_precision / MAX_ORDER)


# METEOR 1.5's English function words (its jar's function/english.words, without the punctuation and the "'s" and
# "'t" that captioner's tokenizer never keeps): a match of one counts a third as much as a match of a content word
FUNCTION_WORDS = frozenset(
    "the to of and a in that for is on it with was as said at he by be from have has are his but an this not i will "
    "they who their had we which were been more or s its would about new one after you also up when there than all out "
    "her people she year two can if last first over other into some what so no time years could".split())


def function_word_ids(word_index: Mapping[str, int]) -> frozenset[int]:
    """The ids of the function words a vocabulary (word -> id) has."""
    return frozenset(word_index[word] for word in FUNCTION_WORDS if word in word_index)


class SentenceMeteor:
    """A METEOR-like score of a candidate against one image's references (0-1), the best over them.

    METEOR 1.5 for English (Denkowski & Lavie 2014) on exact word matches only (no stems, synonyms or
    paraphrases): precision and recall with function words weighted 0.25 and content words 0.75, their
    recall-weighted harmonic mean (alpha 0.85), times 1 - 0.6 x (chunks / matches)^0.2. The alignment is
    greedy, each word continuing the previous match where the reference allows, which is what METEOR's
    fewest-chunks search finds on captions this short in all but rare repeats.
    """

    ALPHA, BETA, GAMMA, DELTA = 0.85, 0.20, 0.60, 0.75

    def __init__(self, references: dict[str, list[list[int]]], function_ids: frozenset[int] | set[int] = frozenset()):
        self.references = references
        self.function_ids = function_ids
        self._tables: dict[str, list[tuple[list[int], dict[int, list[int]], float]]] = {}

    def _weight(self, word: int) -> float:
        return 1.0 - self.DELTA if word in self.function_ids else self.DELTA

    def _table(self, key: str) -> list[tuple[list[int], dict[int, list[int]], float]]:
        """Per reference: its words, each word's positions, and its weighted length."""
        if key not in self._tables:
            table = []
            for caption in self.references[key]:
                positions: dict[int, list[int]] = {}
                for position, word in enumerate(caption):
                    positions.setdefault(word, []).append(position)
                table.append((caption, positions, sum(self._weight(word) for word in caption)))
            self._tables[key] = table
        return self._tables[key]

    def score(self, key: str, candidate: Sequence[int]) -> float:
        if not candidate:
            return 0.0
        candidate_weight = sum(self._weight(word) for word in candidate)
        return max(self._against(candidate, candidate_weight, *reference) for reference in self._table(key))

    def _against(self, candidate: Sequence[int], candidate_weight: float, reference: list[int],
                 positions: dict[int, list[int]], reference_weight: float) -> float:
        used: set[int] = set()
        matched_weight = 0.0
        matches = chunks = 0
        previous = -2  # reference position of the previous candidate word's match; -2: it had none
        for word in candidate:
            if 0 <= previous < len(reference) - 1 and reference[previous + 1] == word and previous + 1 not in used:
                position = previous + 1
            else:
                position = next((p for p in positions.get(word, ()) if p not in used), -2)
            if position < 0:
                previous = -2
                continue
            if position != previous + 1:
                chunks += 1
            used.add(position)
            matches += 1
            matched_weight += self._weight(word)
            previous = position
        if not matches:
            return 0.0
        precision, recall = matched_weight / candidate_weight, matched_weight / reference_weight
        f_mean = precision * recall / (self.ALPHA * precision + (1 - self.ALPHA) * recall)
        return f_mean * (1.0 - self.GAMMA * (chunks / matches) ** self.BETA)


class SelfCriticalReward:
    """The SCST reward per sampled caption: CIDEr-D (x10), plus `bleu_weight` x sentence BLEU-4 and
    `meteor_weight` x the METEOR-like score when they are set."""

    def __init__(self, references: dict[str, list[list[int]]], *, bleu_weight: float = 0.0, meteor_weight: float = 0.0,
                 function_ids: frozenset[int] | set[int] = frozenset()):
        self.cider = CiderD(references)
        self.extra_terms: list[tuple[float, SentenceBleu | SentenceMeteor]] = []
        if bleu_weight:
            self.extra_terms.append((bleu_weight, SentenceBleu(references)))
        if meteor_weight:
            self.extra_terms.append((meteor_weight, SentenceMeteor(references, function_ids)))

    def scores(self, keys: Sequence[str], candidates: Sequence[Sequence[int]]) -> list[float]:
        scores = self.cider.scores(keys, candidates)
        for weight, scorer in self.extra_terms:
            scores = [score + weight * scorer.score(key, candidate) for score, key, candidate in zip(scores, keys, candidates, strict=True)]
        return scores
