"""Caption normalisation and the Vocabulary: words <-> ids, min count, special tokens, JSON round trip."""
from __future__ import annotations

import json

import pytest

from captioner.data.text import END, PAD, SPECIAL_TOKENS, START, UNK, Vocabulary, normalise_caption
from captioner.errors import CaptionerError


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("A black dog is running .", ["a", "black", "dog", "is", "running"]),
        ("Two DOGS, playing; in the SNOW!!", ["two", "dogs", "playing", "in", "the", "snow"]),
        ("A black-and-white dog", ["a", "black", "and", "white", "dog"]),
        ("a man's hat", ["a", "man's", "hat"]),
        ("the dogs' toys 'quoted'", ["the", "dogs", "toys", "quoted"]),
        ("  tabs\tand\nnewlines\u00a0and  spaces ", ["tabs", "and", "newlines", "and", "spaces"]),
        ("#1 @home ~~ (big) [red] {ball} \"yes\" 3 dogs", ["1", "home", "big", "red", "ball", "yes", "3", "dogs"]),
        ("\u201cFancy\u201d quotes \u2026 and \u2013 dashes", ["fancy", "quotes", "and", "dashes"]),
        ("?!. ,;", []),
        ("", []),
    ],
)
def test_normalise_caption_lower_cases_and_strips_punctuation(raw, words):
    assert normalise_caption(raw) == words


def test_vocabulary_starts_with_the_special_tokens_in_order():
    vocabulary = Vocabulary.build([["a", "dog"]], min_count=1)
    assert SPECIAL_TOKENS == (PAD, START, END, UNK) == ("<pad>", "<start>", "<end>", "<unk>")
    assert vocabulary.words[:4] == list(SPECIAL_TOKENS)
    assert (vocabulary.pad_id, vocabulary.start_id, vocabulary.end_id, vocabulary.unk_id) == (0, 1, 2, 3)


def test_vocabulary_keeps_words_seen_min_count_times_most_frequent_first():
    captions = [["a", "dog", "runs"], ["a", "dog", "sits"], ["a", "cat", "sits"], ["a", "zebra"]]
    vocabulary = Vocabulary.build(captions, min_count=2)
    # a:4, dog:2, sits:2 (ties alphabetical); cat, runs and zebra are seen once
    assert vocabulary.words == [*SPECIAL_TOKENS, "a", "dog", "sits"]
    assert len(vocabulary) == 7
    assert Vocabulary.build(captions, min_count=1).words[4:] == ["a", "dog", "sits", "cat", "runs", "zebra"]
    assert Vocabulary.build(captions, min_count=5).words == list(SPECIAL_TOKENS)


def test_encode_wraps_in_start_end_and_maps_rare_words_to_unk():
    vocabulary = Vocabulary.build([["a", "dog"], ["a", "dog"]], min_count=2)
    ids = vocabulary.encode(["a", "purple", "dog"])
    assert ids == [vocabulary.start_id, vocabulary.index["a"], vocabulary.unk_id, vocabulary.index["dog"], vocabulary.end_id]
    assert vocabulary.decode(ids) == ["a", UNK, "dog"]


def test_mirrored_caption_swaps_left_and_right():
    vocabulary = Vocabulary([*SPECIAL_TOKENS, "a", "dog", "left", "right", "turns"])
    ids = vocabulary.encode("a dog turns left then right".split())
    assert vocabulary.decode(vocabulary.mirrored(ids)) == "a dog turns right <unk> left".split()
    without_right = Vocabulary([*SPECIAL_TOKENS, "a", "dog", "left"])
    ids = without_right.encode("a dog left".split())
    assert without_right.mirrored(ids) == ids  # no word to swap "left" with: unchanged


def test_encode_cuts_long_captions_to_max_length_words_and_keeps_end():
    vocabulary = Vocabulary.build([["one", "two", "three", "four"]], min_count=1)
    ids = vocabulary.encode(["one", "two", "three", "four"], max_length=2)
    assert ids == [vocabulary.start_id, vocabulary.index["one"], vocabulary.index["two"], vocabulary.end_id]


def test_decode_stops_at_end_and_skips_start_and_pad():
    vocabulary = Vocabulary.build([["a", "dog", "runs"]], min_count=1)
    a, dog, runs = (vocabulary.index[word] for word in ("a", "dog", "runs"))
    ids = [vocabulary.start_id, a, vocabulary.pad_id, dog, vocabulary.end_id, runs, vocabulary.end_id]
    assert vocabulary.decode(ids) == ["a", "dog"]
    assert vocabulary.decode([a, dog, runs]) == ["a", "dog", "runs"]  # no <end>: every word


def test_vocabulary_save_load_round_trip(tmp_path):
    vocabulary = Vocabulary.build([["a", "brown", "dog"], ["a", "white", "cat"], ["a", "dog"]], min_count=1)
    path = tmp_path / "sub" / "vocab.json"
    vocabulary.save(path)
    assert json.loads(path.read_text()) == {"words": vocabulary.words}
    loaded = Vocabulary.load(path)
    assert loaded.words == vocabulary.words
    assert loaded.index == vocabulary.index
    caption = ["a", "white", "dog", "unseen"]
    assert loaded.encode(caption) == vocabulary.encode(caption)
    assert [p.name for p in path.parent.iterdir()] == ["vocab.json"]  # the atomic write left no temp file


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "",
        "[\"<pad>\", \"<start>\", \"<end>\", \"<unk>\"]",
        "{\"vocabulary\": []}",
        "{\"words\": \"<pad> <start> <end> <unk>\"}",
        "{\"words\": [\"<pad>\", \"<start>\", \"<end>\", \"<unk>\", 7]}",
        "{\"words\": [\"a\", \"dog\"]}",
        "{\"words\": [\"<pad>\", \"<start>\", \"<end>\", \"<unk>\", \"dog\", \"dog\"]}",
    ],
    ids=["truncated", "empty", "list", "no-words", "string", "number", "no-specials", "duplicates"],
)
def test_corrupt_vocabulary_file_is_a_captioner_error_naming_the_file(tmp_path, content):
    path = tmp_path / "vocab.json"
    path.write_text(content)
    with pytest.raises(CaptionerError) as caught:
        Vocabulary.load(path)
    message = str(caught.value)
    assert str(path) in message
    assert "corrupt" in message
    assert "\n" not in message


def test_binary_vocabulary_file_is_corrupt(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(CaptionerError, match="corrupt"):
        Vocabulary.load(path)


def test_missing_vocabulary_file_is_a_captioner_error(tmp_path):
    with pytest.raises(CaptionerError, match="vocabulary file missing"):
        Vocabulary.load(tmp_path / "nope.json")


def test_vocabulary_refuses_words_without_the_special_tokens():
    with pytest.raises(CaptionerError, match="must start with"):
        Vocabulary(["a", "dog"])
