"""Glue between stages: which images a config's features cover, and where their cache lives."""
from __future__ import annotations

from captioner.config import Config
from captioner.data.flickr import SPLITS, load_prepared
from captioner.features import FeatureCache, cache_folder, extract_features


def prepared_image_names(splits: dict[str, dict[str, list[list[str]]]]) -> list[str]:
    """Every image of every prepared split, sorted: the list the feature cache is keyed on."""
    return sorted({name for split in SPLITS for name in splits.get(split, {})})


def extract_prepared_features(config: Config, *, show_progress: bool = True) -> FeatureCache:
    images_dir, splits, _ = load_prepared(config.data.prepared_dir)
    return extract_features(
        prepared_image_names(splits),
        images_dir,
        encoder_name=config.encoder.name,
        cache_dir=config.encoder.cache_dir,
        batch_size=config.encoder.batch_size,
        show_progress=show_progress,
    )


def open_prepared_features(config: Config, splits: dict[str, dict[str, list[list[str]]]]) -> FeatureCache:
    """The cache `extract_prepared_features` wrote for these prepared splits."""
    return FeatureCache(cache_folder(config.encoder.cache_dir, config.encoder.name, prepared_image_names(splits)))
