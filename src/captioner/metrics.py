"""Caption metrics through pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr (and SPICE where it can run).

Scores are on the 0-1 scale. METEOR and the PTB tokenizer run Java; SPICE also needs Stanford
CoreNLP jars that pycocoevalcap downloads on first use, so offline it is reported as unavailable.
"""
from __future__ import annotations

import contextlib
import io
import logging
import shutil
from pathlib import Path

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

log = logging.getLogger(__name__)

METRIC_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def _quiet_bleu(references: dict, candidates: dict) -> list[float]:
    scores, _ = Bleu(4).compute_score(references, candidates, verbose=0)
    return list(scores)


def spice_unavailable_reason() -> str | None:
    """Why SPICE cannot run here, or None when it can."""
    import pycocoevalcap.spice as spice_package

    if shutil.which("java") is None:
        return "java not found"
    lib = Path(spice_package.__file__).parent / "lib"
    if not list(lib.glob("stanford-corenlp-*.jar")):
        return "Stanford CoreNLP jars are not installed (pycocoevalcap downloads them on first use; no internet here)"
    return None


def fast_scores(references: dict[str, list[str]], candidates: dict[str, str]) -> dict[str, float]:
    """BLEU-4 and CIDEr on already-normalised text, without Java: for per-epoch validation."""
    gts = {key: list(value) for key, value in references.items()}
    res = {key: [candidates[key]] for key in references}
    bleu = _quiet_bleu(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return {"BLEU-4": float(bleu[3]), "CIDEr": float(cider)}


def score_captions(references: dict[str, list[str]], candidates: dict[str, str], *, spice: bool = True) -> dict[str, float | None]:
    """All standard metrics, text tokenised by the PTB tokenizer as in the COCO caption evaluation."""
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if set(references) != set(candidates):
        raise ValueError("references and candidates must cover the same images")
    tokenizer = PTBTokenizer()
    with contextlib.redirect_stdout(io.StringIO()):  # the tokenizer prints its speed
        gts = tokenizer.tokenize({key: [{"caption": text} for text in texts] for key, texts in references.items()})
        res = tokenizer.tokenize({key: [{"caption": candidates[key]}] for key in references})
    scores: dict[str, float | None] = {}
    for order, value in enumerate(_quiet_bleu(gts, res), start=1):
        scores[f"BLEU-{order}"] = float(value)
    scores["METEOR"] = float(Meteor().compute_score(gts, res)[0])
    scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    reason = spice_unavailable_reason() if spice else "not requested"
    if reason is None:
        from pycocoevalcap.spice.spice import Spice

        scores["SPICE"] = float(Spice().compute_score(gts, res)[0])
    else:
        scores["SPICE"] = None
        log.info("SPICE unavailable: %s", reason)
    return scores
