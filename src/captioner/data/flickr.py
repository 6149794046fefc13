"""Read Flickr8k in any of its common layouts into normalised captions per image and split.

Layouts: the original token file (`Flickr8k.token.txt` + `Flickr_8k.{train,dev,test}Images.txt`),
the `image,caption` CSV (`captions.txt`), and Karpathy's `dataset_flickr8k.json`.
"""
from __future__ import annotations

import csv
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from captioner.data.text import Vocabulary, normalise_caption
from captioner.errors import CaptionerError
from captioner.io import atomic_write_json

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
IMAGE_DIR_NAMES = ("images", "Images", "Flicker8k_Dataset", "Flickr8k_Dataset", "Flickr8k_Dataset/Flicker8k_Dataset")
SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt", "dev": "Flickr_8k.devImages.txt", "test": "Flickr_8k.testImages.txt"}
KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "dev", "test": "test"}


@dataclass
class Flickr8k:
    """Normalised captions per image for each split, plus what was skipped while reading."""

    images_dir: Path
    splits: dict[str, dict[str, list[list[str]]]]
    skipped_lines: int = 0
    missing_images: list[str] = field(default_factory=list)

    def captions(self, split: str) -> dict[str, list[list[str]]]:
        if split not in self.splits:
            raise CaptionerError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
        return self.splits[split]


def find_images_dir(data_dir: Path) -> Path:
    for name in IMAGE_DIR_NAMES:
        candidate = data_dir / name
        if candidate.is_dir():
            return candidate
    if any(data_dir.glob("*.jpg")):
        return data_dir
    raise CaptionerError(f"no image folder in {data_dir}; expected one of {', '.join(IMAGE_DIR_NAMES)}")


def _read_token_file(path: Path) -> tuple[dict[str, list[str]], int]:
    """`IMAGE#N<TAB>caption` lines -> raw captions per image, and the count of malformed lines."""
    captions: dict[str, list[str]] = {}
    skipped = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        name, tab, caption = line.partition("\t")
        name = name.split("#", 1)[0].strip()
        if not tab or not name or not caption.strip():
            skipped += 1
            continue
        captions.setdefault(name, []).append(caption)
    return captions, skipped


def _read_csv_file(path: Path) -> tuple[dict[str, list[str]], int]:
    """`image,caption` CSV with a header line -> raw captions per image, and the malformed row count."""
    captions: dict[str, list[str]] = {}
    skipped = 0
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:  # -sig: tolerate a BOM
        rows = csv.reader(handle)
        header = next(rows, None)
        if header is None or [cell.strip().lower() for cell in header[:2]] != ["image", "caption"]:
            raise CaptionerError(f"{path} does not start with the header 'image,caption'")
        for row in rows:
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                skipped += 1
                continue
            captions.setdefault(row[0].strip(), []).append(",".join(row[1:]))
    return captions, skipped


def _read_split_files(data_dir: Path) -> dict[str, list[str]] | None:
    if not all((data_dir / name).is_file() for name in SPLIT_FILES.values()):
        return None
    return {
        split: [line.strip() for line in (data_dir / name).read_text().splitlines() if line.strip()]
        for split, name in SPLIT_FILES.items()
    }


