"""The real-photo benchmark: its word-level scoring, the photo list's shape, and fetch.py's archive readers."""
from __future__ import annotations

import hashlib
import importlib
import io
import json
import struct
import sys
import tarfile
import zlib
from collections import Counter
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
scoring = importlib.import_module("real_photos.scoring")
fetch = importlib.import_module("real_photos.fetch")


def photo(photo_id: str, *, subject: list[str], false: list[str] = (), category: str = "pet", person: bool = False,
          animal: bool = True) -> dict:
    return {"id": photo_id, "category": category, "subject": list(subject), "false": list(false), "person": person, "animal": animal}


CAT = photo("cat", subject=["cat", "kitten", "animal"], false=["dog", "man", "woman", "people"])
CUP = photo("cup", subject=["coffee", "cup"], false=["soup", "man"], category="food", animal=False)
CROWD = photo("crowd", subject=["people", "crowd"], category="group", person=True, animal=False)


@pytest.mark.parametrize(("word", "singular"), [
    ("dogs", "dog"), ("puppies", "puppy"), ("buses", "bus"), ("tomatoes", "tomato"), ("boxes", "box"),
    ("men", "man"), ("women", "woman"), ("children", "child"), ("people", "person"), ("leaves", "leaf"), ("Cats", "cat"),
])
def test_word_forms_include_the_singular(word, singular):
    assert singular in scoring.word_forms(word)


def test_words_split_on_anything_but_letters():
    assert scoring.words("A cat's close-up, 2 dogs!") == ["a", "cat", "s", "close", "up", "dogs"]


def test_word_set_matches_plurals_both_ways_but_never_substrings():
    cats = scoring.WordSet(["cat", "puppies"])
    assert cats.matches("cats") and cats.matches("Cat") and cats.matches("puppy")
    assert not cats.matches("cathedral") and not cats.matches("scat") and not cats.matches("catches")
    assert scoring.WordSet(["bus"]).matches("buses") and not scoring.WordSet(["bus"]).matches("business")
    assert scoring.WordSet(["glass"]).matches("glasses") and not scoring.WordSet(["grass"]).matches("gras")


def test_score_photo_finds_the_subject_and_the_inventions():
    hit = scoring.score_photo(CAT, "a kitten sleeps on a sofa")
    assert hit.subject_hit and not hit.invented_person and not hit.invented_animal and hit.false_words == []
    miss = scoring.score_photo(CAT, "Two men and a dog are sitting on a wall")
    assert not miss.subject_hit and miss.invented_person and miss.person_words == ["men"]
    assert miss.false_words == ["men", "dog"]
    assert not miss.invented_animal  # the cat photo has an animal, so naming one invents nothing
    soup = scoring.score_photo(CUP, "a brown dog drinks soup")
    assert soup.invented_animal and soup.animal_words == ["dog"] and soup.false_words == ["soup"] and not soup.subject_hit


def test_a_photo_with_people_never_counts_an_invented_person():
    score = scoring.score_photo(CROWD, "a crowd of men and women walk down the street")
    assert score.person_words == ["crowd", "men", "women"] and not score.invented_person and score.subject_hit


def test_a_failed_photo_is_a_miss_that_invents_nothing():
    score = scoring.score_photo(CAT, None)
    assert (score.caption, score.subject_hit, score.invented_person, score.false_words) == (None, False, False, [])


def test_summarise_gives_each_rate_over_its_own_photos():
    photos = [CAT, CAT, CUP, CUP, CROWD]
    captions = ["a cat on a bed", "a man in a red shirt", "a cup of coffee", "a dog with a cup", None]
    summary = scoring.summarise(photos, [scoring.score_photo(p, c) for p, c in zip(photos, captions, strict=True)])
    assert summary["photos"] == 5 and summary["failed"] == 1
    assert summary["subject_accuracy"] == 0.6  # cat, coffee, cup: 3 of 5 (the failed one is a miss)
    assert summary["photos_without_person"] == 4 and summary["invented_person_rate"] == 0.25  # "a man in a red shirt"
    assert summary["photos_without_animal"] == 3 and summary["invented_animal_rate"] == round(1 / 3, 4)  # the dog with a cup
    assert summary["false_word_rate"] == 0.2  # only "man" is a listed false word; the dog is not on the cup's list
    assert summary["per_category"] == {"food": {"photos": 2, "subject_accuracy": 1.0},
                                       "group": {"photos": 1, "subject_accuracy": 0.0},
                                       "pet": {"photos": 2, "subject_accuracy": 0.5}}
    with pytest.raises(ValueError, match="one score per photo"):
        scoring.summarise(photos, [])


def test_problems_reports_what_is_wrong():
    good = json.loads(scoring.PHOTOS_FILE.read_text().splitlines()[0])
    assert scoring.problems([good]) == []
    twice = scoring.problems([good, dict(good)])
    assert twice == [f"id {good['id']} appears more than once"]
    overlapping = dict(good, false=[*good["false"], good["subject"][0] + "s"])
    assert "both subject and false" in scoring.problems([overlapping])[0]
    assert "missing references" in scoring.problems([{k: v for k, v in good.items() if k != "references"}])[0]


