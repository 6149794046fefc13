"""Reading Flickr8k's three layouts, skipping what is broken, and `prepare`."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from captioner.cli import main
from captioner.data.flickr import load_prepared, prepare, read_flickr8k
from captioner.data.text import SPECIAL_TOKENS, Vocabulary
from captioner.errors import CaptionerError

from conftest import draw_shape, write_tiny_flickr

SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt", "dev": "Flickr_8k.devImages.txt", "test": "Flickr_8k.testImages.txt"}


def write_images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for number, name in enumerate(names):
        draw_shape("red", "square", number).save(folder / name)


def write_split_files(folder: Path, splits: dict[str, list[str]]) -> None:
    for split, file_name in SPLIT_FILES.items():
        (folder / file_name).write_text("".join(f"{name}\n" for name in splits.get(split, [])))


def test_token_file_layout_with_official_splits(tiny_flickr):
    dataset = read_flickr8k(tiny_flickr)
    assert {split: len(images) for split, images in dataset.splits.items()} == {"train": 12, "dev": 6, "test": 6}
    expected_dev = [f"{colour}_{shape}_2.jpg" for colour in ("red", "green", "blue") for shape in ("square", "circle")]
    assert sorted(dataset.splits["dev"]) == sorted(expected_dev)
    assert dataset.splits["train"]["red_circle_0.jpg"] == [
        ["a", "red", "circle"], ["a", "red", "circle", "on", "a", "white", "background"], ["the", "circle", "is", "red"],
    ]
    assert dataset.images_dir == (tiny_flickr / "images").resolve()
    assert dataset.skipped_lines == 0
    assert dataset.missing_images == []
    assert dataset.captions("test") is dataset.splits["test"]
    with pytest.raises(CaptionerError, match="unknown split 'val'"):
        dataset.captions("val")


def test_token_file_blank_and_malformed_lines_are_skipped_and_counted(tmp_path, caplog):
    write_images(tmp_path / "images", ["a.jpg", "b.jpg", "c.jpg"])
    (tmp_path / "Flickr8k.token.txt").write_text(
        "a.jpg#0\tA dog runs .\n"
        "\n"                              # blank
        "a.jpg#1 a line without a tab\n"  # malformed: no tab
        "b.jpg#0\t   \n"                  # no caption
        "\tA caption without an image\n"  # no image name
        "b.jpg#1\tA cat sleeps .\n"
        "c.jpg#0\t?!\n"                   # nothing left after normalisation
        "   \n"
        "b.jpg#2\tThe cat is grey\n"
    )
    write_split_files(tmp_path, {"train": ["a.jpg", "b.jpg", "c.jpg"]})
    with caplog.at_level(logging.WARNING):
        dataset = read_flickr8k(tmp_path)
    assert dataset.splits["train"] == {
        "a.jpg": [["a", "dog", "runs"]],
        "b.jpg": [["a", "cat", "sleeps"], ["the", "cat", "is", "grey"]],
    }
    assert dataset.skipped_lines == 6
    assert "skipped 6 blank or malformed caption lines" in caplog.text


def test_missing_images_are_counted_and_skipped(tmp_path, caplog):
    write_images(tmp_path / "images", ["here.jpg", "dev.jpg"])
    (tmp_path / "Flickr8k.token.txt").write_text(
        "here.jpg#0\ta dog\ngone.jpg#0\ta cat\nalso_gone.jpg#0\ta bird\ndev.jpg#0\ta fish\n"
    )
    write_split_files(tmp_path, {"train": ["here.jpg", "gone.jpg"], "dev": ["dev.jpg"], "test": ["also_gone.jpg"]})
    with caplog.at_level(logging.WARNING):
        dataset = read_flickr8k(tmp_path)
    assert sorted(dataset.missing_images) == ["also_gone.jpg", "gone.jpg"]
    found = {split: sorted(images) for split, images in dataset.splits.items()}
    assert found == {"train": ["here.jpg"], "dev": ["dev.jpg"], "test": []}
    assert "skipped 2 images" in caplog.text


def test_images_in_no_split_file_are_left_out(tmp_path):
    write_images(tmp_path / "images", ["a.jpg", "b.jpg"])
    (tmp_path / "Flickr8k.token.txt").write_text("a.jpg#0\ta dog\nb.jpg#0\ta cat\n")
    write_split_files(tmp_path, {"train": ["a.jpg"]})
    dataset = read_flickr8k(tmp_path)
    assert sorted(dataset.splits["train"]) == ["a.jpg"]
    assert dataset.splits["dev"] == dataset.splits["test"] == {}


def test_csv_layout_with_header_and_quoting(tmp_path):
    write_images(tmp_path / "Images", ["a.jpg", "b.jpg", "c.jpg"])
    rows = [
        ["image", "caption"],
        ["a.jpg", "A dog, brown and white, runs ."],
        ["a.jpg", 'A "happy" dog'],
        ["b.jpg", "A cat\non two lines"],
        ["c.jpg", "A bird"],
    ]
    with (tmp_path / "captions.txt").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with (tmp_path / "captions.txt").open("a") as handle:
        handle.write("\n")                        # blank
        handle.write("b.jpg\n")                   # no caption column
        handle.write(",a caption for nothing\n")  # no image name
        handle.write("b.jpg,   \n")               # blank caption
        handle.write("c.jpg,a bird, unquoted, with commas\n")
    write_split_files(tmp_path, {"train": ["a.jpg", "b.jpg"], "test": ["c.jpg"]})
    dataset = read_flickr8k(tmp_path)
    assert dataset.images_dir == (tmp_path / "Images").resolve()
    assert dataset.splits["train"] == {
        "a.jpg": [["a", "dog", "brown", "and", "white", "runs"], ["a", "happy", "dog"]],
        "b.jpg": [["a", "cat", "on", "two", "lines"]],
    }
    assert dataset.splits["test"] == {"c.jpg": [["a", "bird"], ["a", "bird", "unquoted", "with", "commas"]]}
    assert dataset.skipped_lines == 4


def test_csv_with_a_byte_order_mark_is_read(tmp_path):
    write_images(tmp_path / "images", ["a.jpg"])
    (tmp_path / "captions.txt").write_text("image,caption\na.jpg,A dog runs .\n", encoding="utf-8-sig")
    write_split_files(tmp_path, {"train": ["a.jpg"]})
    assert read_flickr8k(tmp_path).splits["train"] == {"a.jpg": [["a", "dog", "runs"]]}


def test_csv_without_the_header_is_refused(tmp_path):
    write_images(tmp_path / "images", ["a.jpg"])
    (tmp_path / "captions.txt").write_text("a.jpg,A dog runs\n")
    with pytest.raises(CaptionerError, match="header 'image,caption'"):
        read_flickr8k(tmp_path)


def test_csv_without_split_files_gets_a_seeded_80_10_10_split(tmp_path):
    names = [f"{number:02d}.jpg" for number in range(30)]
    write_images(tmp_path / "images", names)
    (tmp_path / "captions.txt").write_text("image,caption\n" + "".join(f"{name},a photo number {name[:2]}\n" for name in names))
    first = read_flickr8k(tmp_path)
    sizes = {split: len(images) for split, images in first.splits.items()}
    assert sizes == {"train": 24, "dev": 3, "test": 3}
    assert set().union(*map(set, first.splits.values())) == set(names)
    assert read_flickr8k(tmp_path).splits == first.splits  # the same split on every read


def write_karpathy(folder: Path, entries: list[dict]) -> None:
    (folder / "dataset_flickr8k.json").write_text(json.dumps({"images": entries, "dataset": "flickr8k"}))


def test_karpathy_json_layout(tmp_path):
    write_images(tmp_path / "images", ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"])
    write_karpathy(tmp_path, [
        {"filename": "a.jpg", "split": "train", "sentences": [{"raw": "A Dog runs.", "tokens": ["a", "dog", "runs"]}]},
        {"filename": "b.jpg", "split": "restval", "sentences": [{"tokens": ["a", "cat"]}]},
        {"filename": "c.jpg", "split": "val", "sentences": [{"raw": "A bird!"}, {"raw": "Birds"}]},
        {"filename": "d.jpg", "split": "test", "sentences": [{"raw": "A fish"}]},
        {"filename": "e.jpg", "split": "unknown-split", "sentences": [{"raw": "ignored"}]},
        {"filename": "gone.jpg", "split": "test", "sentences": [{"raw": "no such image"}]},
        {"split": "train", "sentences": [{"raw": "an entry without a filename"}]},
    ])
    dataset = read_flickr8k(tmp_path)
    assert dataset.splits == {
        "train": {"a.jpg": [["a", "dog", "runs"]], "b.jpg": [["a", "cat"]]},
        "dev": {"c.jpg": [["a", "bird"], ["birds"]]},
        "test": {"d.jpg": [["a", "fish"]]},
    }
    assert dataset.skipped_lines == 2
    assert dataset.missing_images == ["gone.jpg"]


def test_karpathy_json_takes_precedence_over_a_token_file(tmp_path):
    write_images(tmp_path / "images", ["a.jpg"])
    (tmp_path / "Flickr8k.token.txt").write_text("a.jpg#0\tfrom the token file\n")
    write_karpathy(tmp_path, [{"filename": "a.jpg", "split": "train", "sentences": [{"raw": "from the json"}]}])
    assert read_flickr8k(tmp_path).splits["train"] == {"a.jpg": [["from", "the", "json"]]}


@pytest.mark.parametrize("content", ["{broken", "[]", "{\"no_images\": 1}"])
def test_corrupt_karpathy_json_is_a_captioner_error(tmp_path, content):
    write_images(tmp_path / "images", ["a.jpg"])
    (tmp_path / "dataset_flickr8k.json").write_text(content)
    with pytest.raises(CaptionerError, match="not a Karpathy split file"):
        read_flickr8k(tmp_path)


def test_folder_that_does_not_exist(tmp_path):
    with pytest.raises(CaptionerError, match="data folder not found: .*nowhere"):
        read_flickr8k(tmp_path / "nowhere")


def test_folder_without_images(tmp_path):
    (tmp_path / "Flickr8k.token.txt").write_text("a.jpg#0\ta dog\n")
    with pytest.raises(CaptionerError, match=r"no image folder in .*; expected one of images"):
        read_flickr8k(tmp_path)


def test_folder_whose_image_folder_is_empty(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "Flickr8k.token.txt").write_text("a.jpg#0\ta dog\nb.jpg#0\ta cat\n")
    write_split_files(tmp_path, {"train": ["a.jpg"], "test": ["b.jpg"]})
    with pytest.raises(CaptionerError) as caught:
        read_flickr8k(tmp_path)
    message = str(caught.value)
    assert "no captioned images" in message
    assert "2 images" in message and "missing" in message  # says why: the listed images are not there


def test_folder_without_a_caption_file(tmp_path):
    write_images(tmp_path / "images", ["a.jpg"])
    with pytest.raises(CaptionerError, match="no caption file in .*Flickr8k.token.txt, captions.txt or dataset_flickr8k.json"):
        read_flickr8k(tmp_path)


def test_images_directly_in_the_data_folder(tmp_path):
    write_images(tmp_path, ["a.jpg"])
    (tmp_path / "captions.txt").write_text("image,caption\na.jpg,A dog\n")
    dataset = read_flickr8k(tmp_path)
    assert dataset.images_dir == tmp_path.resolve()


def test_prepare_builds_the_vocabulary_from_the_training_split_only(tmp_path):
    write_images(tmp_path / "data" / "images", ["a.jpg", "b.jpg", "c.jpg"])
    (tmp_path / "data" / "Flickr8k.token.txt").write_text(
        "a.jpg#0\ta dog runs\na.jpg#1\ta dog sits\nb.jpg#0\ta cat runs\nc.jpg#0\ta zebra gallops\n"
    )
    write_split_files(tmp_path / "data", {"train": ["a.jpg", "b.jpg"], "test": ["c.jpg"]})
    summary = prepare(tmp_path / "data", tmp_path / "prepared", min_word_count=2)
    vocabulary = Vocabulary.load(tmp_path / "prepared" / "vocab.json")
    assert vocabulary.words == [*SPECIAL_TOKENS, "a", "dog", "runs"]  # cat/sits seen once; zebra only in test
    assert summary["images"] == {"train": 2, "dev": 0, "test": 1}
    assert summary["captions"] == {"train": 3, "dev": 0, "test": 1}
    assert summary["vocabulary_size"] == 7
    assert json.loads((tmp_path / "prepared" / "summary.json").read_text()) == summary

    images_dir, splits, loaded = load_prepared(tmp_path / "prepared")
    assert images_dir == (tmp_path / "data" / "images").resolve()
    assert splits["test"] == {"c.jpg": [["a", "zebra", "gallops"]]}
    assert loaded.words == vocabulary.words


def test_load_prepared_without_prepare_says_what_to_run(tmp_path):
    with pytest.raises(CaptionerError, match="run `captioner prepare` first"):
        load_prepared(tmp_path)


def test_load_prepared_with_corrupt_captions_json(tmp_path):
    (tmp_path / "captions.json").write_text("{\"images_dir\": ")
    with pytest.raises(CaptionerError, match="corrupt; rerun `captioner prepare`"):
        load_prepared(tmp_path)


def test_prepare_command_prints_the_summary(tmp_path, capsys):
    data = write_tiny_flickr(tmp_path / "data")
    code = main(["prepare", "--data", str(data), "--out", str(tmp_path / "prepared"), "--set", "data.min_word_count=1"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == {"train": 12, "dev": 6, "test": 6}
    assert summary["captions"] == {"train": 36, "dev": 18, "test": 18}
    assert summary["missing_images"] == 0
    assert (tmp_path / "prepared" / "vocab.json").is_file()


def test_prepare_command_on_a_missing_folder_fails_with_one_line(tmp_path, capsys):
    code = main(["prepare", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "prepared")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data folder not found")
    assert err.count("\n") == 1
