"""The web library view (`captioner serve RUN --library FILE`): search, photos, cached thumbnails, every way out
of the library's folder refused, a server without a library, and the page in a real browser."""
from __future__ import annotations

import dataclasses
import http.client
import io
import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import httpx
import pytest
from PIL import Image

from captioner.cli import main
from captioner.inference import Captioner
from captioner.library.export import as_sentence
from captioner.library.indexer import index
from captioner.library.search import search
from captioner.library.store import Library, LibraryError, Photo
from captioner.web.app import create_app

from conftest import draw_shape
from servers import BackgroundServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PHOTOS = {"red circle 0.jpg": ("red", "circle"), "red square 1.jpg": ("red", "square"),
          "Ferien ä/green circle 2.jpg": ("green", "circle"), "2024/summer/blue square 3.jpg": ("blue", "square"),
          "blue circle 4.png": ("blue", "circle")}
DOUBTFUL = "red circle 0.jpg"
REFUSED_ROWS = ("escape.jpg", "linked/secret.jpg", "gone.jpg")  # rows of the library the web must not serve
RESULT_KEYS = {"path", "caption", "confidence", "doubtful", "source", "width", "height", "review", "reviewed_at", "needs_review",
               "photo_url", "thumbnail_url"}


@dataclasses.dataclass
class Gallery:
    root: Path
    library_file: Path
    secret: bytes  # the bytes of the files outside the root that symlinks point to


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, tiny_captioner) -> Gallery:
    """A library of generated photos, one row made doubtful, and rows that point outside the root or at nothing."""
    base = tmp_path_factory.mktemp("web_library")
    root = base / "photos"
    for number, (name, (colour, shape)) in enumerate(PHOTOS.items()):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        draw_shape(colour, shape, number).resize((160, 120)).save(path, quality=95)
    buffer = io.BytesIO()
    draw_shape("green", "square", 1).save(buffer, format="JPEG")
    secret = buffer.getvalue()
    (base / "secret.jpg").write_bytes(secret)
    (base / "elsewhere").mkdir()
    (base / "elsewhere" / "secret.jpg").write_bytes(secret)
    (root / "escape.jpg").symlink_to(base / "secret.jpg")  # a file link inside the root pointing out of it
    (root / "linked").symlink_to(base / "elsewhere", target_is_directory=True)  # and a folder link
    library_file = root / ".captioner" / "library.sqlite"
    with Library.open(library_file, create=True, root=root) as library:
        summary = index(library, tiny_captioner, progress=False)
        assert summary.captioned == len(PHOTOS)
        photo = library.get(DOUBTFUL.encode())
        library.write([(DOUBTFUL.encode(), dataclasses.replace(photo, caption="a red circle on a white background",
                                                                doubtful=True, confidence=0.31))])
        # the indexer never follows symlinks: these rows are what a tampered (or stale) library could hold
        library.write([(key.encode(), Photo(path=key, size=len(secret), mtime_ns=1, caption="a purple triangle", confidence=0.9))
                       for key in REFUSED_ROWS])
    return Gallery(root, library_file, secret)


@pytest.fixture(scope="module")
def server_url(tiny_run, gallery):
    with BackgroundServer(create_app(Captioner.load(tiny_run), library=gallery.library_file)) as url:
        yield url


@pytest.fixture()
def client(server_url):
    with httpx.Client(base_url=server_url, timeout=30) as session:
        yield session


def search_results(client: httpx.Client, query: str, **params) -> list[dict]:
    response = client.get("/api/library/search", params={"q": query, **params})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"] == query
    return body["results"]


