"""An exponential moving average of a decoder's weights (Polyak averaging) for self-critical training.

Policy-gradient updates are noisy: the average of the recent weights scores better than the last
weights alone. It lives in a copy of the decoder, so validation, decoding and saving use it as is.
"""
from __future__ import annotations

import copy

import torch


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"weight-average decay must be between 0 and 1, got {decay}")
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """average <- decay * average + (1 - decay) * current, for every floating-point tensor."""
        current = model.state_dict()
        for name, average in self.model.state_dict().items():
            if average.is_floating_point():
                average.lerp_(current[name], 1.0 - self.decay)
            else:
                average.copy_(current[name])
