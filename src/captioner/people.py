"""Is there a person in the photo? MediaPipe's face and body detectors, the person class ImageNet lacks.

Grounding (captioner.grounded) distrusts a caption that names a person on a photo unlike the training photos
when the ImageNet classifier sees no clothing as worn. Flickr8k is full of people in T-shirts and wetsuits that
no ImageNet class names, and those captions fell back to "a photo of a wall". These detectors see the person
instead. They run only for such a caption (4 Flickr8k photos in 100, about half of the photos unlike them), on
the photo at 640 pixels at most.

The models are the ones the mediapipe wheel ships (0.10.21, the last release with its legacy "solutions"; no
download): BlazeFace full range and BlazePose. Thresholds chosen on the dev halves (docs/experiments.md,
section 12): a face at 0.5, or a body whose landmarks are on average 0.8 visible. Lower, BlazePose finds
"people" in dogs, doorways and bicycle lanes.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from functools import lru_cache

import numpy as np
from PIL import Image

from captioner.data.images import ImageInput, load_image

log = logging.getLogger(__name__)

FACE_SEEN = 0.5  # BlazeFace's score
BODY_SEEN = 0.8  # BlazePose's mean landmark visibility
DETECTION_SIDE = 640  # the detectors read 128-256 pixels; more only costs time


class PeopleDetector:
    """`seen(image)`: whether a face or a body is found. Thread-safe: MediaPipe graphs run one image at a time."""

    def __init__(self) -> None:
        with _c_stderr_silenced():
            import mediapipe as mp

            solutions = mp.solutions
            self._faces = solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=FACE_SEEN)
            self._bodies = solutions.pose.Pose(static_image_mode=True, model_complexity=1, min_detection_confidence=0.3)
        self._lock = threading.Lock()
        self._quiet = False  # MediaPipe's C++ logs a few lines on each graph's first runs, the body one on its first find

    def seen(self, image: Image.Image) -> bool:
        small = image.convert("RGB")
        small.thumbnail((DETECTION_SIDE, DETECTION_SIDE))
        pixels = np.ascontiguousarray(np.asarray(small))
        with self._lock, contextlib.nullcontext() if self._quiet else _c_stderr_silenced():
            faces = self._faces.process(pixels).detections or []
            if any(face.score[0] >= FACE_SEEN for face in faces):
                return True
            body = self._bodies.process(pixels).pose_landmarks  # four times the face detector's time: only when needed
            self._quiet = self._quiet or body is not None
        return body is not None and float(np.mean([mark.visibility for mark in body.landmark])) >= BODY_SEEN


@contextlib.contextmanager
def _c_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for a moment: MediaPipe's C++ logging cannot be turned off from Python.
    Python's own writes meanwhile are lost too, so it is held only for the detector's first runs."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def read(photo: ImageInput) -> Image.Image:
    """A photo as the detector reads it: decoded again, a big JPEG at reduced scale (it is shrunk anyway)."""
    return load_image(photo, draft=DETECTION_SIDE)


@lru_cache(maxsize=1)
def detector() -> PeopleDetector | None:
    """The shared detector, or None where mediapipe is not installed (grounding then reads clothing alone)."""
    try:
        return PeopleDetector()
    except ImportError as error:
        log.warning("no person detector (%s); `make setup` installs mediapipe. Captions of people fall back more often", error)
        return None
