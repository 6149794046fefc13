"""What the person detector (captioner.people) costs the photo library: one JSON line per folder.

    python benchmarks/bench_people.py runs/default [--folder DIR ...] [--rounds 3]

Each folder (default: the real photos that benchmarks/real_photos/fetch.py fetched, and as many Flickr8k test
photos) is indexed into a fresh library `--rounds` times with the detector and as often without it, in
alternating order (so a load that drifts touches both alike), by one process that loaded the run once.
Printed: photos/s with and without (medians), their ratio, and how many photos asked the detector.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
from pathlib import Path
from unittest import mock

from eval_real_photos import DEFAULT_IMAGES

from captioner import people
from captioner.inference import Captioner
from captioner.library.indexer import index
from captioner.library.store import Library


class Counting:
    """The real detector, counting the photos it is asked about."""

    def __init__(self, detector: people.PeopleDetector):
        self.detector, self.asked = detector, 0

    def seen(self, image) -> bool:
        self.asked += 1
        return self.detector.seen(image)


def index_seconds(captioner: Captioner, folder: Path, work: Path) -> float:
    library_file = work / "library.sqlite"
    for stale in work.glob("library.sqlite*"):
        stale.unlink()
    library = Library.open(library_file, create=True, root=folder)
    try:
        summary = index(library, captioner, progress=False, warn=lambda line: None)
    finally:
        library.close()
    return summary.seconds


def flickr_sample(count: int, work: Path) -> Path:
    images = Path(os.environ.get("FLICKR8K_DIR", Path(__file__).resolve().parents[2] / "shared" / "flickr8k"))
    names = (images / "Flickr_8k.testImages.txt").read_text().split()[:count]
    folder = work / "flickr8k-test"
    folder.mkdir()
    for name in names:
        shutil.copy(images / "images" / name, folder / name)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--folder", type=Path, action="append", help="default: the real photos and Flickr8k test photos")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    captioner = Captioner.load(args.run)
    detector = people.detector()
    if detector is None:
        raise SystemExit("error: the person detector (mediapipe) is not installed; `make setup` installs it")
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        folders = args.folder or [DEFAULT_IMAGES, flickr_sample(len(list(DEFAULT_IMAGES.iterdir())), work)]
        index_seconds(captioner, folders[0], work)  # warm-up: the caption memory, the detector's first runs
        for folder in folders:
            photos = sum(1 for path in folder.iterdir() if path.is_file())
            seconds: dict[bool, list[float]] = {True: [], False: []}
            counting = Counting(detector)
            for number in range(args.rounds):
                for with_detector in (True, False) if number % 2 == 0 else (False, True):
                    with mock.patch.object(people, "detector", lambda found=counting if with_detector else None: found):
                        seconds[with_detector].append(index_seconds(captioner, folder, work))
            on, off = statistics.median(seconds[True]), statistics.median(seconds[False])
            print(json.dumps({
                "measurement": "library_index_person_detector", "run": args.run, "folder": str(folder), "photos": photos,
                "rounds": args.rounds, "photos_per_second_with": round(photos / on, 2), "photos_per_second_without": round(photos / off, 2),
                "time_with_over_without": round(on / off, 3), "photos_that_asked_it": counting.asked // args.rounds,
                "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            }), flush=True)


if __name__ == "__main__":
    main()
