"""Score a run on a split with beam search; write metrics.json, report.md, a sample grid and an attention picture."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from captioner.checkpoint import read_json
from captioner.data.flickr import load_prepared
from captioner.data.images import load_image
from captioner.errors import CaptionerError
from captioner.inference import Caption, Captioner
from captioner.io import atomic_write_json, atomic_write_text
from captioner.metrics import METRIC_NAMES, score_captions
from captioner.pipeline import extract_mirrored_features, open_prepared_features

log = logging.getLogger(__name__)

# Xu et al. 2015, Table 1, Flickr8k (BLEU and METEOR only; the paper reports no ROUGE-L or CIDEr), and the
# adaptive-attention re-implementation our issue tracker compares against (BLEU-4, METEOR and CIDEr only)
PUBLISHED_FLICKR8K = {
    "Show, Attend and Tell, soft (Xu et al. 2015)": {"BLEU-1": 0.670, "BLEU-2": 0.448, "BLEU-3": 0.299, "BLEU-4": 0.195, "METEOR": 0.1893},
    "Show, Attend and Tell, hard (Xu et al. 2015)": {"BLEU-1": 0.670, "BLEU-2": 0.457, "BLEU-3": 0.314, "BLEU-4": 0.213, "METEOR": 0.2030},
    "Adaptive attention, ResNet-152 fine-tuned (public re-implementation)": {"BLEU-4": 0.235, "METEOR": 0.207, "CIDEr": 0.589},
}


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _reranking(metrics: dict[str, Any]) -> str:
    if not metrics.get("rerank_neighbours"):
        return ""
    return f", consensus reranking with {metrics['rerank_neighbours']} neighbours at weight {metrics['rerank_weight']}"


def _flips(metrics: dict[str, Any]) -> str:
    return ", each photo decoded together with its mirror image" if metrics.get("flip_ensemble") else ""


def _grounding(metrics: dict[str, Any]) -> str:
    if not metrics.get("grounding"):
        return "; ungrounded"
    grounded = metrics["grounded"]
    return (f"; grounded in the encoder's classifier ({grounded['fallback_captions']} fallback captions, "
            f"{grounded['decoder_after_doubts']} decoder captions after a conflicting first candidate"
            f"{'' if metrics.get('fallback') else ', fallback off'})")


def write_report(path: Path, run_name: str, split: str, metrics: dict[str, Any]) -> None:
    columns = [*METRIC_NAMES, "SPICE"]
    lines = [
        f"# Evaluation of `{run_name}` on the Flickr8k {split} split",
        "",
        f"{metrics['images']} images, {metrics['references_per_image']:.1f} references each; beam size {metrics['beam_size']}, "
        f"length penalty {metrics['length_penalty']}{_reranking(metrics)}{_flips(metrics)}{_grounding(metrics)}; "
        "scores in percent (pycocoevalcap, PTB tokenizer).",
        "",
        "| system | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
        f"| **captioner `{run_name}`** | " + " | ".join(_percent(metrics["scores"].get(name)) for name in columns) + " |",
    ]
    for system, scores in PUBLISHED_FLICKR8K.items():
        lines.append(f"| {system} | " + " | ".join(_percent(scores.get(name)) for name in columns) + " |")
    if metrics["scores"].get("SPICE") is None:
        lines += ["", f"SPICE: unavailable ({metrics['spice_unavailable']})."]
    lines += ["", f"Decoding took {metrics['decode_seconds']:.1f} s for {metrics['images']} images.", "",
              "![samples](samples.png)", "", "![attention](attention.png)", ""]
    atomic_write_text(path, "\n".join(lines))


def grounding_summary(captions: list[Caption]) -> dict[str, Any]:
    """How grounding changed a split's captions: fallbacks, candidates passed over, and the confidences."""
    confidences = [caption.confidence for caption in captions if caption.confidence is not None]
    return {"fallback_captions": sum(caption.source == "fallback" for caption in captions),
            # the decoder's first candidate conflicted, yet a decoder caption stands: another candidate, or (fallback off) it
            "decoder_after_doubts": sum(caption.source == "decoder" and bool(caption.doubts) for caption in captions),
            "mean_confidence": round(float(np.mean(confidences)), 4) if confidences else None,
            "doubtful": sum(caption.doubtful for caption in captions)}


