"""The library's exports: CSV and JSON Lines round-trip every field; the HTML page is well-formed, accessible and escaped."""
from __future__ import annotations

import base64
import csv
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from captioner.library.export import as_sentence, export_csv, export_html, export_jsonl
from captioner.library.store import COLUMNS, Library, Photo

NASTY = 'a <script>alert("x")</script> & a \'quoted\' dog'
INT_FIELDS = {"size", "mtime_ns", "width", "height"}
VOID = {"img", "meta", "br", "hr", "link", "input", "source", "wbr"}


def _photo(path: str, **fields) -> Photo:
    defaults = {"size": 1234, "mtime_ns": 1_700_000_000_123_456_789, "sha256": "ab" * 32, "width": 80, "height": 60,
                "run": "runs/r1", "model": "weights.safetensors:1234:99", "code_commit": "deadbeef", "captioned_at": "2025-01-02T03:04:05Z"}
    return Photo(path=path, **{**defaults, **fields})


@pytest.fixture
def library(tmp_path: Path):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    Image.new("RGB", (80, 60), (200, 30, 30)).save(photos / "dog.jpg")
    Image.new("RGBA", (300, 120), (30, 200, 30, 128)).save(photos / "sub" / "cat.png")
    Image.new("L", (50, 90), 128).save(photos / "café ☕ photo.jpg")
    Image.new("RGB", (40, 40), (0, 0, 200)).save(photos / "doubt.jpg")
    Image.new("RGB", (40, 40), (0, 100, 200)).save(photos / "fallback.jpg")
    Image.new("RGB", (40, 40), (9, 9, 9)).save(photos / "gone.jpg")
    Image.new("RGB", (40, 40), (90, 9, 9)).save(photos / "new.jpg")
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    (photos / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    rows = [
        _photo("dog.jpg", caption="a dog runs on the grass", confidence=0.934, source="decoder",
               alternatives=[{"text": "a dog runs on the grass", "score": -0.5, "log_probability": -4.25},
                             {"text": "a brown dog", "score": -0.75, "log_probability": -3.0}],
               recognised=[{"word": "dog", "probability": 0.875}]),
        _photo("sub/cat.png", caption=NASTY, confidence=0.5, source="decoder"),
        _photo("café ☕ photo.jpg", caption="a grey square, ünïcode", confidence=0.8, source="decoder"),
        _photo("doubt.jpg", caption="a man riding a horse", confidence=0.21, doubtful=True, source="decoder"),
        _photo("fallback.jpg", caption="a photo of a dog", confidence=0.66, source="fallback",
               recognised=[{"word": "dog", "probability": 0.5}]),
        _photo("gone.jpg", caption="a black square.", confidence=0.7, source="decoder"),
        _photo("corrupt.jpg", caption="something blue", confidence=0.4, source="decoder"),
        _photo("broken.jpg", width=None, height=None, run=None, model=None, code_commit=None, captioned_at=None,
               error="broken.jpg: not an image file (or a format Pillow cannot read) <b>"),
        _photo("new.jpg", sha256=None, run=None, model=None, code_commit=None, captioned_at=None),
    ]
    with Library.open(tmp_path / "lib.sqlite", create=True, root=photos) as opened:
        opened.write([(photo.path.encode("utf-8"), photo) for photo in rows])
        (photos / "gone.jpg").unlink()  # deleted after indexing: its row stays
        yield opened


def _from_cell(name: str, cell: str):
    """A CSV cell back to the Photo field's value."""
    if name in ("alternatives", "recognised"):
        return json.loads(cell)
    if name in ("doubtful", "needs_review"):
        assert cell in ("true", "false")
        return cell == "true"
    if cell == "":
        return None
    if name in INT_FIELDS:
        return int(cell)
    if name == "confidence":
        return float(cell)
    return cell


def test_csv_round_trips_every_field(library: Library, tmp_path: Path):
    out = tmp_path / "out" / "photos.csv"
    assert export_csv(library, out) == 9
    with open(out, encoding="utf-8", newline="") as stream:
        reader = csv.DictReader(stream)
        assert reader.fieldnames == [*COLUMNS, "needs_review"]
        parsed = [{name: _from_cell(name, cell) for name, cell in row.items()} for row in reader]
    assert parsed == [{**photo.to_dict(), "needs_review": photo.needs_review} for photo in library.photos()]
    assert [row["path"] for row in parsed] == sorted(row["path"] for row in parsed)


def test_jsonl_lines_equal_to_dict(library: Library, tmp_path: Path):
    out = tmp_path / "photos.jsonl"
    out.write_text("old\n")
    assert export_jsonl(library, out) == 9
    text = out.read_text(encoding="utf-8")
    assert "café ☕ photo.jpg" in text  # ensure_ascii=False: readable, not \u escapes
    lines = text.split("\n")
    assert lines[-1] == ""
    assert [json.loads(line) for line in lines[:-1]] == [{**photo.to_dict(), "needs_review": photo.needs_review}
                                                         for photo in library.photos()]
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []  # no temp file left


class PageParser(HTMLParser):
    """Checks nesting as it goes; collects tags, attributes, figures (their text and images) and table rows."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.figures: list[dict] = []
        self.rows: list[list[str]] = []
        self.text: list[str] = []
        self.by_tag: dict[str, list[str]] = {}

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "figure":
            self.figures.append({"text": [], "imgs": []})
        if tag == "img":
            self.figures[-1]["imgs"].append(attributes)
        if tag == "tr":
            self.rows.append([])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        raise AssertionError(f"self-closing <{tag}/>: not HTML5 style")

    def handle_endtag(self, tag):
        assert tag not in VOID, tag
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)
        if "figure" in self.stack:
            self.figures[-1]["text"].append(data)
        if self.stack and self.stack[-1] in ("td", "th"):
            self.rows[-1].append(data)
        if self.stack:
            self.by_tag.setdefault(self.stack[-1], []).append(data)


def _parse(out: Path) -> tuple[str, PageParser]:
    raw = out.read_text(encoding="utf-8")
    parser = PageParser()
    parser.feed(raw)
    parser.close()
    assert parser.stack == [], parser.stack
    return raw, parser


def _figure_for(parser: PageParser, path: str) -> dict:
    matches = [figure for figure in parser.figures if path in "".join(figure["text"])]
    assert len(matches) == 1, path
    return matches[0]


def test_html_page_is_valid_accessible_and_self_contained(library: Library, tmp_path: Path):
    out = tmp_path / "page.html"
    assert export_html(library, out, thumbnail_px=64) == 9
    raw, parser = _parse(out)
    assert raw.startswith("<!DOCTYPE html>")
    tags = [tag for tag, _ in parser.tags]
    html_tag = next(attributes for tag, attributes in parser.tags if tag == "html")
    assert html_tag["lang"] == "en"
    for tag in ("title", "main", "h1", "ul", "li", "figure", "figcaption", "table", "style"):
        assert tag in tags, tag
    assert tags.count("main") == tags.count("h1") == tags.count("title") == 1
    assert parser.by_tag["title"][0].strip()
    assert "script" not in tags
    # no external resources: every src or href is a data URI
    for _, attributes in parser.tags:
        for name in ("src", "href", "srcset", "action"):
            assert attributes.get(name) is None or attributes[name].startswith("data:image/jpeg;base64,"), attributes
    assert not re.search(r"https?://|//[a-z]", raw.replace("data:image/jpeg;base64,", ""), re.IGNORECASE)


def test_html_images_have_caption_alt_and_real_thumbnails(library: Library, tmp_path: Path):
    out = tmp_path / "page.html"
    export_html(library, out, thumbnail_px=64)
    _, parser = _parse(out)
    imgs = [attributes for tag, attributes in parser.tags if tag == "img"]
    assert imgs and all(attributes.get("alt") for attributes in imgs)
    expected = {photo.path: as_sentence(photo.caption) for photo in library.photos() if photo.caption}
    for path in ("dog.jpg", "sub/cat.png", "café ☕ photo.jpg", "doubt.jpg", "fallback.jpg"):
        figure = _figure_for(parser, path)
        (img,) = figure["imgs"]
        assert img["alt"] == expected[path]
        assert expected[path] in "".join(figure["text"])  # the figcaption says it too
        thumbnail = Image.open(io.BytesIO(base64.b64decode(img["src"].removeprefix("data:image/jpeg;base64,"))))
        assert thumbnail.format == "JPEG" and thumbnail.mode == "RGB"
        assert max(thumbnail.size) <= 64 and [int(img["width"]), int(img["height"])] == list(thumbnail.size)
    assert _figure_for(parser, "dog.jpg")["imgs"][0]["alt"] == "A dog runs on the grass."
    assert "Confidence 93%" in "".join(_figure_for(parser, "dog.jpg")["text"])
    assert _figure_for(parser, "sub/cat.png")["imgs"][0]["alt"] == 'A <script>alert("x")</script> & a \'quoted\' dog.'
    assert _figure_for(parser, "new.jpg")["imgs"][0]["alt"] == "Photo new.jpg, not captioned yet."
    # a file gone or unreadable since indexing: no image, but its caption and a note
    gone = _figure_for(parser, "gone.jpg")
    assert gone["imgs"] == [] and "A black square." in "".join(gone["text"]) and "no longer there" in "".join(gone["text"])
    corrupt = _figure_for(parser, "corrupt.jpg")
    assert corrupt["imgs"] == [] and "Something blue." in "".join(corrupt["text"]) and "cannot be read" in "".join(corrupt["text"])
    assert str(library.root) not in "".join(corrupt["text"])  # relative paths only


def test_html_marks_doubtful_lists_failures_and_counts(library: Library, tmp_path: Path):
    out = tmp_path / "page.html"
    export_html(library, out)
    raw, parser = _parse(out)
    doubt_text = "".join(_figure_for(parser, "doubt.jpg")["text"])
    assert "Needs review" in doubt_text and "doubtful" in doubt_text
    assert "Needs review" not in "".join(_figure_for(parser, "dog.jpg")["text"])
    assert "says less" in "".join(_figure_for(parser, "fallback.jpg")["text"])
    summary = " ".join(" ".join(parser.text).split())
    assert "9 photos: 7 captioned, 1 need review, 1 failed." in summary
    assert "Failed files" in parser.by_tag["h2"]
    headers = [attributes for tag, attributes in parser.tags if tag == "th"]
    assert len(headers) == 2 and all(attributes.get("scope") == "col" for attributes in headers)
    assert ["broken.jpg", "broken.jpg: not an image file (or a format Pillow cannot read) <b>"] in parser.rows
    assert all("broken.jpg" not in "".join(figure["text"]) for figure in parser.figures)  # failed: in the table, not the grid
    # escaping: the caption's and the error's markup are text, never tags
    assert "<script" not in raw.lower() and "<b>" not in raw
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; a &#x27;quoted&#x27; dog" in raw


def test_html_of_an_empty_library_and_odd_rows(tmp_path: Path):
    photos = tmp_path / "photos"
    photos.mkdir()
    with Library.open(tmp_path / "lib.sqlite", create=True, root=photos) as library:
        out = tmp_path / "empty.html"
        assert export_html(library, out) == 0
        _, parser = _parse(out)
        assert "0 photos: 0 captioned, 0 need review, 0 failed." in " ".join(parser.text)
        assert [tag for tag, _ in parser.tags].count("img") == 0
        (tmp_path / "secret.jpg").write_bytes(b"x")
        odd = [_photo("../secret.jpg", caption="outside"), _photo("ctl\x01name.jpg", caption="line one\nline two", confidence=float("nan"))]
        library.write([(photo.path.encode("utf-8"), photo) for photo in odd])
        assert export_html(library, out) == 2
        raw, parser = _parse(out)
        assert "outside the library" in "".join(_figure_for(parser, "../secret.jpg")["text"])
        assert "\x01" not in raw and "ctl\\x01name.jpg" in raw
        assert export_csv(library, tmp_path / "odd.csv") == 2 and export_jsonl(library, tmp_path / "odd.jsonl") == 2


def test_a_reviewed_caption_is_marked_and_no_longer_needs_review(library: Library, tmp_path: Path):
    library.set_review(b"doubt.jpg", "a heron standing in a pond", edited=True)
    out = tmp_path / "page.html"
    export_html(library, out)
    _, parser = _parse(out)
    text = "".join(_figure_for(parser, "doubt.jpg")["text"])
    assert "Written by a person." in text and "Needs review" not in text and "A heron standing in a pond." in text
    export_jsonl(library, tmp_path / "rows.jsonl")
    rows = {row["path"]: row for row in map(json.loads, (tmp_path / "rows.jsonl").read_text().splitlines())}
    assert (rows["doubt.jpg"]["review"], rows["doubt.jpg"]["needs_review"], rows["doubt.jpg"]["doubtful"]) == ("edited", False, True)
