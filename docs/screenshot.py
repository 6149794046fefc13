"""Draw docs/web-page.png: the web page serving RUN, with one photo captioned and a word's heatmap shown.

    python docs/screenshot.py runs/default ../shared/flickr8k/images/1107246521_d16a476380.jpg --word 2

Needs Debian's chromium (the browser test's set-up); the server is `captioner serve`, started and stopped here.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"error: the server exited with {server.returncode}")
        try:
            urllib.request.urlopen(f"{url}/api/health", timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"error: the server at {url} did not start within {timeout:g} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("photo")
    parser.add_argument("--word", type=int, default=1, help="which word's heatmap to show (0 = the first)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "web-page.png"))
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "captioner.cli", "serve", args.run, "--port", str(port)])
    try:
        wait_until_up(url, server)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1000, "height": 760})
            page.goto(url)
            page.set_input_files("#file-input", args.photo)
            card = page.locator(".card[data-state='done']")
            card.wait_for(timeout=120_000)
            card.locator(".word").nth(args.word).focus()
            expect(card.locator("canvas.heatmap")).to_have_attribute("data-showing", "true")
            page.screenshot(path=args.out, full_page=True)
            browser.close()
        print(f"wrote {args.out}")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