def _random_splits(names: list[str], seed: int = 0) -> dict[str, list[str]]:
    """No split files: a seeded 80/10/10 split so every run of the same data agrees."""
    names = sorted(names)
    random.Random(seed).shuffle(names)
    dev_size = test_size = max(1, len(names) // 10)
    return {"test": names[:test_size], "dev": names[test_size : test_size + dev_size], "train": names[test_size + dev_size :]}


def _read_karpathy(path: Path) -> tuple[dict[str, dict[str, list[str]]], int]:
    try:
        entries = json.loads(path.read_text())["images"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise CaptionerError(f"{path} is not a Karpathy split file (expected a JSON object with 'images')") from None
    splits: dict[str, dict[str, list[str]]] = {split: {} for split in SPLITS}
    skipped = 0
    for entry in entries:
        try:
            split = KARPATHY_SPLITS[entry["split"]]
            raws = [sentence.get("raw") or " ".join(sentence["tokens"]) for sentence in entry["sentences"]]
            splits[split][entry["filename"]] = raws
        except (KeyError, TypeError, AttributeError):
            skipped += 1
    return splits, skipped


def read_flickr8k(data_dir: str | Path) -> Flickr8k:
    """Read whichever layout `data_dir` holds; images that do not exist are dropped and listed."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise CaptionerError(f"data folder not found: {data_dir}")
    images_dir = find_images_dir(data_dir)
    karpathy = data_dir / "dataset_flickr8k.json"
    if karpathy.is_file():
        raw_splits, skipped = _read_karpathy(karpathy)
    else:
        if (data_dir / "Flickr8k.token.txt").is_file():
            raw, skipped = _read_token_file(data_dir / "Flickr8k.token.txt")
        elif (data_dir / "captions.txt").is_file():
            raw, skipped = _read_csv_file(data_dir / "captions.txt")
        else:
            raise CaptionerError(
                f"no caption file in {data_dir}; expected Flickr8k.token.txt, captions.txt or dataset_flickr8k.json"
            )
        names = _read_split_files(data_dir) or _random_splits(list(raw))
        raw_splits = {split: {name: raw[name] for name in names[split] if name in raw} for split in SPLITS}

    splits: dict[str, dict[str, list[list[str]]]] = {}
    missing = []
    for split, per_image in raw_splits.items():
        splits[split] = {}
        for name, raws in per_image.items():
            if not (images_dir / name).is_file():
                missing.append(name)
                continue
            captions = [words for words in map(normalise_caption, raws) if words]
            skipped += len(raws) - len(captions)
            if captions:
                splits[split][name] = captions
    if skipped:
        log.warning("skipped %d blank or malformed caption lines", skipped)
    if missing:
        log.warning("skipped %d images listed in the captions but missing from %s (e.g. %s)", len(missing), images_dir, missing[0])
    if not any(splits.values()):
        reason = f"; {len(missing)} images named in the captions are missing from {images_dir}" if missing else ""
        raise CaptionerError(f"no captioned images found in {data_dir}{reason}")
    return Flickr8k(images_dir=images_dir.resolve(), splits=splits, skipped_lines=skipped, missing_images=missing)


def prepare(data_dir: str | Path, prepared_dir: str | Path, *, min_word_count: int = 5) -> dict:
    """Read Flickr8k, build the vocabulary from the training split, write `captions.json` + `vocab.json`."""
    dataset = read_flickr8k(data_dir)
    vocabulary = Vocabulary.build(
        (caption for captions in dataset.splits["train"].values() for caption in captions), min_count=min_word_count
    )
    prepared_dir = Path(prepared_dir)
    summary = {
        "images_dir": str(dataset.images_dir),
        "images": {split: len(dataset.splits[split]) for split in SPLITS},
        "captions": {split: sum(map(len, dataset.splits[split].values())) for split in SPLITS},
        "vocabulary_size": len(vocabulary),
        "skipped_caption_lines": dataset.skipped_lines,
        "missing_images": dataset.missing_images,
    }
    atomic_write_json(prepared_dir / "captions.json", {"images_dir": str(dataset.images_dir), "splits": dataset.splits})
    vocabulary.save(prepared_dir / "vocab.json")
    atomic_write_json(prepared_dir / "summary.json", summary)
    return summary


def load_prepared(prepared_dir: str | Path) -> tuple[Path, dict[str, dict[str, list[list[str]]]], Vocabulary]:
    """Read what `prepare` wrote: images folder, normalised captions per split, vocabulary."""
    prepared_dir = Path(prepared_dir)
    path = prepared_dir / "captions.json"
    if not path.is_file():
        raise CaptionerError(f"no prepared data in {prepared_dir}; run `captioner prepare` first")
    try:
        data = json.loads(path.read_text())
        return Path(data["images_dir"]), data["splits"], Vocabulary.load(prepared_dir / "vocab.json")
    except (json.JSONDecodeError, KeyError, TypeError):
        raise CaptionerError(f"prepared data in {prepared_dir} is corrupt; rerun `captioner prepare`") from None
