"""`captioner alt-text`: <img> tags without alt get a caption, and only those bytes change; remote, missing and
outside images are reported and never read; doubtful captions wait for review; the report is accessible HTML + CSV."""
from __future__ import annotations

import argparse
import csv
import errno
import os
import re
import sys
import types
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from captioner.alttext import html as markup
from captioner.alttext.site import CSV_COLUMNS, add_command, alt_text
from captioner.errors import ImageError

INSERTED = re.compile(rb'(<img) alt="[^"]*"', re.IGNORECASE)  # test pages never have alt right after <img themselves


@dataclass
class FakeCaption:
    text: str
    confidence: float | None
    doubtful: bool


class FakeCaptioner:
    """`caption` without a model: the text comes from the file name ("doubt" in it: doubtful, "broken": unreadable)."""

    def __init__(self, texts: dict[str, str] | None = None):
        self.texts = texts or {}
        self.calls: list[list[Path]] = []

    def __call__(self, paths: list[Path]) -> list[FakeCaption | Exception]:
        self.calls.append(list(paths))
        results: list[FakeCaption | Exception] = []
        for path in paths:
            if "broken" in path.name:
                results.append(ImageError(f"{path}: not an image file (or a format Pillow cannot read)"))
            else:
                doubtful = "doubt" in path.stem
                text = self.texts.get(path.name, f"a photo of {path.stem.replace('_', ' ')}")
                results.append(FakeCaption(text, 0.25 if doubtful else 0.9, doubtful))
        return results

    @property
    def asked(self) -> list[Path]:
        return [path for call in self.calls for path in call]


