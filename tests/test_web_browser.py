"""End to end in a real browser: headless Chromium from Debian, driven by Playwright.

Upload a photo, see its caption, focus a word and see its heatmap, upload a broken file and see
the error while the first result stays; also by keyboard and on a 375 px wide screen.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from captioner.inference import Captioner
from captioner.web.app import BackgroundServer, create_app
from conftest import SHARED_FLICKR8K, draw_shape

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: install it with `apt-get install -y chromium`")


@pytest.fixture(scope="module")
def server_url(tiny_run):
    with BackgroundServer(create_app(Captioner.load(tiny_run))) as url:
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
    """How many pixels of the card's overlay canvas are drawn (not fully transparent)."""
    return card.locator("canvas.heatmap").evaluate(
        "canvas => { const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;"
        " let drawn = 0; for (let i = 3; i < data.length; i += 4) if (data[i] > 0) drawn++; return drawn; }")


def test_caption_heatmap_and_error_in_a_real_browser(browser, server_url, photos, tmp_path):
    expect = pytest.importorskip("playwright.sync_api").expect
    context = browser.new_context(viewport={"width": 1200, "height": 900}, permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.goto(server_url)
    page.wait_for_function("document.querySelector('#model-info').textContent.includes('efficientnet-lite0')")

    # keyboard: the file picker is reachable with Tab
    for _ in range(4):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "file-input":
            break
    assert page.evaluate("document.activeElement.id") == "file-input"

    page.set_input_files("#file-input", str(photos["photo"]))
    card = page.locator(".card[data-state='done']")
    card.wait_for(timeout=60_000)
    caption = card.locator(".caption").inner_text().strip()
    assert caption and card.locator(".word").count() == len(caption.split())
    assert card.locator("img.preview").get_attribute("alt").lower().rstrip(".") == caption  # alt text for the preview
    assert card.locator(".alternatives li").count() == 2  # the other beam candidates (n-best 3)
    expect(page.locator("#status")).to_contain_text(caption, ignore_case=True)  # announced in the live region

    assert heatmap_pixels(card) == 0
    word = card.locator(".word").first
    word.focus()
    page.wait_for_function("document.querySelector('canvas.heatmap').dataset.showing === 'true'")
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
    assert page.locator(".card[data-state='done']").count() == 1  # the earlier result stays
    assert page.locator(".card").first.locator(".filename").inner_text() == "broken.jpg"  # newest first

    card.locator(".word").first.focus()
    page.wait_for_function("document.querySelector('.card[data-state=done] canvas.heatmap').dataset.showing === 'true'")
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
