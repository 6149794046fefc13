"""Pictures: training curves, a grid of sample captions, and per-word attention overlays."""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from captioner.io import atomic_write  # noqa: E402


def _save(figure, path: str | Path) -> None:
    atomic_write(path, lambda temp: figure.savefig(temp, format="png", dpi=100, bbox_inches="tight"))
    plt.close(figure)


def plot_training_curves(history: list[dict[str, float]], path: str | Path) -> None:
    """Loss (train and dev) and dev BLEU-4 / CIDEr per epoch; self-critical epochs show their mean reward instead
    of a training loss (a policy-gradient loss is not comparable with cross-entropy)."""
    epochs = [row["epoch"] for row in history]
    cross_entropy = [row for row in history if row.get("phase") != "scst"]
    self_critical = [row for row in history if row.get("phase") == "scst"]
    figure, (loss_axis, score_axis) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axis.plot([row["epoch"] for row in cross_entropy], [row["train_loss"] for row in cross_entropy], marker="o", label="train loss")

    def dev(key: str) -> list[float]:  # NaN (a gap in the line) for epochs that skipped the dev evaluation
        return [row.get(key, math.nan) for row in history]

    loss_axis.plot(epochs, dev("dev_loss"), marker="o", label="dev loss (cross-entropy)")
    score_axis.plot(epochs, dev("dev_BLEU-4"), marker="o", label="dev BLEU-4")
    score_axis.plot(epochs, dev("dev_CIDEr"), marker="o", label="dev CIDEr")
    if self_critical:
        score_axis.plot([row["epoch"] for row in self_critical], [row["train_reward"] for row in self_critical], marker="o",
                        label="train reward (CIDEr-D of samples)")
        for axis in (loss_axis, score_axis):
            axis.axvline(self_critical[0]["epoch"] - 0.5, color="grey", linestyle="--", label="self-critical from here")
    for axis in (loss_axis, score_axis):
        axis.set_xlabel("epoch")
        axis.legend()
    _save(figure, path)


def attention_overlay(image: Image.Image, weights: np.ndarray, size: int = 224) -> np.ndarray:
    """(pixels,) attention over a square grid -> (size, size, 3) image with the attended region lit."""
    grid = int(round(math.sqrt(weights.size)))
    heat = weights.reshape(grid, grid)
    heat = (heat - heat.min()) / (heat.max() - heat.min() + 1e-8)
    heat_image = Image.fromarray((heat * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    heat_array = np.asarray(heat_image, dtype=np.float32)[..., None] / 255.0
    photo = np.asarray(image.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
    return np.clip(photo * (0.25 + 0.75 * heat_array), 0, 1)


def plot_attention(image: Image.Image, words: list[str], attention: np.ndarray, path: str | Path) -> None:
    """The image once per word (and <end>), the region attended while emitting that word lit."""
    labels = [*words, "<end>"][: len(attention)]
    columns = min(6, len(labels) + 1)
    rows = math.ceil((len(labels) + 1) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.6 * rows))
    axes = np.atleast_1d(axes).ravel()
    axes[0].imshow(image.convert("RGB").resize((224, 224)))
    axes[0].set_title("image", fontsize=10)
    for axis, label, weights in zip(axes[1:], labels, attention, strict=False):  # the grid's last row may have spare axes
        axis.imshow(attention_overlay(image, np.asarray(weights)))
        axis.set_title(label, fontsize=10)
    for axis in axes:
        axis.axis("off")
    _save(figure, path)


def plot_samples(samples: list[tuple[Image.Image, str, list[str]]], path: str | Path) -> None:
    """A grid of images, each with its generated caption and two reference captions."""
    columns = 4
    rows = math.ceil(len(samples) / columns)
    titles = []
    for _, generated, references in samples:
        lines = textwrap.wrap(f"ours: {generated}", 40)
        for reference in references[:2]:
            lines += textwrap.wrap(f"ref: {reference}", 40)
        titles.append("\n".join(lines))
    # room for the tallest title above every photo, so a long caption never runs into the photo above it
    title_inches = 0.14 * max(title.count("\n") + 1 for title in titles)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, (3.6 + title_inches) * rows), layout="constrained")
    axes = np.atleast_1d(axes).ravel()
    for axis, (image, _, _), title in zip(axes, samples, titles, strict=False):  # spare axes in the last row
        axis.imshow(image.convert("RGB").resize((224, 224)))
        axis.set_title(title, fontsize=8, loc="left")
    for axis in axes:
        axis.axis("off")
    _save(figure, path)


def plot_reliability(sets: dict[str, tuple[list[float], list[bool]]], path: str | Path, *, bins: int = 5) -> None:
    """Reliability diagram: per confidence bin, the mean confidence against the share that was right, one line per
    named set of (confidences, right or wrong); marker areas grow with the bin's size."""
    figure, axis = plt.subplots(figsize=(5, 4.5), dpi=120)
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for name, (scores, labels) in sets.items():
        columns = np.minimum((np.asarray(scores) * bins).astype(int), bins - 1)
        right = np.asarray(labels, dtype=float)
        used = [column for column in range(bins) if (columns == column).any()]
        xs = [float(np.mean(np.asarray(scores)[columns == column])) for column in used]
        ys = [float(right[columns == column].mean()) for column in used]
        line, = axis.plot(xs, ys, marker="o", label=f"{name} ({len(scores)} photos)")
        axis.scatter(xs, ys, s=[20 + 4 * int((columns == column).sum()) for column in used], alpha=0.3, color=line.get_color())
    axis.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"confidence (mean of each of {bins} bins)", ylabel="share with the subject right",
             title="Caption confidence, dev halves")
    axis.legend(loc="upper left", fontsize=8)
    _save(figure, path)
