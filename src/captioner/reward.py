"""CIDEr-D on token ids: the reward of self-critical sequence training (Rennie et al. 2017).

Document frequencies come from the training references once, so scoring a sampled caption needs
no tokenizer, no Java and no text: n-gram counts of id tuples, tf-idf vectors, a cosine per n.
CIDEr-D (Vedantam et al. 2015) clips the candidate's counts at the reference's and multiplies by
a Gaussian penalty on the length difference, so repeating a good word earns nothing. This is
the same formula as pycocoevalcap's `Cider`, the evaluation metric (tests check they agree).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

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
        return [self.score(key, candidate) for key, candidate in zip(keys, candidates)]
