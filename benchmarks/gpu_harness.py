"""Run captioner's own code on a CUDA GPU, for sweeps only: the product never needs one.

CUDA becomes torch's default device, and the few tensors that captioner makes on the CPU on purpose
(cached features, loaded checkpoints, encoder input) are moved over; nothing else changes. Scores here
skip METEOR and the PTB tokenizer (Java), so score the written captions.json on a machine with Java.

    python benchmarks/gpu_harness.py cli train --config configs/best.yaml --run runs/x   # any captioner command
    python benchmarks/gpu_harness.py dev RUN OUT [ENSEMBLE_RUN ...]   # dev captions and BLEU-4 / CIDEr / ROUGE-L
"""
import os
import sys

import torch

DEVICE = os.environ.get("HARNESS_DEVICE", "cuda")  # "cpu" runs this harness itself as a smoke test
torch.set_default_device(DEVICE)  # before captioner is imported, so every tensor it makes lands there

from pycocoevalcap.rouge.rouge import Rouge  # noqa: E402

import captioner.checkpoint as checkpoint  # noqa: E402
import captioner.encoders as encoders  # noqa: E402
import captioner.evaluate as evaluate  # noqa: E402
import captioner.features as features  # noqa: E402
import captioner.inference as inference  # noqa: E402
import captioner.metrics as metrics  # noqa: E402

# tensors made from numpy or read from disk stay on the CPU whatever the default device: move them
_load_features = features.FeatureCache.load
features.FeatureCache.load = lambda self, names: _load_features(self, names).to(DEVICE)
_encode = encoders.Encoder.encode
encoders.Encoder.encode = lambda self, pixels: _encode(self, pixels.to(DEVICE)).cpu()  # the cache is numpy
_load_file = checkpoint.load_file
checkpoint.load_file = lambda path, device="cpu": _load_file(path, device=DEVICE)
_save_file = checkpoint.save_file
checkpoint.save_file = lambda tensors, path, *args, **kwargs: _save_file({name: tensor.cpu() for name, tensor in tensors.items()},
                                                                           path, *args, **kwargs)
_to_caption = inference.Captioner._to_caption


def _to_caption_on_cpu(self, hypothesis):
    hypothesis.attention = hypothesis.attention.cpu()  # a Caption's attention map is numpy
    return _to_caption(self, hypothesis)


def _scores_without_java(references: dict[str, list[str]], candidates: dict[str, str]) -> dict[str, float]:
    scores = metrics.fast_scores(references, candidates)
    scores["ROUGE-L"] = float(Rouge().compute_score({key: list(texts) for key, texts in references.items()},
                                                    {key: [candidates[key]] for key in references})[0])
    return scores


inference.Captioner._to_caption = _to_caption_on_cpu
evaluate.score_captions = _scores_without_java
metrics.spice_unavailable_reason = lambda: "not scored by the GPU harness"

if __name__ == "__main__":
    if sys.argv[1] == "cli":
        from captioner.cli import main

        sys.exit(main(sys.argv[2:]))
    run, output_dir, *members = sys.argv[2:]
    result = evaluate.evaluate_run(run, split="dev", output_dir=output_dir, pictures=False, ensemble=members or None,
                                   max_images=int(os.environ.get("MAX_IMAGES", "0")))
    print(run, members, {name: round(value, 4) for name, value in result["scores"].items() if value is not None},
          f"{result['decode_seconds']:.0f} s")