def raw_get(url: str, target: str) -> tuple[int, dict[str, str], bytes]:
    """GET a request target exactly as written: no client normalises its `..`, `//` or percent escapes away."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        return response.status, {name.lower(): value for name, value in response.getheaders()}, response.read()
    finally:
        connection.close()


def every_caption_word(gallery: Gallery) -> str:
    with Library.open(gallery.library_file) as library:
        return " ".join(photo.caption for photo in library.photos() if photo.caption)


# --- search ------------------------------------------------------------------------------------------------
def test_search_finds_the_library_matches_and_their_photos_and_thumbnails_load(client, gallery):
    results = search_results(client, "red circle")
    with Library.open(gallery.library_file) as library:
        expected = [hit.photo.path for hit in search(library, "red circle", limit=40)]
    assert expected and [result["path"] for result in results] == expected
    assert all(set(result) == RESULT_KEYS for result in results)
    doubtful = next(result for result in results if result["path"] == DOUBTFUL)
    assert doubtful["doubtful"] is True and doubtful["confidence"] == pytest.approx(0.31)
    assert doubtful["caption"] == "a red circle on a white background" and (doubtful["width"], doubtful["height"]) == (160, 120)
    assert (doubtful["needs_review"], doubtful["review"], doubtful["reviewed_at"]) == (True, "machine", None)
    assert all(result["needs_review"] is False for result in results if result["path"] != DOUBTFUL)

    # every photo, names with spaces, Unicode and folders among them, comes back by its URLs
    everything = search_results(client, every_caption_word(gallery), limit=100)
    found = {result["path"]: result for result in everything}
    assert set(PHOTOS) <= set(found)
    for name in PHOTOS:
        result = found[name]
        photo = client.get(result["photo_url"])
        assert photo.status_code == 200 and photo.content == (gallery.root / name).read_bytes()
        assert photo.headers["content-type"] == ("image/png" if name.endswith(".png") else "image/jpeg")
        thumbnail = client.get(result["thumbnail_url"])
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
        assert "max-age" in thumbnail.headers["cache-control"]
        with Image.open(io.BytesIO(thumbnail.content)) as image:
            assert image.format == "JPEG" and max(image.size) <= 256 and image.size == (160, 120)  # never enlarged


def test_library_info_and_the_page(client):
    assert client.get("/api/library").json() == {"name": "photos", "photos": len(PHOTOS) + len(REFUSED_ROWS)}
    page = client.get("/library")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    # the CSP forbids inline script and style: everything comes from /static
    html = page.text
    assert '<script src="/static/library.js" defer></script>' in html and "<script>" not in html and "style=" not in html
    assert client.get("/static/library.js").status_code == 200
    assert 'id="library-link" hidden' in client.get("/").text  # the main page links it once app.js sees a library
    paths = client.get("/api/openapi.json").json()["paths"]
    assert {"/api/library", "/api/library/search", "/api/library/photo/{path}", "/api/library/thumbnail/{path}"} <= set(paths)
    assert {"400", "403", "404", "422"} <= set(paths["/api/library/thumbnail/{path}"]["get"]["responses"])


@pytest.mark.parametrize("query", ["", " ", '"', "*", "NEAR(", "red AND", "OR OR", "(red", "red*", "-red", "^red", "{}", "\\",
                                   "')--", "%", "\x00", "a\x00red", "ä 🐕 狗", "red:circle", "caption:red", "x" * 1000])
def test_any_query_text_is_answered(client, query):
    results = search_results(client, query)
    assert isinstance(results, list)
    if not query.strip() or query in ('"', "*", "{}", "\\", "%", "\x00"):
        assert results == []


def test_bad_search_parameters_are_422(client):
    for params in ({"q": "x" * 1001}, {"q": "red", "limit": 0}, {"q": "red", "limit": 101}, {"q": "red", "limit": "many"}):
        response = client.get("/api/library/search", params=params)
        assert response.status_code == 422 and isinstance(response.json()["detail"], str), params
    assert len(search_results(client, "red circle square", limit=1)) == 1


# --- files ---------------------------------------------------------------------------------------------------
TRAVERSALS = ["../secret.jpg", "%2e%2e/secret.jpg", "%2E%2E%2Fsecret.jpg", "..%2fsecret.jpg", "../../../../../etc/passwd",
              "/etc/passwd", "%2Fetc%2Fpasswd", "..%5Csecret.jpg", "..\\secret.jpg", "red%20circle%200.jpg%00.png",
              "./red%20circle%200.jpg", "2024//summer/blue%20square%203.jpg", "2024/summer/./blue%20square%203.jpg",
              "2024/summer/../../red%20circle%200.jpg", "",
              # \xNN escapes name only bytes 80-ff, written as the library shows them: never ., / or a control character
              "%5Cx2e%5Cx2e/secret.jpg", "..%5Cx2fsecret.jpg", "red%20circle%200.jpg%5Cx00", "red%20circle%200.jpg%5Cx0a",
              "Ferien%20%5Cxc3%5Cxa4/green%20circle%202.jpg", "Ferien%20%5CxC3%5CxA4/green%20circle%202.jpg", "%5Cxe", "%5Cxzz.jpg",
              "%5C%5Cxe9.jpg"]


@pytest.mark.parametrize("route", ["photo", "thumbnail"])
@pytest.mark.parametrize("target", TRAVERSALS)
def test_paths_out_of_the_library_are_refused(server_url, gallery, route, target):
    status, headers, body = raw_get(server_url, f"/api/library/{route}/{target}")
    assert status == 400, (target, status, body)
    assert headers["content-type"] == "application/json" and json.loads(body)["detail"]
    assert gallery.secret not in body and b"root:" not in body


@pytest.mark.parametrize("route", ["photo", "thumbnail"])
@pytest.mark.parametrize(("path", "status"), [("escape.jpg", 403), ("linked/secret.jpg", 403), ("gone.jpg", 404),
                                              ("not in the library.jpg", 404), (".captioner/library.sqlite", 404),
                                              ("linked", 404), ("2024", 404)])
def test_rows_outside_the_root_missing_files_and_strangers(server_url, gallery, route, path, status):
    answered, headers, body = raw_get(server_url, f"/api/library/{route}/{quote(path)}")
    assert answered == status, (path, answered, body)
    assert headers["content-type"] == "application/json" and json.loads(body)["detail"]
    assert gallery.secret not in body


def test_search_lists_refused_rows_but_never_serves_them(client, gallery):
    results = search_results(client, "purple triangle")
    assert sorted(result["path"] for result in results) == sorted(REFUSED_ROWS)
    for result in results:
        for url in (result["photo_url"], result["thumbnail_url"]):
            response = client.get(url)
            assert response.status_code in (403, 404) and gallery.secret not in response.content


def test_thumbnails_are_cached_once_per_size(client, gallery):
    result = next(result for result in search_results(client, every_caption_word(gallery), limit=100)
                  if result["path"] == "red square 1.jpg")
    with Library.open(gallery.library_file) as library:
        sha256 = library.get(b"red square 1.jpg").sha256
    cached = gallery.root / ".captioner" / "thumbnails" / f"{sha256}-200.jpg"
    assert not cached.exists()
    url = result["thumbnail_url"].replace("size=256", "size=200")
    first = client.get(url)
    assert first.status_code == 200 and cached.is_file() and cached.read_bytes() == first.content
    made = cached.stat().st_mtime_ns
    time.sleep(0.05)
    second = client.get(url)
    assert second.status_code == 200 and second.content == first.content
    assert cached.stat().st_mtime_ns == made  # served from the cache, not written again
    assert not list(cached.parent.glob(".*.tmp"))  # atomic writes leave no temporary files
    small = client.get(url.replace("size=200", "size=64"))
    with Image.open(io.BytesIO(small.content)) as image:
        assert max(image.size) == 64
    assert (cached.parent / f"{sha256}-64.jpg").is_file()


@pytest.mark.parametrize("size", ["0", "-1", "63", "513", "100000", "big", "1.5"])
def test_thumbnail_size_out_of_range_is_422(client, size):
    response = client.get(f"/api/library/thumbnail/{quote('red square 1.jpg')}", params={"size": size})
    assert response.status_code == 422 and "size" in response.json()["detail"]


def test_thumbnail_sizes_at_the_limits(client):
    for size, longest in ((64, 64), (512, 160)):
        response = client.get(f"/api/library/thumbnail/{quote('red square 1.jpg')}", params={"size": size})
        with Image.open(io.BytesIO(response.content)) as image:
            assert response.status_code == 200 and max(image.size) == longest


def test_concurrent_requests_share_the_library_safely(client, gallery):
    everything = search_results(client, every_caption_word(gallery), limit=100)
    urls = [f"/api/library/search?q={quote(word)}" for word in ("red", "blue circle", "green", "purple", "square")]
    urls += [result["thumbnail_url"].replace("size=256", "size=100") for result in everything if result["path"] in PHOTOS]
    urls += [result["photo_url"] for result in everything if result["path"] in PHOTOS]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda url: client.get(url).status_code, urls * 3))
    assert statuses == [200] * len(urls) * 3


# --- without a library, or with a bad one ------------------------------------------------------------------------
def test_a_server_without_a_library_answers_404(tiny_run):
    with BackgroundServer(create_app(Captioner.load(tiny_run))) as url, httpx.Client(base_url=url) as session:
        for path in ("/api/library", "/api/library/search?q=red", "/api/library/photo/red.jpg", "/api/library/thumbnail/red.jpg"):
            response = session.get(path)
            assert response.status_code == 404 and "--library" in response.json()["detail"], path
        assert session.get("/library").status_code == 200  # the page says there is none (library.js)
        assert session.get("/api/health").status_code == 200


def test_a_missing_or_foreign_library_is_refused_at_startup(tiny_captioner, tiny_run, tmp_path, capsys):
    foreign = tmp_path / "other.sqlite"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")
    for bad in (tmp_path / "missing.sqlite", foreign, tmp_path):
        with pytest.raises(LibraryError):
            create_app(tiny_captioner, library=bad)
    assert main(["serve", str(tiny_run), "--library", str(tmp_path / "missing.sqlite"), "--port", "1"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "no library here" in error and error.count("\n") == 1


# --- in a real browser -----------------------------------------------------------------------------------------
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: install it with `apt-get install -y chromium`")
def test_the_library_page_in_a_real_browser(server_url, client, gallery, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    expect = sync_api.expect
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page_errors: list[str] = []
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.goto(server_url)  # the main page links the library, since this server has one
            expect(page.locator("#library-link")).to_be_visible()
            page.locator("#library-link a").click()
            page.wait_for_url(f"{server_url}/library")
            expect(page.locator("#library-info")).to_contain_text(f"{len(PHOTOS) + len(REFUSED_ROWS)} photos")
            page.keyboard.press("Tab")  # the skip link, the review page's link, then the search box
            expect(page.locator(".skip-link")).to_be_focused()
            page.keyboard.press("Tab")
            expect(page.locator("#review-link")).to_be_focused()
            page.keyboard.press("Tab")
            expect(page.locator("#search-input")).to_be_focused()
            page.keyboard.type("purple")
            page.keyboard.press("Enter")
            items = page.locator("#library-results > li")
            expect(items).to_have_count(len(REFUSED_ROWS))
            for number in range(len(REFUSED_ROWS)):  # refused or gone files: said in words, not a broken image
                expect(items.nth(number)).to_have_attribute("data-thumbnail", "missing")
                expect(items.nth(number).locator(".no-thumbnail")).to_be_visible()
                expect(items.nth(number).locator("a.photo-link")).to_have_accessible_name(
                    "Full photo, no thumbnail: A purple triangle.")

            page.keyboard.press("Control+A")
            page.keyboard.type("red circle")
            page.keyboard.press("Enter")
            expected = search_results(client, "red circle")
            expect(items).to_have_count(len(expected))
            expect(page.locator("#library-status")).to_contain_text(f"{len(expected)} photo")
            for number, result in enumerate(expected):
                item = items.nth(number)
                sentence = as_sentence(result["caption"])
                expect(item).to_have_attribute("data-thumbnail", "loaded")
                thumbnail = item.locator("a.photo-link img.thumbnail")
                assert thumbnail.evaluate("image => image.naturalWidth") > 0
                expect(thumbnail).to_have_attribute("alt", sentence)
                expect(item.locator(".library-caption")).to_have_text(sentence)
                expect(item.locator("a.photo-link")).to_have_attribute("href", result["photo_url"])
                expect(item.locator("a.photo-link")).to_have_accessible_name(f"Full photo: {sentence}")
                confidence = item.locator(".photo-confidence")
                if result["confidence"] is None:  # the tiny run's encoder has no calibration
                    expect(confidence).to_be_hidden()
                else:
                    expect(confidence).to_have_text(f"Confidence {round(result['confidence'] * 100)}%")
                mark = item.locator(".review-mark")
                if result["needs_review"]:  # doubtful, no person has checked it: said in words
                    expect(mark).to_be_visible()
                    expect(mark).to_have_text("Needs review")
                    expect(item.locator(".doubt-note")).to_be_visible()
                    expect(item).to_have_attribute("data-review", "needs-review")
                else:
                    expect(mark).to_be_hidden()
                review = item.locator("a.review-photo-link")
                expect(review).to_have_accessible_name(f"Review this caption: {sentence}")
                expect(review).to_have_attribute("href", f"/library/review?{urlencode({'path': result['path']})}")
            assert any(result["path"] == DOUBTFUL for result in expected)
            assert page.url.endswith("/library?q=red+circle")  # the address keeps the search
            screenshot = tmp_path / "captioner-library.png"
            page.screenshot(path=str(screenshot), full_page=True)
            print(f"screenshot: {screenshot}")

            page.set_viewport_size({"width": 375, "height": 800})  # a phone: one column, no sideways scrolling
            assert page.evaluate("document.documentElement.scrollWidth") <= 375
            page.set_viewport_size({"width": 1200, "height": 900})
            page.keyboard.press("Tab")  # the search button, then the first result's link
            page.keyboard.press("Tab")
            link = items.first.locator("a.photo-link")
            expect(link).to_be_focused()
            assert not page_errors, page_errors
            with page.expect_response(lambda response: "/api/library/photo/" in response.url) as answer:
                page.keyboard.press("Enter")
            assert answer.value.status == 200 and answer.value.headers["content-type"] == "image/jpeg"
            assert answer.value.body() == (gallery.root / expected[0]["path"]).read_bytes()
        finally:
            browser.close()


def test_records_of_rows_the_web_cannot_address(tmp_path):
    from captioner.web.library import photo_record, thumbnail_folder

    # a name that is not UTF-8 is stored as \xNN text, and named so in its URLs (%5C is the backslash)
    record = photo_record(Photo(path="caf\\xe9.jpg", size=1, mtime_ns=1, caption="a cat", confidence=float("nan")))
    assert record["photo_url"] == "/api/library/photo/caf%5Cxe9.jpg" and record["confidence"] is None
    assert record["thumbnail_url"].startswith("/api/library/thumbnail/caf%5Cxe9.jpg?size=256&v=")
    # a name no URL can take back to its key gets no URLs rather than ones that 400
    for path in ("a\\b.jpg", "caf\\xc3\\xa9.jpg", "caf\\x41.jpg", "tab\t.jpg", "", "a//b.jpg"):
        record = photo_record(Photo(path=path, size=1, mtime_ns=1, caption="a cat"))
        assert record["photo_url"] is None and record["thumbnail_url"] is None, path
    assert photo_record(Photo(path="a b/ä#?.jpg", size=1, mtime_ns=7))["photo_url"] == "/api/library/photo/a%20b/%C3%A4%23%3F.jpg"
    # thumbnails always go in a .captioner folder, which the indexer never scans
    assert thumbnail_folder(tmp_path / ".captioner" / "library.sqlite") == tmp_path.resolve() / ".captioner" / "thumbnails"
    assert thumbnail_folder(tmp_path / "photos.sqlite") == tmp_path.resolve() / ".captioner" / "thumbnails"


def test_a_library_file_gone_after_startup_is_503_and_never_recreated(tmp_path):
    from captioner.web.errors import ApiError
    from captioner.web.library import ServedLibrary

    path = tmp_path / "photos" / ".captioner" / "library.sqlite"
    Library.open(path, create=True, root=tmp_path / "photos").close()
    served = ServedLibrary(path)
    with served.reading() as library:
        assert library.count() == 0
    served.close()
    path.rename(tmp_path / "moved.sqlite")
    with pytest.raises(ApiError) as refused, served.reading() as library:
        library.count()
    assert refused.value.status == 503 and not path.exists()


def test_library_keys_from_url_paths():
    from captioner.library.store import display_path
    from captioner.web.errors import ApiError
    from captioner.web.library import library_key

    for key in (b"caf\xe9.jpg", b"Ferien \xc3\xa4/\xff\xfe.jpg", "ä 🐕/狗.jpg".encode(), b"\xe9\xc3\xa9", b"a b/c#?.jpg"):
        assert library_key(display_path(key)) == key, key
    for path in ("caf\\xE9.jpg", "caf\\xc3\\xa9.jpg", "\\x41", "\\x7f", "a\\b", "\\x", "\\xe", "\\\\xe9", "\ud800.jpg", "../a",
                 "a/./b", "/a", "a/", "x\x00"):
        with pytest.raises(ApiError) as refused:
            library_key(path)
        assert refused.value.status == 400, path
