"""Speed of the photo library on a generated tree: one JSON line per measurement.

    python benchmarks/bench_library.py runs/default [--photos 10000] [--large 500] [--baseline 500] [--search-rows 100000]
                                       [--workers 1] [--compare-workers 0,1,2] [--work DIR]

The tree is Flickr8k photos copied into nested folders (20 per folder, 3 levels), --large of them upscaled to
12 megapixels (4000 x 3000, JPEG quality 90). Measured, each in a fresh process, with the run's decode settings:
- `captioner caption FOLDER --json` on --baseline photos of the tree, the rate to compare with (same build, same run);
- `captioner index` of those same photos with 0, 1 and 2 photo-reading worker processes (--compare-workers);
- `captioner index TREE`: photos/s over the whole tree, peak memory (the process's maximum resident set, and the
  peak of the process with its workers, sampled);
- the same `index` again with nothing new (wall time);
- `index` of one top folder (a fifth of the tree) alone: peak memory against the tree's size;
- photos/s of the 12-megapixel photos alone (`index` of a tree holding only them);
- search p50 / p99 over a library of --search-rows rows (captions from Flickr8k's training references), 200
  queries of 1-4 words from the test references.
Everything is written under --work (default: a temporary folder, removed at the end).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from captioner.library.reading import DEFAULT_WORKERS

ROOT = Path(__file__).resolve().parents[1]
# the command line, reporting its own peak resident memory (KB) as the last line of stderr
CLI = [sys.executable, "-c", "import resource, sys; from captioner.cli import main; code = main(); "
       "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(code)"]


def build_tree(images: list[Path], root: Path, *, large: int) -> None:
    """Copy the photos into root/aNN/bNN/, 20 per folder; the first `large` upscaled to 12 megapixels."""
    for number, source in enumerate(images):
        folder = root / f"a{number // 2000:02d}" / f"b{(number // 20) % 100:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / source.name
        if number < large:
            with Image.open(source) as image:
                image.convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC).save(target, quality=90)
        else:
            shutil.copyfile(source, target)


def tree_rss_mb(pid: int) -> float:
    """The resident memory of a process and all its descendants (its worker processes), in MB (Linux /proc)."""
    total, queue = 0, [pid]
    while queue:
        current = queue.pop()
        try:
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in Path(f"/proc/{current}/task").glob("*"):
                queue += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, ValueError):  # a process that just ended
            continue
    return total / 2**20


def timed_child(command: list[str]) -> tuple[float, float, float, str]:
    """Run a command; its wall seconds, its own peak resident memory in MB, the peak of its whole process tree
    (sampled every 0.2 s; workers included), and its stdout."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        tree_peak = 0.0
        while process.poll() is None:
            tree_peak = max(tree_peak, tree_rss_mb(process.pid))
            time.sleep(0.2)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, lines = out.read(), err.read().strip().splitlines()
    if process.returncode not in (0, 1) or not lines or not lines[-1].isdigit():
        sys.exit(f"error: {' '.join(command[3:])} failed: {lines[-2:]}")
    return seconds, int(lines[-1]) / 1024, tree_peak, stdout


