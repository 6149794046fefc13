"""End to end in a real browser: headless Chromium from Debian, driven by Playwright.

Upload a photo, see its caption, focus a word and see its heatmap, upload a broken file and see
the error while the first result stays; also by keyboard and on a 375 px wide screen.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from captioner.inference import Captioner
from captioner.web.app import create_app

from conftest import SHARED_FLICKR8K, draw_shape, write_calibration
from servers import BackgroundServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason=f"{CHROMIUM} not found: install it with `apt-get install -y chromium`")


# the page's own fallback is 3 beams and 3 candidates; the run decodes like the best preset (length penalty,
# consensus reranking, so a candidate's score is not its log-probability) with a beam of its own
RUN_DECODE = {"beam_size": 2, "length_penalty": 1.0, "rerank_neighbours": 4, "rerank_weight": 2.0}


@pytest.fixture(scope="module")
def page_run(tiny_run, tmp_path_factory) -> Path:
    """A copy of the tiny run whose config.json decodes with RUN_DECODE."""
    run = tmp_path_factory.mktemp("page") / "tiny"
    shutil.copytree(tiny_run, run)
    info = json.loads((run / "config.json").read_text())
    info["config"]["decode"].update(RUN_DECODE)
    (run / "config.json").write_text(json.dumps(info))
    return run


@pytest.fixture(scope="module")
def server_url(page_run):
    with BackgroundServer(create_app(Captioner.load(page_run))) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture()
def photos(tmp_path) -> dict[str, Path]:
    """A real Flickr8k test photo where the data set is here, else a generated one."""
    test_list = SHARED_FLICKR8K / "Flickr_8k.testImages.txt"
    if test_list.is_file():
        photo = SHARED_FLICKR8K / "images" / test_list.read_text().split()[0]
    else:
        photo = tmp_path / "red circle.jpg"
        draw_shape("red", "circle", 3).resize((320, 240)).save(photo, quality=95)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"these bytes are not a JPEG")
    return {"photo": photo, "broken": broken}


def heatmap_pixels(card) -> int:
    """How many pixels of the card's overlay canvas are drawn (not fully transparent).

    A one-shot `evaluate` works under the page's CSP (no 'unsafe-eval'): Chromium lets DevTools evaluate code
    from strings. What it blocks is Playwright re-evaluating a string later, from the page's own timers, as
    `wait_for_function` does while it polls; so every wait here is a locator assertion (`expect`) instead.
    """
    return card.locator("canvas.heatmap").evaluate(
        "canvas => { const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;"
        " let drawn = 0; for (let i = 3; i < data.length; i += 4) if (data[i] > 0) drawn++; return drawn; }")


def shown_score(candidate: dict) -> str:
    """How the page labels a candidate: the score it is ranked by, then its log-probability."""
    return f"score {candidate['score']:.2f} · log p {candidate['log_probability']:.2f}"


def test_caption_heatmap_and_error_in_a_real_browser(browser, server_url, photos, tmp_path):
    expect = pytest.importorskip("playwright.sync_api").expect
    context = browser.new_context(viewport={"width": 1200, "height": 900}, permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.goto(server_url)
    expect(page.locator("#model-info")).to_contain_text("efficientnet-lite0")
    # the options start at the run's own beam size, and the candidates shown cannot exceed it
    expect(page.locator("#beam-size")).to_have_value(str(RUN_DECODE["beam_size"]))
    expect(page.locator("#n-best")).to_have_value(str(RUN_DECODE["beam_size"]))

    # keyboard: the file picker is reachable with Tab
    file_input = page.locator("#file-input")
    for _ in range(4):
        page.keyboard.press("Tab")
        if page.locator("#file-input:focus").count():
            break
    expect(file_input).to_be_focused()

    with page.expect_response(lambda response: response.url.endswith("/api/caption")) as answer:
        page.set_input_files("#file-input", str(photos["photo"]))
    result = answer.value.json()
    assert (result["beam_size"], result["n_best"]) == (RUN_DECODE["beam_size"], RUN_DECODE["beam_size"])
    card = page.locator(".card[data-state='done']")
    card.wait_for(timeout=60_000)
    caption = card.locator(".caption").inner_text().strip()
    assert caption and caption == result["caption"] and card.locator(".word").count() == len(caption.split())
    assert card.locator("img.preview").get_attribute("alt").lower().rstrip(".") == caption  # alt text for the preview
    expect(card.locator(".alternatives li")).to_have_count(RUN_DECODE["beam_size"] - 1)  # the other beam candidates
    expect(page.locator("#status")).to_contain_text(caption, ignore_case=True)  # announced in the live region

    # each candidate shows the score the list is ranked by (here not its log-probability), best first
    candidates = [result, *result["alternatives"]]
    assert any(candidate["score"] != candidate["log_probability"] for candidate in candidates)
    expect(card.locator(".actions .score")).to_have_text(shown_score(result))
    expect(card.locator(".alternatives li .score")).to_have_text([shown_score(other) for other in result["alternatives"]])
    labels = [card.locator(".actions .score").inner_text(), *card.locator(".alternatives li .score").all_inner_texts()]
    shown = [float(label.split()[1]) for label in labels]  # "score -4.21 · log p -6.00"
    assert shown == sorted(shown, reverse=True)

    assert heatmap_pixels(card) == 0
    word = card.locator(".word").first
    word.focus()
    expect(card.locator("canvas.heatmap")).to_have_attribute("data-showing", "true")
    assert heatmap_pixels(card) > 1000
    assert card.locator(".where").inner_text().startswith(f"“{word.inner_text()}”: the model looked ")
    page.keyboard.press("ArrowRight")  # arrow keys walk along the words
    expect(card.locator(".word").nth(1)).to_have_class("word active")
    card.locator(".word").last.hover()  # the mouse shows another word's map
    expect(card.locator(".word").last).to_have_class("word active")
    page.mouse.move(0, 0)  # leaving it returns to the focused word
    expect(card.locator(".word").nth(1)).to_have_class("word active")
    assert heatmap_pixels(card) > 1000

    page.set_input_files("#file-input", str(photos["broken"]))
    error = page.locator(".card[data-state='error'] .error")
    error.wait_for(timeout=30_000)
    assert "broken.jpg: not an image file" in error.inner_text()
    expect(page.locator("#status")).to_contain_text("Rejected. broken.jpg: not an image file")
    expect(page.locator(".card[data-state='done']")).to_have_count(1)  # the earlier result stays
    expect(page.locator(".card").first.locator(".filename")).to_have_text("broken.jpg")  # newest first

    card.locator(".word").first.focus()
    expect(card.locator("canvas.heatmap")).to_have_attribute("data-showing", "true")
    screenshot = tmp_path / "captioner-page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"screenshot: {screenshot}")
    card.locator("button.copy").click()
    alt_text = caption[0].upper() + caption[1:] + "."
    expect(page.locator("#status")).to_have_text(f"Copied alt text: {alt_text}")
    assert page.evaluate("navigator.clipboard.readText()") == alt_text
    assert not page_errors, page_errors
    context.close()


def test_page_fits_a_narrow_phone_screen(browser, server_url, photos, tmp_path):
    page = browser.new_page(viewport={"width": 375, "height": 800}, device_scale_factor=2)
    page.goto(server_url)
    page.set_input_files("#file-input", [str(photos["photo"]), str(photos["broken"])])
    page.locator(".card[data-state='done']").wait_for(timeout=60_000)
    page.locator(".card[data-state='error']").wait_for(timeout=30_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scrolling
    preview = page.locator(".card[data-state='done'] img.preview").bounding_box()
    assert preview["width"] > 250  # the photo uses the screen width
    screenshot = tmp_path / "captioner-phone.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"screenshot: {screenshot}")
    page.close()


def test_a_doubtful_caption_is_marked_in_words_and_the_fallback_has_no_score(browser, page_run, photos, tmp_path):
    expect = pytest.importorskip("playwright.sync_api").expect
    run = tmp_path / "doubtful"
    shutil.copytree(page_run, run)
    write_calibration(run, subject=0.0, bias=-3.0)  # every caption conflicts with the classifier and is doubtful
    with BackgroundServer(create_app(Captioner.load(run))) as url:
        page = browser.new_page()
        page_errors: list[str] = []
        page.on("pageerror", lambda error: page_errors.append(str(error)))
        page.goto(url)
        with page.expect_response(lambda response: response.url.endswith("/api/caption")) as answer:
            page.set_input_files("#file-input", str(photos["photo"]))
        result = answer.value.json()
        card = page.locator(".card[data-state='done']")
        card.wait_for(timeout=60_000)
        assert result["source"] == "fallback" and result["doubtful"]
        expect(card).to_have_attribute("data-doubtful", "true")
        expect(card.locator(".confidence")).to_be_visible()
        expect(card.locator(".confidence")).to_contain_text(f"Doubtful: confidence {round(result['confidence'] * 100)}%")
        expect(card.locator(".confidence")).to_contain_text("says less")
        expect(card.locator(".caption")).to_have_text(result["caption"])
        expect(card.locator(".actions .score")).to_have_text("built from what the encoder recognised")
        expect(card.locator(".where")).to_contain_text("no attention map")
        expect(page.locator("#status")).to_contain_text("Doubtful caption")  # the live region says it to screen readers
        # the decoder's own candidates are still there to pick from, with their scores
        expect(card.locator(".alternatives li .score").first).to_contain_text("score ")
        page.close()
    assert page_errors == []
