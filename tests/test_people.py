"""The person detector (captioner.people): when grounding asks it, what its answer changes, and the real models."""
from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from PIL import Image

from captioner import grounded, people
from captioner.grounded import GroundingSettings, conflicts, needs_people, signals
from captioner.grounding import Recognition
from captioner.inference import Captioner

from conftest import SHARED_FLICKR8K, draw_shape, write_calibration

SETTINGS = GroundingSettings(familiar=0.6, subject=0.45, support=0.1, person_evidence=0.05)
NOTHING = Recognition(words={"animal": 0.2, "toy": 0.13}, classes=[], kinds={"person-evidence": 0.01})
MAN = "a man is standing in front of a snowy mountain".split()
DOG = "a brown dog runs on the grass".split()


def test_the_detector_is_asked_only_where_its_answer_decides():
    assert needs_people([DOG, MAN], NOTHING, 0.5, SETTINGS)  # a person on an unfamiliar photo, no clothing seen
    assert not needs_people([DOG], NOTHING, 0.5, SETTINGS)  # nobody named
    assert not needs_people([MAN], NOTHING, 0.7, SETTINGS)  # the decoder's home ground: persons trusted
    clothed = Recognition(words={"jersey": 0.3}, classes=[], kinds={"person-evidence": 0.3})
    assert not needs_people([MAN], clothed, 0.5, SETTINGS)  # the classifier already sees a person
    asked = Recognition(NOTHING.words, [], NOTHING.kinds, people_seen=False)
    assert not needs_people([MAN], asked, 0.5, SETTINGS)  # asked once


def test_a_person_the_detector_sees_is_trusted_and_one_it_does_not_is_not():
    seen = Recognition(NOTHING.words, [], NOTHING.kinds, people_seen=True)
    unseen = Recognition(NOTHING.words, [], NOTHING.kinds, people_seen=False)
    assert conflicts(MAN, seen, 0.5, SETTINGS) == []
    assert conflicts(MAN, unseen, 0.5, SETTINGS) == ["names a person the classifier and the person detector see no sign of"]
    assert signals(MAN, seen, 0.5, is_fallback=False)["backed_person"] == 1.0
    assert signals(MAN, unseen, 0.5, is_fallback=False)["unsupported_person"] == 1.0


class StubDetector:
    """Stands in for MediaPipe: answers `answer` and keeps what it was shown."""

    def __init__(self, answer: bool):
        self.answer = answer
        self.shown: list[tuple[int, int]] = []

    def seen(self, image: Image.Image) -> bool:
        assert isinstance(image, Image.Image)
        self.shown.append(image.size)
        return self.answer


@pytest.fixture()
def person_run(tiny_run, tiny_captioner, tmp_path, monkeypatch) -> Path:
    """The tiny run, grounded with every photo unfamiliar and no sure subject, its shape words counted as persons:
    each of its captions then stands or falls by the person detector."""
    run = tmp_path / "person-run"
    shutil.copytree(tiny_run, run)
    write_calibration(run, subject=1.01, bias=0.0)
    words = {word for word in tiny_captioner.vocabulary.words if word.isalpha() and word not in {"a", "an", "the"}}
    monkeypatch.setattr(grounded, "PERSON_WORDS", frozenset(words))
    return run


def with_detector(monkeypatch, detector) -> None:
    monkeypatch.setattr(people, "detector", lambda: detector)


@pytest.fixture()
def circle(tmp_path) -> Path:
    path = tmp_path / "circle.png"
    draw_shape("red", "circle", 3).save(path)
    return path


@pytest.mark.parametrize("answer", [True, False])
def test_the_python_api_asks_the_detector_and_follows_its_answer(person_run, circle, monkeypatch, answer):
    detector = StubDetector(answer)
    with_detector(monkeypatch, detector)
    [caption] = Captioner.load(person_run).caption(circle)
    assert detector.shown == [(96, 96)]  # the photo itself, read again at its own size
    assert caption.source == ("decoder" if answer else "fallback")
    if not answer:
        assert caption.doubts == ["names a person the classifier and the person detector see no sign of"]


def test_without_the_detector_or_the_photo_a_person_needs_clothing(person_run, circle, monkeypatch):
    with_detector(monkeypatch, None)  # mediapipe not installed
    [caption] = Captioner.load(person_run).caption(circle)
    assert caption.source == "fallback"
    detector = StubDetector(True)
    with_detector(monkeypatch, detector)
    captioner = Captioner.load(person_run)
    grid, mirrored = captioner.encode([circle])

    gone = circle.with_name("deleted since.png")  # the photo was deleted after it was encoded
    [caption] = captioner.decode(grid, mirrored, photos=[gone])  # judged without it, never a crash
    assert caption.source == "fallback" and detector.shown == []

    class Broken:
        def seen(self, image: Image.Image) -> bool:
            raise RuntimeError("CalculatorGraph::Run() failed")

    with_detector(monkeypatch, Broken())
    [caption] = captioner.decode(grid, mirrored, photos=[circle])
    assert caption.source == "fallback"
    with_detector(monkeypatch, detector)
    [caption] = captioner.decode(grid, mirrored)  # no photos given: the same
    assert caption.source == "fallback"


def test_evaluate_the_http_api_and_the_library_show_the_detector_their_photos(person_run, circle, monkeypatch, tmp_path):
    from captioner.evaluate import evaluate_run
    from captioner.library.indexer import index
    from captioner.library.store import Library
    from captioner.web.app import create_app

    from servers import BackgroundServer

    detector = StubDetector(True)
    with_detector(monkeypatch, detector)
    metrics = evaluate_run(person_run, split="test", output_dir=tmp_path / "eval", pictures=False, max_images=3)
    assert len(detector.shown) == 3 and metrics["grounded"]["fallback_captions"] == 0

    detector.shown.clear()
    with BackgroundServer(create_app(Captioner.load(person_run), batch_wait_ms=1)) as url, httpx.Client(base_url=url, timeout=60) as http:
        response = http.post("/api/caption", files={"file": ("circle.png", circle.read_bytes(), "image/png")})
    assert response.status_code == 200, response.text
    assert response.json()["source"] == "decoder" and detector.shown == [(96, 96)]

    detector.answer = False
    detector.shown.clear()
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(circle, photos / "circle.png")
    library = Library.open(photos / ".captioner" / "library.sqlite", create=True, root=photos)
    try:
        index(library, person_run, progress=False, workers=0)
        [(_, photo)] = library.items()
    finally:
        library.close()
    assert detector.shown == [(96, 96)] and photo.source == "fallback"


def test_the_real_detector_finds_no_one_in_a_blank_photo():
    detector = people.detector()
    assert detector is not None, "mediapipe is missing: `make setup` installs requirements-nodeps.lock"
    assert detector.seen(Image.new("RGB", (320, 240), "grey")) is False
    assert detector.seen(draw_shape("red", "circle", 3)) is False


@pytest.mark.skipif(not SHARED_FLICKR8K.is_dir(), reason=f"the real Flickr8k set is not at {SHARED_FLICKR8K}")
def test_the_real_detector_sees_a_person_and_not_a_dog_in_flickr8k_photos():
    from captioner.data.images import load_image

    detector = people.detector()
    assert detector is not None
    images = SHARED_FLICKR8K / "images"
    assert detector.seen(load_image(images / "2201192417_d934730fea.jpg", draft=people.DETECTION_SIDE))  # a person, close up
    assert not detector.seen(load_image(images / "1130369873_d80a1aa59c.jpg", draft=people.DETECTION_SIDE))  # a dog in water
