"""Grounded captions end to end on the tiny run: the Python API, `captioner caption` and `evaluate`, the HTTP API.

The tiny run's encoder (Lite0) has no calibration in the package, so its captions go ungrounded; a copy of the run
carries its own grounding.json that treats every photo as unfamiliar and the classifier's most specific word as
a sure subject, so the tiny decoder's colour-and-shape captions conflict and the fallback speaks.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from captioner.cli import main
from captioner.grounded import names_person
from captioner.inference import Captioner
from captioner.web.app import create_app

from conftest import draw_shape, write_calibration
from servers import BackgroundServer


@pytest.fixture(scope="module")
def grounded_run(tiny_run, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("grounded") / "tiny"
    shutil.copytree(tiny_run, run)
    write_calibration(run, subject=0.0, bias=-3.0)  # every caption doubtful
    return run


@pytest.fixture(scope="module")
def red_circle(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "red circle.png"
    draw_shape("red", "circle", 3).save(path)
    return path


def test_the_packaged_calibration_leaves_other_encoders_ungrounded(tiny_captioner, red_circle):
    [caption] = tiny_captioner.caption(red_circle)
    assert tiny_captioner.grounding is None and caption.confidence is None and caption.source == "decoder"
    assert "confidence" not in caption.to_dict()


def test_a_caption_that_conflicts_with_the_classifier_falls_back_to_what_it_recognised(grounded_run, tiny_captioner, red_circle):
    captioner = Captioner.load(grounded_run)
    [caption] = captioner.caption(red_circle, n_best=2)
    [plain] = tiny_captioner.caption(red_circle, n_best=2)
    assert caption.source == "fallback" and caption.text.startswith("a photo of ")
    assert caption.recognised and caption.text.endswith(caption.recognised[0]["word"].split()[-1]) or caption.text == "a photo"
    assert caption.log_probability is None and caption.score is None and caption.attention.shape[0] == 0
    assert caption.doubts and all(isinstance(doubt, str) for doubt in caption.doubts)
    assert 0.0 <= caption.confidence < 0.5 and caption.doubtful
    assert [other.text for other in caption.alternatives] == [plain.text]  # the decoder's own candidates stay listed
    record = json.loads(json.dumps(caption.to_dict()))
    assert record["source"] == "fallback" and record["doubtful"] is True and record["log_probability"] is None
    assert not names_person(caption.tokens)
    # with fallback off the decoder's first candidate stays, doubts noted; with grounding off it is the plain caption
    [kept] = captioner.caption(red_circle, fallback=False)
    assert kept.source == "decoder" and kept.text == plain.text and kept.doubts
    [ungrounded] = captioner.caption(red_circle, grounding=False)
    assert ungrounded.text == plain.text and ungrounded.confidence is None


def test_a_caption_that_agrees_with_the_classifier_stays(grounded_run, tiny_captioner, red_circle, tmp_path):
    run = tmp_path / "agreeing"
    shutil.copytree(grounded_run, run)
    write_calibration(run, subject=1.01, bias=3.0)  # the classifier is never sure: nothing to conflict with
    [caption] = Captioner.load(run).caption(red_circle)
    assert caption.source == "decoder" and not caption.doubts and caption.text == tiny_captioner.caption(red_circle)[0].text
    assert caption.confidence > 0.5 and not caption.doubtful


def test_the_command_line_shows_the_confidence_and_marks_a_doubtful_caption(grounded_run, red_circle, capsys):
    assert main(["caption", str(grounded_run), str(red_circle)]) == 0
    line = capsys.readouterr().out.strip()
    assert "\ta photo" in line and "[confidence 0." in line and "doubtful" in line and "said less" in line
    assert main(["caption", str(grounded_run), str(red_circle), "--json", "--no-fallback"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert record["source"] == "decoder" and record["doubtful"] is True and 0 <= record["confidence"] < 0.5
    assert main(["caption", str(grounded_run), str(red_circle), "--n-best", "2"]) == 0
    assert "       -  log p        -  a photo" in capsys.readouterr().out  # a fallback has no model score


def test_evaluate_reports_how_grounding_changed_the_split(grounded_run, tmp_path):
    from captioner.evaluate import evaluate_run

    metrics = evaluate_run(grounded_run, split="test", output_dir=tmp_path / "eval", pictures=False)
    assert metrics["grounding"] is True and metrics["fallback"] is True
    assert metrics["grounded"]["fallback_captions"] == metrics["images"] == metrics["grounded"]["doubtful"]
    assert "fallback captions" in (tmp_path / "eval" / "report.md").read_text()
    off = evaluate_run(grounded_run, split="test", output_dir=tmp_path / "off", pictures=False, grounding=False)
    assert off["grounding"] is False and off["grounded"]["fallback_captions"] == 0


def test_the_http_api_returns_the_confidence_and_the_fallback(grounded_run, red_circle):
    with BackgroundServer(create_app(Captioner.load(grounded_run), batch_wait_ms=1)) as url, httpx.Client(base_url=url, timeout=60) as http:
        response = http.post("/api/caption", files={"file": ("circle.png", red_circle.read_bytes(), "image/png")}, data={"n_best": "2"})
        assert response.status_code == 200, response.text
        result = response.json()
        schema = http.get("/api/openapi.json").json()["components"]["schemas"]["CaptionResult"]["properties"]
    assert result["source"] == "fallback" and result["doubtful"] is True and 0 <= result["confidence"] < 0.5
    assert result["score"] is None and result["log_probability"] is None and result["doubts"]
    assert result["recognised"] and {"word", "probability"} == set(result["recognised"][0])
    assert len(result["alternatives"]) == 1 and result["alternatives"][0]["score"] is not None
    assert {"confidence", "doubtful", "source", "doubts", "recognised"} <= set(schema)