def evaluate_run(run_dir: str | Path, *, split: str = "test", beam_size: int | None = None, length_penalty: float | None = None,
                 rerank_neighbours: int | None = None, rerank_weight: float | None = None, flip_ensemble: bool | None = None,
                 grounding: bool | None = None, fallback: bool | None = None, max_images: int = 0,
                 output_dir: str | Path | None = None, pictures: bool = True,
                 ensemble: list[str] | None = None) -> dict[str, Any]:
    """Caption every image of `split` from the cached features, score, and write the report files.

    The run's own metrics.json records the score only of an evaluation into its default folder,
    RUN/eval-SPLIT. One written to `output_dir` (a tuning sweep, a side check) or of an `ensemble`
    (more runs, reported in RUN/eval-SPLIT-ensemble) leaves it alone: those scores are not the run's.
    """
    from captioner.metrics import spice_unavailable_reason
    from captioner.viz import plot_attention, plot_samples

    ensemble = [str(member) for member in ensemble or ()]
    captioner = Captioner.load(run_dir, ensemble=ensemble)
    config = captioner.config
    # resolved here rather than in decode() because metrics.json records them
    settings = captioner.decode_settings(beam_size=beam_size, length_penalty=length_penalty, rerank_neighbours=rerank_neighbours,
                                         rerank_weight=rerank_weight, flip_ensemble=flip_ensemble, grounding=grounding,
                                         fallback=fallback)
    options = {"beam_size": settings.beam_size, "length_penalty": settings.length_penalty,
               "rerank_neighbours": settings.rerank_neighbours, "rerank_weight": settings.rerank_weight,
               "flip_ensemble": settings.flip_ensemble, "grounding": settings.grounding and captioner.recogniser is not None,
               "fallback": settings.fallback}
    images_dir, splits, _ = load_prepared(config.data.prepared_dir)
    if split not in splits:
        raise CaptionerError(f"unknown split '{split}'; the prepared data has {', '.join(splits)}")
    references_by_image = splits[split]
    cache = open_prepared_features(config, splits)
    names = cache.available(sorted(references_by_image))
    if max_images:
        names = names[:max_images]
    mirrored = extract_mirrored_features(config, names, images_dir) if settings.flip_ensemble else None
    if mirrored is not None:
        names = mirrored.available(names)
    if not names:
        raise CaptionerError(f"no {split} images with cached features for {run_dir}")
    started = time.perf_counter()
    captions = {}
    for start in range(0, len(names), 50):
        batch = names[start : start + 50]
        views = cache.load(batch), (mirrored.load(batch) if mirrored is not None else None)
        decoded = captioner.decode(*views, photos=[images_dir / name for name in batch], **options)
        for name, caption in zip(batch, decoded, strict=True):
            captions[name] = caption
    decode_seconds = time.perf_counter() - started
    references = {name: [" ".join(words) for words in references_by_image[name]] for name in names}
    scores = score_captions(references, {name: captions[name].text for name in names})
    metrics = {
        "run": str(run_dir), "split": split, "images": len(names),
        "references_per_image": float(np.mean([len(refs) for refs in references.values()])),
        **options, "ensemble": ensemble,
        "scores": scores, "grounded": grounding_summary(list(captions.values())),
        "spice_unavailable": spice_unavailable_reason(), "decode_seconds": decode_seconds,
    }
    record = not output_dir and not ensemble
    output_dir = Path(output_dir) if output_dir else Path(run_dir) / (f"eval-{split}-ensemble" if ensemble else f"eval-{split}")
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output_dir / "metrics.json", metrics)
    atomic_write_json(output_dir / "captions.json", {name: captions[name].text for name in names})
    run_name = " + ".join(Path(run).name for run in [run_dir, *ensemble])
    write_report(output_dir / "report.md", run_name, split, metrics)
    if pictures:
        samples = [(load_image(images_dir / name), captions[name].text, references[name]) for name in names[:12]]
        plot_samples(samples, output_dir / "samples.png")
        # the first caption the decoder wrote (a fallback caption has no attention to draw)
        name = next((name for name in names if captions[name].source == "decoder"), None)
        if name is not None:
            first = captions[name]
            plot_attention(load_image(images_dir / name), first.tokens, first.attention.reshape(len(first.attention), -1),
                           output_dir / "attention.png")
    if not record:
        return metrics
    # the run's own metrics.json records the latest score per split
    run_metrics_path = Path(run_dir) / "metrics.json"
    run_metrics = read_json(run_metrics_path) if run_metrics_path.is_file() else {}
    run_metrics[split] = {key: metrics[key] for key in ("images", "beam_size", "length_penalty", "rerank_neighbours",
                                                        "rerank_weight", "flip_ensemble", "grounding", "fallback", "scores",
                                                        "grounded")}
    atomic_write_json(run_metrics_path, run_metrics)
    return metrics