def search_latency(run: str, work: Path, rows: int) -> dict[str, float]:
    from captioner.data.flickr import load_prepared
    from captioner.inference import Captioner
    from captioner.library.store import Library, Photo

    captioner = Captioner.load(run)
    _, splits, _ = load_prepared(captioner.config.data.prepared_dir)
    captions = [" ".join(words) for references in splits["train"].values() for words in references]
    generator = random.Random(0)
    (work / "search.sqlite").unlink(missing_ok=True)
    with Library.open(work / "search.sqlite", create=True, root=work) as library:
        for start in range(0, rows, 5000):
            batch = []
            for number in range(start, min(rows, start + 5000)):
                text = captions[number % len(captions)]
                batch.append((f"p/{number}.jpg".encode(), Photo(path=f"p/{number}.jpg", size=1, mtime_ns=1, caption=text,
                                                                  alternatives=[{"text": generator.choice(captions)}],
                                                                  recognised=[{"word": text.split()[1], "probability": 0.5}])))
            library.write(batch)
        test_words = [words for references in splits["test"].values() for words in references]
        queries = [" ".join(generator.sample(words, min(len(words), generator.randint(1, 4))))
                   for words in generator.sample(test_words, 200)]
        library.search("warm up")
        times = []
        for query in queries:
            started = time.perf_counter()
            library.search(query, limit=20)
            times.append(time.perf_counter() - started)
    times.sort()
    return {"rows": rows, "queries": len(times), "p50_ms": round(1000 * statistics.median(times), 2),
            "p99_ms": round(1000 * times[int(0.99 * (len(times) - 1))], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--images", type=Path, default=Path(os.environ.get("FLICKR8K_DIR", ROOT.parent / "shared" / "flickr8k")) / "images")
    parser.add_argument("--photos", type=int, default=10000)
    parser.add_argument("--large", type=int, default=500, help="how many of them are upscaled to 12 megapixels")
    parser.add_argument("--baseline", type=int, default=500, help="photos for the `captioner caption FOLDER --json` rate")
    parser.add_argument("--search-rows", type=int, default=100000)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="photo-reading processes for the tree's index")
    parser.add_argument("--compare-workers", type=lambda text: [int(part) for part in text.split(",") if part], default=[0, 1, 2],
                        help="worker counts to time side by side on the --baseline photos (default: 0,1,2; empty: none)")
    args = parser.parse_args()
    sources = sorted(args.images.glob("*.jpg"))
    if not sources:
        sys.exit(f"error: no .jpg photos in {args.images}")
    images = [sources[number % len(sources)] for number in range(args.photos)]
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-library-"))
    try:
        tree = work / "tree"
        shutil.rmtree(tree / ".captioner", ignore_errors=True)  # a --work folder from an earlier run: index afresh
        if len(list(tree.rglob("*.jpg"))) != args.photos:  # a --work folder keeps its tree: building it takes minutes
            shutil.rmtree(tree, ignore_errors=True)
            build_tree(images, tree, large=args.large)
        machine = {"cores": os.cpu_count(), "run": args.run}

        flat = work / "flat"
        shutil.rmtree(flat, ignore_errors=True)
        flat.mkdir()
        for source in images[args.large : args.large + args.baseline]:
            shutil.copyfile(source, flat / source.name)
        seconds, peak, tree_peak, _ = timed_child([*CLI, "caption", args.run, str(flat), "--json"])
        print(json.dumps({"measurement": "caption_folder_json", "photos": args.baseline, "seconds": round(seconds, 1),
                          "photos_per_s": round(args.baseline / seconds, 2), "peak_mb": round(peak), **machine}), flush=True)

        for workers in args.compare_workers:  # the same photos as `caption FOLDER`, side by side
            library = work / f"flat-workers-{workers}.sqlite"
            library.unlink(missing_ok=True)
            seconds, peak, tree_peak, _ = timed_child([*CLI, "index", str(flat), "--run", args.run, "--library", str(library),
                                                       "--workers", str(workers), "--quiet"])
            print(json.dumps({"measurement": "index_flat", "workers": workers, "photos": args.baseline, "seconds": round(seconds, 1),
                              "photos_per_s": round(args.baseline / seconds, 2), "peak_mb": round(peak),
                              "peak_with_workers_mb": round(tree_peak), **machine}), flush=True)

        seconds, peak, tree_peak, out = timed_child([*CLI, "index", str(tree), "--run", args.run, "--workers", str(args.workers),
                                                     "--quiet"])
        print(json.dumps({"measurement": "index", "workers": args.workers, "photos": args.photos, "of_them_12_megapixel": args.large,
                          "seconds": round(seconds, 1), "photos_per_s": round(args.photos / seconds, 2), "peak_mb": round(peak),
                          "peak_with_workers_mb": round(tree_peak), "summary": out.strip(), **machine}), flush=True)

        seconds, _, _, out = timed_child([*CLI, "index", str(tree), "--run", args.run, "--quiet"])
        print(json.dumps({"measurement": "index_rerun_nothing_new", "photos": args.photos, "seconds": round(seconds, 2),
                          "summary": out.strip(), **machine}), flush=True)

        # memory against the tree's size: one top folder (a fifth of the tree, no 12-megapixel photos) on its own
        part = tree / "a01"
        if part.is_dir():
            library = work / "part.sqlite"
            library.unlink(missing_ok=True)
            count = len(list(part.rglob("*.jpg")))
            seconds, peak, tree_peak, _ = timed_child([*CLI, "index", str(part), "--run", args.run, "--library", str(library),
                                                       "--workers", str(args.workers), "--quiet"])
            print(json.dumps({"measurement": "index_part_of_tree", "workers": args.workers, "photos": count, "seconds": round(seconds, 1),
                              "photos_per_s": round(count / seconds, 2), "peak_mb": round(peak),
                              "peak_with_workers_mb": round(tree_peak), **machine}), flush=True)

        if args.large:
            large = work / "large"
            shutil.rmtree(large, ignore_errors=True)
            large.mkdir()
            for path in sorted(tree.rglob("*.jpg"))[: args.photos]:
                with Image.open(path) as image:
                    if image.size == (4000, 3000):
                        shutil.copyfile(path, large / path.name)
            count = len(list(large.glob("*.jpg")))
            seconds, peak, tree_peak, _ = timed_child([*CLI, "index", str(large), "--run", args.run, "--workers", str(args.workers),
                                                       "--quiet"])
            print(json.dumps({"measurement": "index_12_megapixel", "workers": args.workers, "photos": count, "seconds": round(seconds, 1),
                              "photos_per_s": round(count / seconds, 2), "peak_mb": round(peak),
                              "peak_with_workers_mb": round(tree_peak), **machine}), flush=True)

        print(json.dumps({"measurement": "search", **search_latency(args.run, work, args.search_rows), **machine}), flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