def test_the_photo_list_is_well_formed():
    photos = scoring.load_photos()
    assert len(photos) >= 60
    assert scoring.problems(photos) == []
    splits = Counter(photo["split"] for photo in photos)
    assert splits["test"] >= 40 and splits["dev"] >= splits["test"]
    # the first 80 alternate within each category; the later ones were all added to dev, the test half kept as it was
    first = Counter((photo["category"], photo["split"]) for photo in photos[:80])
    for category in scoring.CATEGORIES:
        counts = Counter(photo["split"] for photo in photos if photo["category"] == category)
        assert counts["dev"] >= 1 and counts["test"] >= 1, f"{category} must be in both splits: {dict(counts)}"
        assert abs(first[category, "dev"] - first[category, "test"]) <= 1, f"{category} is not balanced: {dict(counts)}"
    assert len(scoring.load_photos(split="dev")) == splits["dev"]
    assert sum(not photo["person"] for photo in photos) >= 40  # enough photos to measure invented persons on
    forbidden = ("scikit-image", "skimage", "scikit-learn", "sklearn", "matplotlib", "mahotas", "opencv", "lomiri", "mate-")
    assert not [photo["id"] for photo in photos if any(name in photo["source"]["package"].lower() for name in forbidden)]


def _deb(files: dict[str, bytes], link: tuple[str, str] | None = None) -> bytes:
    """A minimal .deb: an ar archive with debian-binary and an xz data.tar holding the files (and one symlink)."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
        if link:
            info = tarfile.TarInfo("./" + link[0])
            info.type, info.linkname = tarfile.SYMTYPE, link[1]
            archive.addfile(info)
    blob = b"!<arch>\n"
    for name, body in (("debian-binary", b"2.0\n"), ("data.tar.xz", data.getvalue())):
        blob += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n".encode() + body + b"\n" * (len(body) % 2)
    return blob


def test_fetch_reads_a_deb_checks_the_sha256_and_follows_links(tmp_path):
    picture = b"\xff\xd8 a jpeg"
    folder = tmp_path / "packages" / "debian" / "somepkg"
    folder.mkdir(parents=True)
    (folder / "somepkg_1.0_all.deb").write_bytes(_deb({"usr/share/a/big.jpg": picture}, link=("usr/share/a/small.jpg", "big.jpg")))
    good = {"id": "good", "sha256": hashlib.sha256(picture).hexdigest(),
            "source": {"kind": "debian", "package": "somepkg", "version": "1.0", "path": "usr/share/a/small.jpg"}}
    wrong = dict(good, id="wrong", sha256="0" * 64)
    absent = dict(good, id="absent", source=dict(good["source"], path="usr/share/a/none.jpg"))
    images = tmp_path / "images"
    images.mkdir()
    errors = fetch.fetch_package(("debian", "somepkg", "1.0"), [good, wrong, absent], tmp_path / "packages", images)
    assert (images / "good.jpg").read_bytes() == picture  # no apt-get: the .deb already there is reused
    assert [line.split(":")[0] for line in errors] == ["wrong", "absent"]
    assert "sha256 mismatch" in errors[0] and "is not in somepkg_1.0_all.deb" in errors[1]
    assert not (images / "wrong.jpg").exists()


def _rcc(files: dict[str, tuple[bytes, bool]]) -> bytes:
    """A minimal Qt resource file (format version 2): root/dir/<files>, each stored or zlib-compressed."""
    names, data, name_offsets = b"", b"", {}
    for label in ["dir", *files]:
        name_offsets[label] = len(names)
        names += struct.pack(">HI", len(label), 0) + label.encode("utf-16-be")
    nodes = [struct.pack(">IHII", 0, 2, 1, 1) + b"\0" * 8, struct.pack(">IHII", name_offsets["dir"], 2, len(files), 2) + b"\0" * 8]
    for label, (content, compressed) in files.items():
        payload = struct.pack(">I", len(content)) + zlib.compress(content) if compressed else content
        nodes.append(struct.pack(">IHHHI", name_offsets[label], 1 if compressed else 0, 0, 0, len(data)) + b"\0" * 8)
        data += struct.pack(">I", len(payload)) + payload
    tree = b"".join(nodes)
    header = 20
    return b"qres" + struct.pack(">IIII", 2, header, header + len(tree), header + len(tree) + len(data)) + tree + data + names


def test_rcc_member_reads_stored_and_compressed_files():
    blob = _rcc({"a.webp": (b"stored bytes", False), "b.webp": (b"compressed bytes" * 10, True)})
    assert fetch.rcc_member(blob, "/dir/a.webp") == b"stored bytes"
    assert fetch.rcc_member(blob, "/dir/b.webp") == b"compressed bytes" * 10
    with pytest.raises(fetch.FetchError, match="not in the resource file"):
        fetch.rcc_member(blob, "/dir/c.webp")
    with pytest.raises(fetch.FetchError, match="not a Qt resource file"):
        fetch.rcc_member(b"nope", "/dir/a.webp")
