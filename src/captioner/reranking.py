"""Consensus reranking (Devlin et al. 2015, "Exploring nearest neighbor approaches for image captioning";
Mao et al. 2015): the beam's candidates are re-scored by how well they agree with the captions of
the training photos that look most like the input.

A caption memory holds each training image's pooled features (the grid's mean, scaled to unit
length) and its reference captions as token ids; training saves it with the run as
`memory.safetensors`. A candidate's consensus is its CIDEr-D against the references of the
`neighbours` most similar training images (cosine similarity), and its ranking score gains
`weight` x consensus.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.nn import functional as F

from captioner.checkpoint import load_tensors, save_tensors
from captioner.decoding import Hypothesis
from captioner.errors import CaptionerError
from captioner.reward import CiderD

MEMORY_FILE = "memory.safetensors"


def pooled_features(grid: torch.Tensor, *, chunk: int = 500) -> torch.Tensor:
    """(images, pixels, channels) grid -> (images, channels) unit-length mean vectors, in float32."""
    pooled = [grid[start : start + chunk].float().mean(dim=1) for start in range(0, grid.shape[0], chunk)]
    return F.normalize(torch.cat(pooled), dim=1)


def save_memory(path: str | Path, grid: torch.Tensor, captions: Sequence[Sequence[Sequence[int]]]) -> None:
    """Write the caption memory of training images: their (images, pixels, channels) grids and captions
    (per image, token-id lists without <start>/<end>)."""
    if grid.shape[0] != len(captions) or not len(captions):
        raise ValueError(f"a caption memory needs one caption list per image, got {grid.shape[0]} grids and {len(captions)}")
    rows = [(image, caption) for image, image_captions in enumerate(captions) for caption in image_captions]
    padded = torch.zeros((len(rows), max(len(caption) for _, caption in rows)), dtype=torch.int32)
    for row, (_, caption) in enumerate(rows):  # <pad> (id 0) never occurs inside a caption
        padded[row, : len(caption)] = torch.tensor(caption, dtype=torch.int32)
    save_tensors(path, {"features": pooled_features(grid).half(), "captions": padded,
                        "caption_image": torch.tensor([image for image, _ in rows], dtype=torch.int32)})


class CaptionMemory:
    """The training images' pooled features and captions, with CIDEr-D tables over those captions."""

    def __init__(self, features: torch.Tensor, captions: Sequence[Sequence[Sequence[int]]]):
        if features.shape[0] != len(captions) or not len(captions):
            raise ValueError(f"a caption memory needs one caption list per feature row, got {features.shape[0]} and {len(captions)}")
        self.features = F.normalize(features.float(), dim=1)  # (images, channels)
        self.captions = [[list(caption) for caption in image_captions] for image_captions in captions]
        # document frequencies from the training references, as the SCST reward has them (about a second for Flickr8k)
        self.cider = CiderD({str(row): image_captions for row, image_captions in enumerate(self.captions)})

    @classmethod
    def load(cls, path: str | Path) -> CaptionMemory:
        tensors = load_tensors(path)
        try:
            captions: list[list[list[int]]] = [[] for _ in range(tensors["features"].shape[0])]
            for image, caption in zip(tensors["caption_image"].tolist(), tensors["captions"].tolist(), strict=True):
                captions[image].append([token for token in caption if token != 0])
            return cls(tensors["features"], captions)
        except (KeyError, IndexError, ValueError):
            raise CaptionerError(f"caption memory {path} is corrupt; `captioner train` with the run's config writes it again") from None

    def nearest(self, grid: torch.Tensor, count: int) -> torch.Tensor:
        """(images, count) rows of the training images most similar to each image of `grid`, nearest first."""
        similarity = self.similarity(grid)
        return similarity.topk(min(count, similarity.shape[1]), dim=1).indices

    def familiarity(self, grid: torch.Tensor) -> torch.Tensor:
        """(images,) cosine similarity of each image to its most similar training image."""
        return self.similarity(grid).max(dim=1).values

    def similarity(self, grid: torch.Tensor) -> torch.Tensor:
        """(images, memory images) cosine similarity of each image to every training image."""
        return pooled_features(grid) @ self.features.T

    def rerank(self, grid: torch.Tensor, hypotheses: list[list[Hypothesis]], *, neighbours: int,
               weight: float) -> list[list[Hypothesis]]:
        """Each image's hypotheses with score + weight x consensus as their score, best first."""
        if neighbours < 1:
            raise ValueError(f"consensus reranking needs at least 1 neighbour, got {neighbours}")
        reranked = []
        for rows, candidates in zip(self.nearest(grid, neighbours).tolist(), hypotheses, strict=True):
            keys = [str(row) for row in rows]
            rescored = [dataclasses.replace(hypothesis, score=hypothesis.score + weight * self.cider.consensus(keys, hypothesis.token_ids))
                        for hypothesis in candidates]
            reranked.append(sorted(rescored, key=lambda hypothesis: hypothesis.score, reverse=True))
        return reranked
