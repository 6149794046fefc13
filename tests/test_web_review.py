"""The web review view (`/library/review`): list what needs a look, accept a caption, pick an alternative, write one;
the marks a person's review leaves; every malformed request refused in one JSON line; a read-only or vanished library
file is a 503; a write waits for `captioner index`; a file name that is not UTF-8; and the page in a real browser,
by keyboard alone, down to the XMP sidecar `captioner write-metadata` writes from what the person typed."""
from __future__ import annotations

import dataclasses
import io
import os
import random
import re
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image

from captioner.library.store import Library, Photo, display_path
from captioner.web.app import create_app
from captioner.web.review import MAX_CAPTION_CHARS

from servers import BackgroundServer

with warnings.catch_warnings():  # starlette asks for httpx2 here; httpx works
    warnings.filterwarnings("ignore", message="Using .httpx. with .starlette.testclient")
    from fastapi.testclient import TestClient

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def alternatives(*texts: str) -> list[dict]:
    return [{"text": text, "score": -1.0 - number, "log_probability": -4.0 - number} for number, text in enumerate(texts)]


# path -> (colour, row fields); by path: "a dog..." < "holiday/..." < "zebra.jpg"
ROWS = {
    "a doubtful dog.jpg": ((120, 80, 40), {"caption": "a dog on the grass", "doubtful": True, "confidence": 0.31,
                                          "alternatives": alternatives("a brown dog running on grass", "a cat on a lawn")}),
    "holiday/boat.jpg": ((30, 60, 220), {"caption": "a boat on the water", "confidence": 0.92,
                                         "alternatives": alternatives("a small boat on a lake")}),
    "holiday/horse.jpg": ((90, 60, 30), {"caption": "a man riding a horse", "doubtful": True, "confidence": 0.2}),
    "zebra.jpg": ((20, 20, 20), {"caption": "a zebra standing in a field", "confidence": 0.81,
                                 "alternatives": alternatives("two zebras in the grass")}),
    "unreadable.jpg": ((0, 0, 0), {"caption": None, "error": "cannot identify image file"}),
}
NEEDS_REVIEW = ["a doubtful dog.jpg", "holiday/horse.jpg"]
UNREVIEWED = NEEDS_REVIEW + ["holiday/boat.jpg", "zebra.jpg"]  # doubtful first, then the rest, each by path
RECORD_KEYS = {"path", "caption", "confidence", "doubtful", "source", "width", "height", "review", "reviewed_at", "needs_review",
               "photo_url", "thumbnail_url", "machine_caption", "alternatives", "review_url"}


@dataclasses.dataclass
class Shelf:
    root: Path
    library_file: Path

    def row(self, key: str | bytes) -> Photo:
        with Library.open(self.library_file) as library:
            photo = library.get(key.encode() if isinstance(key, str) else key)
        assert photo is not None
        return photo


