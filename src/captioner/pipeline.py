"""Glue between stages: which images a config's features cover, and where their cache lives."""
from __future__ import annotations

from pathlib import Path

from captioner.config import Config
from captioner.data.flickr import SPLITS, load_prepared
from captioner.features import FeatureCache, cache_folder, extract_features


def prepared_image_names(splits: dict[str, dict[str, list[list[str]]]]) -> list[str]:
    """Every image of every prepared split, sorted: the list the feature cache is keyed on."""
    return sorted({name for split in SPLITS for name in splits.get(split, {})})


def training_image_names(splits: dict[str, dict[str, list[list[str]]]]) -> list[str]:
    """The training images, sorted: the list the mirrored cache is keyed on."""
    return sorted(splits.get("train", {}))


def _extraction_options(config: Config, show_progress: bool) -> dict:
    return {"encoder_name": config.encoder.name, "cache_dir": config.encoder.cache_dir,
            "batch_size": config.encoder.batch_size, "show_progress": show_progress}


def extract_prepared_features(config: Config, *, show_progress: bool = True) -> FeatureCache:
    """Every prepared image's features, plus the flipped training images' when the config trains with flips."""
    images_dir, splits, _ = load_prepared(config.data.prepared_dir)
    cache = extract_features(prepared_image_names(splits), images_dir, **_extraction_options(config, show_progress))
    if config.train.flip_augmentation:
        extract_mirrored_features(config, training_image_names(splits), images_dir, show_progress=show_progress)
    return cache


def extract_mirrored_features(config: Config, image_names: list[str], images_dir: Path, *,
                              show_progress: bool = True) -> FeatureCache:
    """The flipped photos' features of these images (flip augmentation, flip-ensemble decoding): encoded on first use
    (resumable), read from their cache after that."""
    return extract_features(image_names, images_dir, mirrored=True, **_extraction_options(config, show_progress))


def open_prepared_features(config: Config, splits: dict[str, dict[str, list[list[str]]]]) -> FeatureCache:
    """The cache `extract_prepared_features` wrote for these prepared splits."""
    return FeatureCache(cache_folder(config.encoder.cache_dir, config.encoder.name, prepared_image_names(splits)))


def open_mirrored_features(config: Config, splits: dict[str, dict[str, list[list[str]]]]) -> FeatureCache:
    """The flipped training images' cache `extract_prepared_features` wrote for flip augmentation."""
    return FeatureCache(cache_folder(config.encoder.cache_dir, config.encoder.name, training_image_names(splits), mirrored=True))
