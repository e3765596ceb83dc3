"""The browser page for real: Debian's headless Chromium, driven by Selenium, captures its
fake microphone (which plays the bundled sample) and streams it to `emomon serve`; the
page must show the sample's sentences as segments. Needs `chromium` and `chromium-driver`
(make system-deps); with CI set they must be there."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import SAMPLE, Server

pytestmark = [pytest.mark.system, pytest.mark.weights]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture()
def browser(tmp_path: Path):
    if not (CHROMIUM and DRIVER):
        if os.environ.get("CI"):
            pytest.fail("CI must provide Debian's chromium and chromium-driver for the browser test")
        pytest.skip("chromium and chromium-driver are not installed (apt install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={SAMPLE}%noloop",
        "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={tmp_path / 'profile'}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))  # the driver on disk, nothing fetched
    yield driver
    driver.quit()


def test_page_streams_the_microphone_and_shows_the_segments(browser) -> None:
    from selenium.webdriver.common.by import By

    server = Server()
    try:
        browser.get(f"http://127.0.0.1:{server.port}/")
        browser.find_element(By.ID, "start").click()
        deadline = time.monotonic() + 60
        rows = []
        while time.monotonic() < deadline and len(rows) < 5:
            time.sleep(0.5)
            rows = browser.find_elements(By.CSS_SELECTOR, "#recent tr.segment")
        status = browser.find_element(By.ID, "status").text
        tops = [r.find_element(By.CSS_SELECTOR, ".top-emotion").text for r in rows]
        cells = [r.text for r in rows]
        assert len(rows) >= 5, (status, cells)  # the sample's six sentences, 3 s apart
        assert status.startswith("listening (stream 1,") and "model default" in status
        assert all(c.endswith("ok") for c in cells) and all(t for t in tops)
        assert "anger" in tops  # its second sentence is angry (share 0.92 in replay)
        bars = browser.find_elements(By.CSS_SELECTOR, "#shares tr")
        assert len(bars) == 9  # the latest shares, one row per emotion
        browser.find_element(By.ID, "stop").click()
    finally:
        server.stop()