def build_library(folder: Path, rows: dict[bytes, tuple[tuple[int, int, int], dict]]) -> Shelf:
    """Tiny real JPEGs on disk and their rows, written straight into a new library (no model needed)."""
    root = folder / "photos"
    root.mkdir(parents=True)
    written = []
    for key, (colour, fields) in rows.items():
        path = os.path.join(os.fsencode(root), key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        buffer = io.BytesIO()
        Image.new("RGB", (48, 32), colour).save(buffer, format="JPEG")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(descriptor, "wb") as file:
            file.write(buffer.getvalue())
        info = os.stat(path)
        written.append((key, Photo(path=display_path(key), size=info.st_size, mtime_ns=info.st_mtime_ns, width=48, height=32,
                                   source="decoder" if fields.get("caption") else None, **fields)))
    library_file = root / ".captioner" / "library.sqlite"
    with Library.open(library_file, create=True, root=root) as library:
        library.write(written)
    return Shelf(root, library_file)


@pytest.fixture()
def shelf(tmp_path) -> Shelf:
    return build_library(tmp_path, {path.encode(): row for path, row in ROWS.items()})


@pytest.fixture()
def client(tiny_captioner, shelf):
    with TestClient(create_app(tiny_captioner, library=shelf.library_file)) as session:
        yield session


def review_url(path: str) -> str:
    return f"/api/library/review/{quote(path)}"


def queue(client, **params) -> dict:
    response = client.get("/api/library/review", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def verdict(client, path: str, body, **options):
    return client.post(review_url(path), json=body, **options)


# --- the list ---------------------------------------------------------------------------------------------------
def test_the_list_puts_what_needs_review_first_and_its_records_load(client, shelf):
    body = queue(client)
    assert (body["filter"], body["offset"], body["total"]) == ("needs-review", 0, len(NEEDS_REVIEW))
    assert [photo["path"] for photo in body["photos"]] == NEEDS_REVIEW
    assert [photo["path"] for photo in queue(client, filter="unreviewed")["photos"]] == UNREVIEWED
    assert queue(client, filter="all")["total"] == len(UNREVIEWED)  # the uncaptioned file has nothing to review
    first = body["photos"][0]
    assert set(first) == RECORD_KEYS
    assert first["caption"] == first["machine_caption"] == "a dog on the grass"
    assert first["alternatives"] == [{"text": "a brown dog running on grass", "score": -1.0}, {"text": "a cat on a lawn", "score": -2.0}]
    assert (first["doubtful"], first["needs_review"], first["review"], first["reviewed_at"]) == (True, True, "machine", None)
    assert first["confidence"] == pytest.approx(0.31)
    assert first["review_url"] == review_url("a doubtful dog.jpg")
    assert client.get(first["review_url"]).json() == first  # one photo's record, the same
    for url in (first["photo_url"], first["thumbnail_url"]):
        response = client.get(url)
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    page = queue(client, filter="unreviewed", offset=1, limit=2)
    assert [photo["path"] for photo in page["photos"]] == UNREVIEWED[1:3] and page["total"] == len(UNREVIEWED)
    assert queue(client, filter="unreviewed", offset=10)["photos"] == []


def test_the_queue_is_the_sorted_list_cut_by_the_store(tmp_path):
    rng = random.Random(7)
    photos = [Photo(path=f"{number:03d}.jpg", size=1, mtime_ns=1, caption="a cat", doubtful=rng.random() < 0.3,
                    review=rng.choice(["machine", "machine", "approved"])) for number in range(60)]
    photos.append(Photo(path="failed.jpg", size=1, mtime_ns=1, error="failed.jpg: not an image file"))
    with Library.open(tmp_path / "queue.sqlite", create=True, root=tmp_path) as library:
        library.write([(photo.path.encode(), photo) for photo in photos])
        for which, keep in {"unreviewed": lambda photo: photo.review == "machine",
                            "needs-review": lambda photo: photo.review == "machine" and photo.doubtful,
                            "all": lambda photo: True}.items():
            kept = [photo for photo in photos if photo.caption is not None and keep(photo)]
            ordered = [photo.path for photo in kept if photo.doubtful] + [photo.path for photo in kept if not photo.doubtful]
            for offset in range(0, 70, 3):
                for limit in (1, 2, 5, 17, 100):
                    window, total = library.review_queue(which, offset=offset, limit=limit)
                    assert ([photo.path for photo in window], total) == (ordered[offset:offset + limit], len(ordered)), (which, offset)


# --- verdicts ---------------------------------------------------------------------------------------------------
def test_accepting_the_caption_marks_it_approved_and_it_leaves_the_queue(client, shelf):
    response = verdict(client, "a doubtful dog.jpg", {"accept": "caption"})
    assert response.status_code == 200, response.text
    record = response.json()
    assert set(record) == RECORD_KEYS
    assert (record["caption"], record["review"]) == ("a dog on the grass", "approved")
    assert (record["needs_review"], record["doubtful"]) == (False, True)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", record["reviewed_at"])
    row = shelf.row("a doubtful dog.jpg")
    assert (row.caption, row.review, row.reviewed_at) == ("a dog on the grass", "approved", record["reviewed_at"])
    assert [photo["path"] for photo in queue(client)["photos"]] == ["holiday/horse.jpg"]
    assert [photo["path"] for photo in queue(client, filter="all")["photos"]] == UNREVIEWED  # the order never moves
    # the search page sees the mark
    hit = next(hit for hit in client.get("/api/library/search", params={"q": "dog grass"}).json()["results"]
               if hit["path"] == "a doubtful dog.jpg")
    assert (hit["review"], hit["needs_review"], hit["reviewed_at"]) == ("approved", False, record["reviewed_at"])


def test_picking_an_alternative_makes_it_the_caption_approved(client, shelf):
    record = verdict(client, "a doubtful dog.jpg", {"accept": 1}).json()
    assert (record["caption"], record["review"], record["machine_caption"]) == ("a cat on a lawn", "approved", "a dog on the grass")
    row = shelf.row("a doubtful dog.jpg")
    assert (row.caption, row.review, row.machine_caption) == ("a cat on a lawn", "approved", "a dog on the grass")
    # the same words sent as text, saying they were chosen, are an approval too; the model's own caption back again
    again = verdict(client, "a doubtful dog.jpg", {"text": "  a dog on the   grass ", "edited": False}).json()
    assert (again["caption"], again["review"]) == ("a dog on the grass", "approved")


def test_a_person_s_own_text_is_marked_written_by_a_person(client, shelf):
    record = verdict(client, "holiday/boat.jpg", {"text": "  a red\tsailing boat\nmoored in a harbour  "}).json()
    assert (record["caption"], record["review"], record["machine_caption"]) == ("a red sailing boat moored in a harbour", "edited",
                                                                                 "a boat on the water")
    row = shelf.row("holiday/boat.jpg")
    assert (row.caption, row.review, row.reviewed) == ("a red sailing boat moored in a harbour", "edited", True)
    # a text that is none of the model's is the person's, whatever `edited` says
    assert verdict(client, "zebra.jpg", {"text": "a zebra near a tree", "edited": False}).json()["review"] == "edited"
    # accepting a caption a person wrote keeps it theirs
    assert verdict(client, "holiday/boat.jpg", {"accept": "caption"}).json()["review"] == "edited"
    results = client.get("/api/library/search", params={"q": "harbour"}).json()["results"]
    assert [(hit["path"], hit["review"]) for hit in results] == [("holiday/boat.jpg", "edited")]  # searchable by the new words
    assert verdict(client, "holiday/boat.jpg", {"text": "x" * MAX_CAPTION_CHARS}).status_code == 200  # at the limit


@pytest.mark.parametrize("body", [
    {}, {"accept": "caption", "text": "a dog"}, {"accept": 2}, {"accept": -1}, {"accept": True}, {"accept": "1"},
    {"accept": "everything"}, {"accept": 1.0}, {"text": 5}, {"text": ""}, {"text": " \n\t "}, {"text": "x" * (MAX_CAPTION_CHARS + 1)},
    {"text": "a dog\x00 on grass"}, {"text": "a dog\x1b[31m"}, {"text": "a dog", "edited": "yes"}, {"accept": "caption", "edited": False},
    {"text": "a dog", "tags": ["x"]}, [], "a dog",
])
def test_malformed_verdicts_are_422_and_change_nothing(client, shelf, body):
    response = verdict(client, "a doubtful dog.jpg", body)
    assert response.status_code == 422, (body, response.text)
    assert isinstance(response.json()["detail"], str) and "\n" not in response.json()["detail"]
    row = shelf.row("a doubtful dog.jpg")
    assert (row.caption, row.review) == ("a dog on the grass", "machine")


def test_requests_that_name_no_photo_or_are_not_json_are_refused(client, shelf):
    def refused(response, status: int, words: str) -> None:
        assert response.status_code == status, response.text
        assert words in response.json()["detail"]

    refused(verdict(client, "not here.jpg", {"accept": "caption"}), 404, "not in the library")
    refused(client.get(review_url("not here.jpg")), 404, "not in the library")
    refused(verdict(client, "unreadable.jpg", {"accept": "caption"}), 422, "no caption to accept")
    refused(verdict(client, "holiday/horse.jpg", {"accept": 0}), 422, "no alternatives")
    for target in ("%2e%2e/photos/zebra.jpg", "holiday/%2E%2E/zebra.jpg", "a%5Cb.jpg", "zebra.jpg%00", "%5Cxc3%5Cxa9.jpg", "%5Cx41.jpg",
                   "", "/etc/passwd"):
        response = client.post(f"/api/library/review/{target}", json={"accept": "caption"})
        assert response.status_code == 400 and response.json()["detail"], target
    refused(client.post(review_url("zebra.jpg"), content='{"accept": "caption"', headers={"content-type": "application/json"}),
            422, "JSON")
    refused(client.post(review_url("zebra.jpg"), content='{"accept": "caption"}', headers={"content-type": "text/plain"}), 415, "JSON")
    refused(client.post(review_url("zebra.jpg"), data={"accept": "caption"}), 415, "JSON")  # an HTML form of any site
    refused(verdict(client, "zebra.jpg", {"accept": "caption"}, headers={"origin": "https://elsewhere.example"}), 403, "own page")
    refused(verdict(client, "zebra.jpg", {"accept": "caption"}, headers={"sec-fetch-site": "cross-site"}), 403, "own page")
    assert verdict(client, "zebra.jpg", {"accept": "caption"}, headers={"origin": "http://testserver",
                                                                         "sec-fetch-site": "same-origin"}).status_code == 200
    for params in ({"filter": "mine"}, {"offset": -1}, {"limit": 0}, {"limit": 101}):
        refused(client.get("/api/library/review", params=params), 422, next(iter(params)))
    assert shelf.row("holiday/boat.jpg").review == "machine"


def test_without_a_library_the_review_routes_are_404(tiny_captioner):
    with TestClient(create_app(tiny_captioner)) as client:
        for response in (client.get("/api/library/review"), client.get(review_url("a.jpg")),
                         verdict(client, "a.jpg", {"accept": "caption"})):
            assert response.status_code == 404 and "--library" in response.json()["detail"]
        page = client.get("/library/review")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")  # it says there is none


def test_the_page_and_the_schema(client):
    page = client.get("/library/review")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert '<script src="/static/review.js" defer></script>' in html and "<script>" not in html and "style=" not in html
    assert 'aria-live="polite"' in html and not re.search(r'(src|href)="(https?:)?//', html)  # no CDN, nothing outside
    assert client.get("/static/review.js").status_code == 200
    assert 'href="/library/review"' in client.get("/library").text  # the search page links it
    paths = client.get("/api/openapi.json").json()["paths"]
    assert {"/api/library/review", "/api/library/review/{path}"} <= set(paths)
    assert {"400", "403", "404", "415", "422", "503"} <= set(paths["/api/library/review/{path}"]["post"]["responses"])


# --- the file under the server ---------------------------------------------------------------------------------
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files")
def test_a_read_only_library_file_is_a_503_and_reads_go_on(client, shelf):
    assert queue(client)["total"] == len(NEEDS_REVIEW)  # the query-only connection is open
    shelf.library_file.chmod(0o444)
    try:
        response = verdict(client, "zebra.jpg", {"accept": "caption"})
        assert response.status_code == 503, response.text
        detail = response.json()["detail"]
        assert "readonly" in detail and "\n" not in detail and response.headers["retry-after"] == "1"
        assert queue(client)["total"] == len(NEEDS_REVIEW)  # searching and listing still work
        assert client.get("/api/library/search", params={"q": "zebra"}).status_code == 200
    finally:
        shelf.library_file.chmod(0o644)
    saved = verdict(client, "zebra.jpg", {"accept": "caption"})
    assert saved.status_code == 200 and saved.json()["review"] == "approved", saved.text  # writable again: it saves


def test_a_library_file_gone_is_a_503_never_a_new_file(client, shelf):
    shelf.library_file.rename(shelf.library_file.with_name("moved.sqlite"))
    response = verdict(client, "zebra.jpg", {"accept": "caption"})
    assert response.status_code == 503 and "\n" not in response.json()["detail"]
    assert not shelf.library_file.exists()


def test_a_write_waits_for_an_index_batch_to_commit(client, shelf):
    # `captioner index` beside the server holds the write lock while it commits a batch: the review waits, then saves
    with Library.open(shelf.library_file) as indexer:
        indexer.connection.execute("BEGIN IMMEDIATE")
        answers: list = []
        writer = threading.Thread(target=lambda: answers.append(verdict(client, "zebra.jpg", {"text": "a zebra at noon"})))
        writer.start()
        time.sleep(1.0)
        assert writer.is_alive() and not answers  # waiting, not failed at once
        assert queue(client)["total"] == len(NEEDS_REVIEW)  # reads are not held up meanwhile
        indexer.connection.execute("COMMIT")
        writer.join(30)
    assert answers and answers[0].status_code == 200, answers
    assert shelf.row("zebra.jpg").caption == "a zebra at noon"
    served = client.app.state.library
    with served.reading() as library:  # the shared connection is still the query-only one
        assert library.connection.execute("PRAGMA query_only").fetchone()[0] == 1


def test_a_file_name_that_is_not_utf8_is_found_shown_and_reviewed(tiny_captioner, tmp_path):
    name = b"caf\xe9 \xff.jpg"
    probe = tmp_path / "probe"
    probe.mkdir()
    try:
        os.close(os.open(os.path.join(os.fsencode(probe), name), os.O_WRONLY | os.O_CREAT, 0o644))
    except OSError as error:
        pytest.skip(f"this file system refuses names that are not UTF-8 ({error})")
    key = b"Ferien/" + name
    shelf = build_library(tmp_path, {key: ((200, 40, 40), {"caption": "a red wall in the sun", "doubtful": True, "confidence": 0.4,
                                                           "alternatives": alternatives("a red door")}),
                                     b"plain.jpg": ((40, 40, 200), {"caption": "a blue wall"}),
                                     b"Ferien/kaputt\xe9.jpg": ((0, 0, 0), {"caption": "a broken wall"})})
    assert display_path(key) == "Ferien/caf\\xe9 \\xff.jpg"
    with open(os.path.join(os.fsencode(shelf.root), b"Ferien/kaputt\xe9.jpg"), "wb") as file:
        file.write(b"not a photo at all")
    with TestClient(create_app(tiny_captioner, library=shelf.library_file)) as client:
        hits = {hit["path"]: hit for hit in client.get("/api/library/search", params={"q": "wall"}).json()["results"]}
        hit = hits[display_path(key)]
        assert hit["path"] == display_path(key)
        assert hit["photo_url"] == "/api/library/photo/Ferien/caf%5Cxe9%20%5Cxff.jpg"
        photo = client.get(hit["photo_url"])
        assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
        assert photo.content == Path(os.fsdecode(os.path.join(os.fsencode(shelf.root), key))).read_bytes()
        thumbnail = client.get(hit["thumbnail_url"])
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
        with Image.open(io.BytesIO(thumbnail.content)) as image:
            assert image.size == (48, 32)
        broken = client.get(hits["Ferien/kaputt\\xe9.jpg"]["thumbnail_url"])  # an error names it as the library shows it
        assert broken.status_code == 422 and broken.json()["detail"].startswith("Ferien/kaputt\\xe9.jpg: no thumbnail")
        listed = queue(client)["photos"]
        assert [photo["path"] for photo in listed] == [display_path(key)]
        response = client.post(listed[0]["review_url"], json={"accept": 0})
        assert response.status_code == 200, response.text
        assert (response.json()["caption"], response.json()["review"]) == ("a red door", "approved")
        # the same bytes written another way name no file: one URL per photo
        assert client.get("/api/library/photo/Ferien/caf%5CxE9%20%5Cxff.jpg").status_code == 400
        assert client.get("/api/library/photo/Ferien/caf%E9%20%FF.jpg").status_code == 404
    assert (shelf.row(key).caption, shelf.row(key).review) == ("a red door", "approved")


# --- in a real browser -----------------------------------------------------------------------------------------
def focus_by_keyboard(page, selector: str, key: str = "Tab", most: int = 30) -> int:
    """Press Tab (or Shift+Tab) until `selector` has the focus; how many presses it took."""
    for presses in range(1, most + 1):
        page.keyboard.press(key)
        if page.evaluate("selector => document.activeElement && document.activeElement.matches(selector)", selector):
            return presses
    raise AssertionError(f"{selector} never got the focus by {key}")


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: install it with `apt-get install -y chromium`")
def test_the_review_page_by_keyboard_in_a_real_browser(tiny_captioner, shelf, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    expect = sync_api.expect
    typed = "A black dog asleep on a green lawn"
    with BackgroundServer(create_app(tiny_captioner, library=shelf.library_file)) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page_errors: list[str] = []
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.goto(f"{url}/library")  # the search page links the review page, and is left for it by keyboard
            focus_by_keyboard(page, "#review-link")
            page.keyboard.press("Enter")
            page.wait_for_url(re.compile(r".*/library/review(\?.*)?$"))
            item = page.locator("#review-item")
            expect(item).to_be_visible()
            expect(page.locator("#review-path")).to_have_text(NEEDS_REVIEW[0])
            expect(page.locator("#review-mark")).to_have_text("Needs review")
            expect(item).to_have_attribute("data-image", "loaded")
            expect(page.locator("#review-image")).to_have_attribute("alt", "A dog on the grass.")
            expect(page.locator("#review-position")).to_have_text(f"1 of {len(NEEDS_REVIEW)}")
            choices = page.locator("#choices input[type=radio]")
            expect(choices).to_have_count(3)  # the caption and its two alternatives
            expect(page.get_by_role("radio", name="The model’s alternative 1: A brown dog running on grass.")).to_be_visible()
            status = page.locator("#review-status")
            expect(status).to_have_attribute("aria-live", "polite")

            # write a caption: Tab to the field, type, Enter
            focus_by_keyboard(page, "#caption-input")
            field = page.locator("#caption-input")
            expect(field).to_have_accessible_name("Or write your own caption")
            assert field.evaluate("field => getComputedStyle(field).outlineStyle") != "none"  # the focus shows
            page.keyboard.press("Control+A")
            page.keyboard.type(typed)
            page.keyboard.press("Enter")
            expect(page.locator("#review-mark")).to_have_text("Written by a person")
            expect(status).to_contain_text(re.compile("written by a person", re.IGNORECASE))
            expect(status).to_contain_text(typed)
            expect(page.locator("#review-caption")).to_have_text(f"{typed}.")
            expect(page.locator("#review-image")).to_have_attribute("alt", f"{typed}.")
            expect(field).to_be_focused()
            row = shelf.row(NEEDS_REVIEW[0])
            assert (row.review, row.caption) == ("edited", typed)

            # the next photo and back: Tab to Next, Enter; Shift+Tab to Previous, Space
            focus_by_keyboard(page, "#next-button")
            page.keyboard.press("Enter")
            expect(page.locator("#review-path")).to_have_text(NEEDS_REVIEW[1])
            expect(status).to_contain_text(f"Photo 2 of {len(NEEDS_REVIEW)}")
            page.keyboard.press("Enter")  # Next again: the end of the list, said so
            expect(status).to_contain_text("last photo")
            focus_by_keyboard(page, "#previous-button", key="Shift+Tab")
            page.keyboard.press("Space")
            expect(page.locator("#review-path")).to_have_text(NEEDS_REVIEW[0])
            expect(page.locator("#review-mark")).to_have_text("Written by a person")  # still marked when met again

            # another list: every unreviewed photo; the boat's alternative picked with the arrow keys, Accept with Space
            focus_by_keyboard(page, "#filter-select", key="Shift+Tab")
            page.keyboard.press("ArrowDown")
            expect(page.locator("#filter-select")).to_have_value("unreviewed")
            page.keyboard.press("Tab")
            expect(page.locator("#filter-button")).to_be_focused()
            page.keyboard.press("Enter")  # Show
            expect(page.locator("#review-path")).to_have_text("holiday/horse.jpg")  # the dog left this list
            focus_by_keyboard(page, "#next-button")
            page.keyboard.press("Enter")
            expect(page.locator("#review-path")).to_have_text("holiday/boat.jpg")
            focus_by_keyboard(page, "#choices input:checked", key="Shift+Tab")
            page.keyboard.press("ArrowDown")
            expect(page.get_by_role("radio", name="The model’s alternative 1: A small boat on a lake.")).to_be_checked()
            page.keyboard.press("Tab")
            expect(page.locator("#accept-button")).to_be_focused()
            page.keyboard.press("Space")
            expect(page.locator("#review-mark")).to_have_text("Approved by a person")
            expect(status).to_contain_text(re.compile("approved by a person", re.IGNORECASE))
            row = shelf.row("holiday/boat.jpg")
            assert (row.review, row.caption) == ("approved", "a small boat on a lake")
            screenshot = tmp_path / "captioner-review.png"
            page.screenshot(path=str(screenshot), full_page=True)
            print(f"screenshot: {screenshot}")

            page.set_viewport_size({"width": 375, "height": 800})  # a phone: one column, no sideways scrolling
            assert page.evaluate("document.documentElement.scrollWidth") <= 375

            # the search page shows the marks too
            page.goto(f"{url}/library?q=dog")
            result = page.locator("#library-results > li").first
            expect(result.locator(".review-mark")).to_have_text("Written by a person")
            expect(result.locator(".doubt-note")).to_be_hidden()
            page.goto(f"{url}/library?q=horse")
            expect(page.locator("#library-results > li").first.locator(".review-mark")).to_have_text("Needs review")

            # a search result's own review link opens that photo first, then the photos that need review
            page.goto(f"{url}/library?q=zebra")
            result = page.locator("#library-results > li").first
            # wait for the result itself: a locator that matches nothing yet also counts as hidden
            expect(result.locator("a.review-photo-link")).to_be_visible()
            expect(result.locator(".review-mark")).to_be_hidden()  # the model's, not doubtful: nothing to flag
            focus_by_keyboard(page, "#library-results a.review-photo-link")
            page.keyboard.press("Enter")
            page.wait_for_url(f"{url}/library/review?path=zebra.jpg")
            expect(page.locator("#review-path")).to_have_text("zebra.jpg")
            expect(page.locator("#review-mark")).to_have_text("Written by the model, not reviewed yet")
            focus_by_keyboard(page, "#next-button")
            page.keyboard.press("Enter")
            expect(page.locator("#review-path")).to_have_text("holiday/horse.jpg")
            expect(status).to_contain_text("Photo 2 of 2, needs review: A man riding a horse.")
            assert not page_errors, page_errors
        finally:
            browser.close()

    # what the person typed reaches the photo's XMP sidecar (`captioner write-metadata`)
    from captioner.alttext.metadata import read_description, sidecar_path
    from captioner.cli import main

    main(["write-metadata", str(shelf.root), "--library", str(shelf.library_file)])
    assert read_description(sidecar_path(shelf.root / NEEDS_REVIEW[0])) == typed