def picture(path: Path, colour: tuple[int, int, int] = (200, 40, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 8), colour).save(path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
    return path


def page(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


class Tags(HTMLParser):
    """Every <img> of a page as its attribute dict, the way a browser-like parser reads it."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))


def images_of(path: Path, encoding: str = "utf-8") -> list[dict[str, str | None]]:
    parser = Tags()
    parser.feed(path.read_bytes().decode(encoding))
    parser.close()
    return parser.images


def rows_by_image(summary) -> dict[str, object]:
    return {row.image: row for row in summary.suggestions}


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    return {str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mtime_ns) for path in files}


# ---- patching -----------------------------------------------------------------------------------------------
MIXED = ("<!DOCTYPE html>\r\n<html lang=en>\r\n<head><meta charset=utf-8><title>Pets</title></head>\r\n<body>\r\n"
         "  <IMG SRC=dog.png WIDTH=12>\r\n"
         "  <img\r\n      src = \"cat.png\"    class='a  b'   />\r\n"
         "\t<img src=bird.png/>\r\n"
         "  <img src=\"frame.png\" alt=\"\">\r\n"
         "  <img src=\"fish.png\" alt=\"A goldfish\">\r\n"
         "</body>\r\n</html>\r\n")


def test_write_adds_alt_and_leaves_every_other_byte(tmp_path: Path):
    site = tmp_path / "site"
    for name in ("dog.png", "cat.png", "bird.png", "frame.png", "fish.png"):
        picture(site / name)
    index = page(site / "index.html", MIXED)
    os.chmod(index, 0o640)
    original = index.read_bytes()
    fake = FakeCaptioner()
    summary = alt_text(site, fake, write=True)

    patched = index.read_bytes()
    assert patched != original
    assert INSERTED.sub(rb"\1", patched) == original  # the alt attributes are the only change: CRLF, spacing, case, />
    assert patched.count(b"\r\n") == original.count(b"\r\n") and b"\n" not in patched.replace(b"\r\n", b"")
    assert b'<IMG alt="A photo of dog." SRC=dog.png WIDTH=12>' in patched
    assert b'<img alt="A photo of bird." src=bird.png/>' in patched
    tags = images_of(index)
    assert [tag.get("alt") for tag in tags] == ["A photo of dog.", "A photo of cat.", "A photo of bird.", "", "A goldfish"]
    assert tags[1]["class"] == "a  b"
    assert (index.parent / "index.html.bak").read_bytes() == original
    assert os.stat(index).st_mode & 0o777 == 0o640
    assert sorted(path.name for path in fake.asked) == ["bird.png", "cat.png", "dog.png"]  # not the decorative or described ones

    statuses = {row.image: row.status for row in summary.suggestions}
    assert statuses == {"dog.png": "written", "cat.png": "written", "bird.png/": "written", "frame.png": "decorative"}
    assert (summary.pages, summary.images, summary.with_alt, summary.missing_alt, summary.written, summary.decorative) == (1, 5, 1, 3, 3, 1)
    assert summary.line() == "1 page, 5 images: 1 with alt text, 1 decorative, 3 without: 3 written"


def test_without_write_only_suggests(tmp_path: Path):
    site = tmp_path / "site"
    picture(site / "dog.png")
    index = page(site / "index.html", '<p><img src="dog.png"></p>\n')
    before = snapshot(site)
    summary = alt_text(site, FakeCaptioner())
    assert snapshot(site) == before
    [row] = summary.suggestions
    assert (row.status, row.text, row.confidence, row.file) == ("suggested", "A photo of dog.", 0.9, "dog.png")
    assert not index.with_name("index.html.bak").exists()


def test_rerun_after_write_changes_nothing(tmp_path: Path):
    site = tmp_path / "site"
    picture(site / "img" / "dog.png")
    page(site / "a.html", '<img src="img/dog.png">\n<img src="img/doubt_cat.png">\n')
    picture(site / "img" / "doubt_cat.png")
    alt_text(site, FakeCaptioner(), write=True, include_unreviewed=True)
    before = snapshot(site)
    fake = FakeCaptioner()
    summary = alt_text(site, fake, write=True, include_unreviewed=True)
    assert snapshot(site) == before  # bytes and mtimes, the backup included
    assert fake.calls == []
    assert (summary.with_alt, summary.missing_alt, summary.written, summary.suggestions) == (2, 0, 0, [])


def test_backup_is_never_overwritten(tmp_path: Path):
    site = tmp_path / "site"
    picture(site / "dog.png")
    picture(site / "cat.png")
    index = page(site / "index.html", '<img src="dog.png">\n')
    index.with_name("index.html.bak").write_bytes(b"an older backup")
    alt_text(site, FakeCaptioner(), write=True)
    assert index.with_name("index.html.bak").read_bytes() == b"an older backup"

    other = page(site / "other.html", '<img src="dog.png">\n')
    first = other.read_bytes()
    alt_text(site, FakeCaptioner(), write=True)
    other.write_bytes(other.read_bytes() + b'<img src="cat.png">\n')  # edited later; a second run keeps the first original
    alt_text(site, FakeCaptioner(), write=True)
    assert other.with_name("other.html.bak").read_bytes() == first
    assert [tag["alt"] for tag in images_of(other)] == ["A photo of dog.", "A photo of cat."]


def test_malformed_html_is_still_patched_exactly(tmp_path: Path):
    site = tmp_path / "site"
    for name in ("a.png", "b.png", "c.png"):
        picture(site / name)
    original = (b"<html><body><div><p>1 < 2 and 3 > 2 <b>bold <i>both</b></i>\n"
                b"<img src=a.png><span class=x\n<table><tr><td><img src='b.png' width=3\n  ></table>"
                b"<p>stray & ampersand <<img src=\"c.png\"> <img src=\"d.png\"")  # d.png: an unfinished tag
    index = page(site / "index.html", original)
    fake = FakeCaptioner()
    summary = alt_text(site, fake, write=True)
    patched = index.read_bytes()
    assert INSERTED.sub(rb"\1", patched) == original
    assert sorted(path.name for path in fake.asked) == ["a.png", "b.png", "c.png"]
    assert summary.written == 3
    assert patched.endswith(b'<img src="d.png"')


def test_images_in_comments_scripts_and_text_are_not_images(tmp_path: Path):
    site = tmp_path / "site"
    picture(site / "a.png")
    index = page(site / "index.html", "<!-- <img src=a.png> --><script>document.write('<img src=a.png>')</script>\n"
                                      "<style>/* <img src=a.png> */</style><textarea><img src=a.png></textarea>"
                                      "<title><img src=a.png></title><p>&lt;img src=a.png&gt;</p>\n")
    before = index.read_bytes()
    fake = FakeCaptioner()
    summary = alt_text(site, fake, write=True)
    assert (summary.images, fake.calls, index.read_bytes()) == (0, [], before)


def test_template_and_noscript_images_count(tmp_path: Path):
    site = tmp_path / "site"
    picture(site / "a.png")
    picture(site / "b.png")
    page(site / "index.html", "<template><img src=a.png></template><noscript><img src=b.png></noscript>")
    summary = alt_text(site, FakeCaptioner(), write=True)
    assert summary.written == 2  # both render: a cloned template, a browser without scripts


# ---- where the images are -----------------------------------------------------------------------------------
def test_image_urls_resolve_to_site_files(tmp_path: Path):
    site = tmp_path / "site"
    for name in ("img/abs.png", "blog/rel.png", "img/up.png", "blog/q.png", "blog/my photo é.png", "blog/small.png",
                 "blog/large.png", "blog/one.png", "blog/two.png", "img/based.png"):
        picture(site / name)
    blog = page(site / "blog" / "post.html",
                '<img src="/img/abs.png"><img src="rel.png"><img src="../img/up.png"><img src="q.png?v=3#top">'
                '<img src="my%20photo%20%C3%A9.png"><img srcset="small.png 100w, large.png 800w, rel.png 300w" sizes="50vw">'
                '<img src="" srcset="one.png, two.png 2x"><img src=" rel.png ">')
    page(site / "based.html", '<base href="/img/"><img src="based.png"><img src="/blog/rel.png">')
    fake = FakeCaptioner()
    summary = alt_text(site, fake, write=True)
    files = {(row.page, row.image): row.file for row in summary.suggestions}
    assert files == {
        ("blog/post.html", "/img/abs.png"): "img/abs.png", ("blog/post.html", "rel.png"): "blog/rel.png",
        ("blog/post.html", "../img/up.png"): "img/up.png", ("blog/post.html", "q.png?v=3#top"): "blog/q.png",
        ("blog/post.html", "my%20photo%20%C3%A9.png"): "blog/my photo é.png", ("blog/post.html", "large.png"): "blog/large.png",
        ("blog/post.html", "two.png"): "blog/two.png", ("blog/post.html", " rel.png "): "blog/rel.png",
        ("based.html", "based.png"): "img/based.png", ("based.html", "/blog/rel.png"): "blog/rel.png",
    }
    assert all(row.status == "written" for row in summary.suggestions)
    assert len(fake.asked) == len(set(fake.asked)) == 8  # rel.png, on two pages and three tags, captioned once
    assert [tag["alt"] for tag in images_of(blog)][4] == "A photo of my photo é."


def test_same_image_on_two_pages_is_captioned_once(tmp_path: Path):
    site = tmp_path / "site"
    picture(site / "img" / "logo.png")
    page(site / "a.html", '<img src="img/logo.png">')
    page(site / "sub" / "b.html", '<img src="/img/logo.png"><img src="../img/logo.png">')
    fake = FakeCaptioner()
    summary = alt_text(site, fake, write=True)
    assert fake.calls == [[(site / "img" / "logo.png").resolve()]]
    assert summary.written == 3


def test_remote_images_are_skipped_and_reported(tmp_path: Path):
    site = tmp_path / "site"
    urls = ["http://example.com/a.png", "https://example.com/b.png", "//cdn.example.com/c.png", "data:image/png;base64,iVBORw0KGgo="]
    index = page(site / "index.html", "".join(f'<img src="{url}">' for url in urls))
    page(site / "based.html", '<base href="https://cdn.example.com/"><img src="d.png"><img src="/e.png">')
    picture(site / "d.png")
    picture(site / "e.png")
    before = index.read_bytes()
    warnings: list[str] = []
    fake = FakeCaptioner()
    summary = alt_text(site, fake, write=True, warn=warnings.append)
    assert fake.calls == [] and index.read_bytes() == before
    assert [row.status for row in summary.suggestions] == ["remote"] * 6
    assert summary.remote == 6 and len(warnings) == 6
    assert "index.html: line 1: https://example.com/b.png: remote (https: URL), not captioned" in warnings
    assert all("\n" not in line for line in warnings)


def test_paths_outside_the_site_are_never_read(tmp_path: Path):
    site = tmp_path / "site"
    secret = picture(tmp_path / "secret.png")
    picture(site / "inside.png")
    (site / "escape.png").symlink_to(secret)
    (site / "linked").symlink_to(tmp_path)
    (site / "alias.png").symlink_to(site / "inside.png")  # a link within the site is fine
    page(site / "a" / "b" / "index.html",
         '<img src="../../../secret.png"><img src="../../../../../../etc/passwd"><img src="/../secret.png">'
         '<img src="/escape.png"><img src="/linked/secret.png"><img src="%2E%2E/%2E%2E/%2E%2E/secret.png"><img src="/alias.png">')
    warnings: list[str] = []
    fake = FakeCaptioner()
    summary = alt_text(site, fake, write=True, warn=warnings.append)
    assert fake.asked == [(site / "inside.png").resolve()]
    assert [row.status for row in summary.suggestions] == ["outside the site"] * 6 + ["written"]
    assert summary.outside == 6
    assert sum("resolves outside the site; not read" in line for line in warnings) == 6
    assert rows_by_image(summary)["/alias.png"].file == "inside.png"


def test_missing_files_are_reported(tmp_path: Path):
    site = tmp_path / "site"
    (site / "folder.png").mkdir(parents=True)
    index = page(site / "index.html", '<img src="gone.png"><img src="folder.png"><img><img src="#top">')
    before = index.read_bytes()
    warnings: list[str] = []
    summary = alt_text(site, FakeCaptioner(), write=True, warn=warnings.append)
    assert [row.status for row in summary.suggestions] == ["missing"] * 4
    assert index.read_bytes() == before
    assert warnings[0] == "index.html: line 1: gone.png: file not found"
    assert summary.missing == 4


def test_unreadable_image_is_reported_and_the_rest_written(tmp_path: Path):
    site = tmp_path / "site"
    picture(site / "dog.png")
    (site / "broken.png").write_bytes(b"not a png")
    index = page(site / "index.html", '<img src="broken.png"><img src="dog.png">')
    warnings: list[str] = []
    summary = alt_text(site, FakeCaptioner(), write=True, warn=warnings.append)
    rows = rows_by_image(summary)
    assert rows["broken.png"].status == "failed: not an image file (or a format Pillow cannot read)"
    assert rows["dog.png"].status == "written"
    assert [tag.get("alt") for tag in images_of(index)] == [None, "A photo of dog."]
    assert summary.unreadable == 1 and summary.failed_pages == 0
    assert warnings == ["index.html: line 1: broken.png: not an image file (or a format Pillow cannot read)"]


def test_doubtful_captions_wait_for_review(tmp_path: Path):
    site = tmp_path / "site"
    picture(site / "doubt_horse.png")
    picture(site / "dog.png")
    index = page(site / "index.html", '<img src="doubt_horse.png"><img src="dog.png">')
    summary = alt_text(site, FakeCaptioner(), write=True)
    rows = rows_by_image(summary)
    assert (rows["doubt_horse.png"].status, rows["doubt_horse.png"].text) == ("needs review", "A photo of doubt horse.")
    assert [tag.get("alt") for tag in images_of(index)] == [None, "A photo of dog."]
    assert summary.needs_review == 1 and "1 need review" in summary.line()

    summary = alt_text(site, FakeCaptioner(), write=True, include_unreviewed=True)
    assert [row.status for row in summary.suggestions] == ["written"]
    assert summary.suggestions[0].doubtful and summary.needs_review == 1
    assert [tag.get("alt") for tag in images_of(index)] == ["A photo of doubt horse.", "A photo of dog."]


# ---- encodings ----------------------------------------------------------------------------------------------
def test_latin1_page_is_patched_in_latin1(tmp_path: Path):
    site = tmp_path / "site"
    picture(site / "cafe.png")
    picture(site / "euro.png")
    original = ('<html><head><meta charset="iso-8859-1"></head><body>Café\r\n'
                '<img src="cafe.png"> <img src="euro.png"></body>').encode("latin-1")
    index = page(site / "index.html", original)
    fake = FakeCaptioner({"cafe.png": "café au lait", "euro.png": 'a "price" in € & 💡'})
    alt_text(site, fake, write=True)
    patched = index.read_bytes()
    assert b'<img alt="Caf\xe9 au lait." src="cafe.png">' in patched  # a real é, one Latin-1 byte
    assert b'<img alt="A &quot;price&quot; in &#8364; &amp; &#128161;." src="euro.png">' in patched
    assert INSERTED.sub(rb"\1", patched) == original
    assert [tag["alt"] for tag in images_of(index, "latin-1")] == ["Café au lait.", 'A "price" in € & 💡.']


@pytest.mark.parametrize("head, encoding", [
    (b'<meta http-equiv="Content-Type" content="text/html; charset=windows-1252">', "cp1252"),
    (b"", "utf-8-sig"),  # a UTF-8 byte order mark
])
def test_declared_encodings_and_bom(tmp_path: Path, head: bytes, encoding: str):
    site = tmp_path / "site"
    picture(site / "cafe.png")
    original = head + '<p>Œuvre — café</p><img src="cafe.png">'.encode(encoding)
    index = page(site / "index.html", original)
    alt_text(site, FakeCaptioner({"cafe.png": "œuvre of café"}), write=True)
    patched = index.read_bytes()
    assert INSERTED.sub(rb"\1", patched) == original
    assert '<img alt="Œuvre of café."'.encode(encoding.removesuffix("-sig")) in patched


def test_undecodable_page_is_reported_and_left_alone(tmp_path: Path):
    site = tmp_path / "site"
    picture(site / "a.png")
    bad = page(site / "bad.html", b"<p>caf\xe9</p><img src=a.png>")
    good = page(site / "good.html", "<img src=a.png>")
    warnings: list[str] = []
    fake = FakeCaptioner()
    summary = alt_text(site, fake, write=True, warn=warnings.append)
    assert bad.read_bytes() == b"<p>caf\xe9</p><img src=a.png>" and not bad.with_name("bad.html.bak").exists()
    assert warnings == ["bad.html: not UTF-8 (byte 0xe9 at offset 6) and no charset declared; left as it is"]
    assert summary.failed_pages == 1 and summary.written == 1
    assert summary.suggestions[0].status.startswith("failed: not UTF-8") and summary.suggestions[0].image == ""
    assert images_of(good)[0]["alt"] == "A photo of a."


# ---- failures while writing ---------------------------------------------------------------------------------
def test_read_only_page_fails_alone(tmp_path: Path):
    site = tmp_path / "site"
    picture(site / "a.png")
    locked = page(site / "locked.html", "<img src=a.png>")
    other = page(site / "other.html", "<img src=a.png>")
    os.chmod(locked, 0o444)
    warnings: list[str] = []
    summary = alt_text(site, FakeCaptioner(), write=True, warn=warnings.append)
    assert locked.read_bytes() == b"<img src=a.png>" and not locked.with_name("locked.html.bak").exists()
    assert warnings == ["locked.html: read-only; left as it is"]
    assert [row.status for row in summary.suggestions] == ["failed: read-only; left as it is", "written"]
    assert summary.failed_pages == 1 and "1 page failed" in summary.line()
    assert images_of(other)[0]["alt"] == "A photo of a."


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_read_only_folder_fails_alone(tmp_path: Path):
    site = tmp_path / "site"
    picture(site / "a.png")
    locked = page(site / "locked" / "index.html", "<img src=../a.png>")
    os.chmod(locked.parent, 0o555)
    try:
        warnings: list[str] = []
        summary = alt_text(site, FakeCaptioner(), write=True, warn=warnings.append)
    finally:
        os.chmod(locked.parent, 0o755)
    assert locked.read_bytes() == b"<img src=../a.png>" and list(locked.parent.iterdir()) == [locked]
    assert len(warnings) == 1 and warnings[0].startswith("locked/index.html: cannot be written: Permission denied")
    assert summary.failed_pages == 1


@pytest.mark.parametrize("failing", ["page", "backup"])
def test_full_disk_leaves_the_original(tmp_path: Path, monkeypatch, failing: str):
    site = tmp_path / "site"
    picture(site / "a.png")
    full = page(site / "full.html", "<img src=a.png>\r\n")
    write = markup._write_durably

    def disk_fills(path: Path, data: bytes) -> None:
        if path.name.startswith(".full.html.") if failing == "page" else path.name == "full.html.bak":
            path.write_bytes(data[:3])  # some bytes went out before the disk filled up
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        write(path, data)

    monkeypatch.setattr(markup, "_write_durably", disk_fills)
    page(site / "later.html", "<img src=a.png>")
    warnings: list[str] = []
    summary = alt_text(site, FakeCaptioner(), write=True, warn=warnings.append)
    assert full.read_bytes() == b"<img src=a.png>\r\n"
    assert sorted(path.name for path in site.iterdir()) == ["a.png", "full.html", "later.html", "later.html.bak"]  # no temp, no backup
    assert warnings == ["full.html: cannot be written: No space left on device; left as it is"]
    assert summary.failed_pages == 1 and summary.written == 1


def test_page_changed_since_it_was_read_is_not_written(tmp_path: Path):
    site = tmp_path / "site"
    picture(site / "a.png")
    index = page(site / "index.html", "<img src=a.png>")
    parsed = markup.read_page(index)
    index.write_bytes(b"<p>edited</p><img src=a.png>")
    with pytest.raises(markup.PageError, match="changed since it was read"):
        markup.write_alt_texts(parsed, {0: "A dog."})
    assert index.read_bytes() == b"<p>edited</p><img src=a.png>"


# ---- the pieces ---------------------------------------------------------------------------------------------
def test_srcset_choice():
    assert markup.largest_candidate("a.png 480w, b.png 1080w, c.png 800w") == "b.png"
    assert markup.largest_candidate("a.png, b.png 3x, c.png 2x") == "b.png"
    assert markup.largest_candidate("data:image/png;base64,AA,BB 2x, a.png 1x") == "data:image/png;base64,AA,BB"
    assert markup.largest_candidate("a.png 10h") == "a.png"
    assert markup.largest_candidate(" , ") is None


def test_alt_attribute_is_escaped_and_one_line():
    assert markup.alt_attribute('a <b> & "c"\n\td\x00', "utf-8") == b' alt="a &lt;b&gt; &amp; &quot;c&quot; d"'
    assert markup.alt_attribute("naïve ☕", "ascii") == b' alt="na&#239;ve &#9749;"'


# ---- the report ---------------------------------------------------------------------------------------------
class ReportParser(HTMLParser):
    """The report's structure: html lang, the table caption, th scopes, and each body row's cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.lang: str | None = None
        self.caption, self.scopes, self.rows, self.row_classes = "", [], [], []
        self.images: list[dict[str, str | None]] = []
        self._in: list[str] = []

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        if tag == "html":
            self.lang = values.get("lang")
        if tag == "img":
            self.images.append(values)
        if tag == "th":
            self.scopes.append(values.get("scope"))
        if tag == "tr" and "tbody" in self._in:
            self.rows.append([])
            self.row_classes.append(values.get("class"))
        if tag in ("td", "th") and "tbody" in self._in:
            self.rows[-1].append("")
        if tag not in ("img", "meta", "br"):
            self._in.append(tag)

    def handle_endtag(self, tag):
        if tag in self._in:
            while self._in.pop() != tag:
                pass

    def handle_data(self, data):
        if "caption" in self._in:
            self.caption += data
        elif self._in and self._in[-1] in ("td", "th", "strong", "span") and "tbody" in self._in:
            self.rows[-1][-1] += data


def test_report_html_and_csv(tmp_path: Path):
    site = tmp_path / "site"
    picture(site / "dog.png")
    picture(site / "doubt_horse.png")
    page(site / "index.html", '<img src="dog.png"><img src="doubt_horse.png"><img src="x.png" alt="">'
                              '<img src="https://example.com/a.png"><img src="&lt;gone&gt;.png"><img src="dog.png" alt="A dog">')
    page(site / "bad.html", b"\xff<img src=dog.png>")
    report = tmp_path / "out" / "report.html"
    summary = alt_text(site, FakeCaptioner({"dog.png": "a dog <runs> & jumps"}), write=True, report=report)
    assert (summary.report, summary.csv) == (report, tmp_path / "out" / "report.csv")

    parser = ReportParser()
    parser.feed(report.read_text(encoding="utf-8"))
    parser.close()
    assert parser.lang == "en"
    assert parser.caption.startswith("Images without alt text")
    assert parser.scopes[:6] == ["col"] * 6 and set(parser.scopes[6:]) == {"row"}
    assert len(parser.rows) == len(summary.suggestions) == 6
    by_image = {cells[1]: cells for cells in parser.rows}
    assert by_image["dog.png"][3:] == ["A dog <runs> & jumps.", "90%", "Written"]
    assert by_image["doubt_horse.png"][5].startswith("Needs review")  # in words, not only by colour
    assert parser.row_classes[[cells[1] for cells in parser.rows].index("doubt_horse.png")] == "review"
    assert by_image["<gone>.png"][5] == "Missing: file not found" and by_image["x.png"][5] == "Decorative"
    assert by_image[""][0] == "bad.html" and by_image[""][5].startswith("Failed: not UTF-8")
    assert all(image["alt"] == "" and image["src"].startswith("data:image/jpeg;base64,") for image in parser.images)
    assert len(parser.images) == 2  # a preview for each captioned image
    assert "1 page failed" in report.read_text(encoding="utf-8")

    with open(summary.csv, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [(row["page"], row["image"], row["status"]) for row in rows] == [
        ("bad.html", "", "failed: not UTF-8 (byte 0xff at offset 0) and no charset declared; left as it is"),
        ("index.html", "dog.png", "written"), ("index.html", "doubt_horse.png", "needs review"),
        ("index.html", "x.png", "decorative"), ("index.html", "https://example.com/a.png", "remote"),
        ("index.html", "<gone>.png", "missing")]
    assert rows[1]["suggested_text"] == "A dog <runs> & jumps." and rows[1]["confidence"] == "0.9" and rows[1]["file"] == "dog.png"
    assert rows[2]["confidence"] == "0.25" and rows[3]["file"] == rows[3]["suggested_text"] == ""


def test_report_inside_the_site_is_not_a_page(tmp_path: Path):
    site = tmp_path / "site"
    picture(site / "dog.png")
    page(site / "index.html", '<img src="dog.png">')
    alt_text(site, FakeCaptioner(), report=site / "report.html")
    summary = alt_text(site, FakeCaptioner(), report=site / "report.html")
    assert summary.pages == 1


# ---- the command --------------------------------------------------------------------------------------------
def _fake_inference(monkeypatch, loads: list[str]):
    """Stand in for captioner.inference (no torch): Captioner.load records its run."""
    class Captioner:
        @classmethod
        def load(cls, run):
            loads.append(run)
            return cls()

        def caption_many(self, paths, *, batch_size):
            return FakeCaptioner()(paths)

    monkeypatch.setitem(sys.modules, "captioner.inference", types.SimpleNamespace(Captioner=Captioner))


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="captioner")
    add_command(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_command_loads_the_run_only_when_needed(tmp_path: Path, monkeypatch, capsys):
    loads: list[str] = []
    _fake_inference(monkeypatch, loads)
    site = tmp_path / "site"
    picture(site / "dog.png")
    index = page(site / "index.html", '<img src="dog.png" alt="A dog">')
    report = tmp_path / "report.html"
    args = _parse(["alt-text", str(site), "--report", str(report), "--write", "--run", "runs/r1"])
    assert (args.batch_size, args.include_unreviewed) == (16, False)
    assert args.handler(args) == 0 and loads == []  # every image has alt: no model

    index.write_text('<img src="dog.png">')
    assert args.handler(args) == 0 and loads == ["runs/r1"]
    assert images_of(index)[0]["alt"] == "A photo of dog."
    out = capsys.readouterr().out
    assert f"{site}: 1 page, 1 image: 0 with alt text, 0 decorative, 1 without: 1 written" in out
    assert f"report: {report} and {report.with_suffix('.csv')}" in out

    page(site / "locked.html", '<img src="dog.png">').chmod(0o444)
    assert args.handler(args) == 1
    assert "warning: locked.html: read-only; left as it is" in capsys.readouterr().err


def test_command_defaults_and_bad_arguments(capsys):
    args = _parse(["alt-text", "site"])
    assert (args.run, args.report, args.write, args.batch_size) == ("runs/default", "alt-text-report.html", False, 16)
    with pytest.raises(SystemExit):
        _parse(["alt-text", "site", "--batch-size", "0"])
    assert "expected a number >= 1" in capsys.readouterr().err
