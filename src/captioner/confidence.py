"""How sure captioner is of a caption's subject: a logistic model over signals that predict it, fitted on dev.

The signals (all in [0, 1] or 0/1, none on the decoder's own probability scale, so one fit serves every run on
the encoder it was fitted for):
- familiarity: cosine similarity of the photo to its nearest training photo; photos unlike Flickr8k's get the
  decoder's people-and-dogs habits.
- support: the classifier's probability of the caption's best-recognised word (captioner.grounded.support).
- fallback: 1 when the caption is the grounding fallback (it names only what the classifier recognised), and
  says_nothing: 1 when that fallback is the bare "a photo".
- unsupported_person / backed_person: 1 when the caption names a person and the classifier has no evidence of
  one / has some (clothing as worn).
benchmarks/fit_confidence.py fits the weights on the dev halves and draws the reliability plot; they live in
grounding.json beside the grounding thresholds. A caption under DOUBTFUL_BELOW is marked doubtful.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

FEATURES = ("familiarity", "support", "fallback", "says_nothing", "unsupported_person", "backed_person")
# chosen on the dev halves by benchmarks/fit_confidence.py: the least expected cost when an unflagged wrong caption
# costs two needless reviews (real photos dev, 80 photos: 25% flagged, 70% of them wrong, half the wrong ones
# caught; Flickr8k dev: 0.2% flagged)
DOUBTFUL_BELOW = 0.65


@dataclass(frozen=True)
class ConfidenceModel:
    weights: dict[str, float]
    bias: float

    def __call__(self, signals: dict[str, float]) -> float:
        logit = self.bias + sum(self.weights[name] * float(signals[name]) for name in FEATURES)
        return 1.0 / (1.0 + math.exp(-logit))

    def to_dict(self) -> dict[str, object]:
        return {"weights": {name: round(self.weights[name], 4) for name in FEATURES}, "bias": round(self.bias, 4)}


def fit(signals: Sequence[dict[str, float]], correct: Sequence[bool], *, weights: Sequence[float] | None = None,
        l2: float = 0.001) -> ConfidenceModel:
    """Logistic regression (L-BFGS, a light L2 penalty on the coefficients) of `correct` on the signals, each row
    counted with its weight (default 1)."""
    if len(signals) != len(correct) or len(set(correct)) < 2:
        raise ValueError("fitting a confidence model needs one label per row and both right and wrong captions")
    row_weights = torch.tensor(list(weights) if weights is not None else [1.0] * len(correct), dtype=torch.float64)
    if row_weights.shape[0] != len(correct):
        raise ValueError("fitting a confidence model needs one weight per row")
    inputs = torch.tensor([[float(row[name]) for name in FEATURES] for row in signals], dtype=torch.float64)
    targets = torch.tensor([float(value) for value in correct], dtype=torch.float64)
    coefficients = torch.zeros(len(FEATURES), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([coefficients, bias], max_iter=500, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        per_row = torch.nn.functional.binary_cross_entropy_with_logits(inputs @ coefficients + bias, targets, reduction="none")
        value = (per_row * row_weights).sum() / row_weights.sum() + l2 * coefficients.square().sum()
        value.backward()
        return value

    optimiser.step(loss)
    return ConfidenceModel(dict(zip(FEATURES, coefficients.detach().tolist(), strict=True)), float(bias.detach()))
