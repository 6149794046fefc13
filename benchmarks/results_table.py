"""The README's results table: one markdown row per evaluation folder, then the published rows.

    python benchmarks/results_table.py "default (XE only)=runs/default-xe/eval-test" "default=runs/default/eval-test" ...

Each argument is LABEL=FOLDER, where FOLDER is what `captioner evaluate` wrote. Training wall time is
the sum of the run's epoch times (history.csv; for an ensemble, of every member's), and "to dev BLEU-4
0.213" is the training time until greedy dev BLEU-4 first reached 0.213 (the Show-Attend-Tell score).
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from captioner.evaluate import PUBLISHED_FLICKR8K
from captioner.metrics import METRIC_NAMES

TARGET_DEV_BLEU4 = 0.213


def training_minutes(run: Path) -> tuple[float, float | None, bool]:
    """(total training minutes, minutes until dev BLEU-4 first reached the target or None, whether epochs before that
    skipped the dev evaluation, so that it may have been reached sooner)."""
    rows = list(csv.DictReader((run / "history.csv").open()))
    elapsed, reached, skipped = 0.0, None, False
    for row in rows:
        elapsed += float(row["epoch_seconds"])
        if reached is None:
            if not row["dev_BLEU-4"]:  # train.dev_evaluation_from_epoch left this epoch out
                skipped = True
            elif float(row["dev_BLEU-4"]) >= TARGET_DEV_BLEU4:
                reached = elapsed
    return elapsed / 60, None if reached is None else reached / 60, skipped


def row_for(label: str, folder: Path) -> str:
    metrics = json.loads((folder / "metrics.json").read_text())
    # the run the folder sits in (RUN/eval-SPLIT), which may have been copied since it was scored
    run = folder.parent if (folder.parent / "history.csv").is_file() else Path(metrics["run"])
    runs = [run, *(Path(member) for member in metrics.get("ensemble", []))]
    times = [training_minutes(run) for run in runs]
    total = sum(minutes for minutes, _, _ in times)
    _, reached, skipped = times[0]
    reached_text = "n/a" if len(runs) > 1 else ("not reached" if reached is None else f"{'at most ' if skipped else ''}{reached:.0f} min")
    scores = " | ".join(f"{100 * metrics['scores'][name]:.1f}" for name in METRIC_NAMES)
    decoding = f"beam {metrics['beam_size']}, lp {metrics['length_penalty']}"
    if metrics.get("rerank_neighbours"):
        decoding += f", reranked ({metrics['rerank_neighbours']} neighbours, weight {metrics['rerank_weight']})"
    if metrics.get("flip_ensemble"):
        decoding += ", flip ensemble"
    return f"| {label} | {scores} | {total:.0f} min | {reached_text} | {decoding} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", metavar="LABEL=FOLDER")
    args = parser.parse_args()
    print("| system | " + " | ".join(METRIC_NAMES) + " | training | to dev BLEU-4 0.213 | decoding |")
    print("|---" * (len(METRIC_NAMES) + 4) + "|")
    for item in args.rows:
        label, _, folder = item.rpartition("=")  # a label may hold "=", a folder does not
        print(row_for(label, Path(folder)))
    for system, scores in PUBLISHED_FLICKR8K.items():
        values = " | ".join("n/a" if scores.get(name) is None else f"{100 * scores[name]:.1f}" for name in METRIC_NAMES)
        print(f"| {system} | {values} | | | |")


if __name__ == "__main__":
    main()
