"""The browser page for real: Debian's headless Chromium, driven by Selenium, captures its
fake microphone (which plays the bundled sample) and streams it to `emomon serve`; the
page must show the sample's sentences as segments. Needs `chromium` and `chromium-driver`
(make system-deps); with CI set they must be there."""

from __future__ import annotations

import csv
import os
import shutil
import time
from pathlib import Path

import pytest
from support.data import REPO
from support.processes import Server

pytestmark = [pytest.mark.system, pytest.mark.weights]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def need_chromium() -> None:
    if not (CHROMIUM and DRIVER):
        if os.environ.get("CI"):
            pytest.fail("CI must provide Debian's chromium and chromium-driver for the browser test")
        pytest.skip("chromium and chromium-driver are not installed (apt install chromium chromium-driver)")


def pictures_script():
    """docs/make_pictures.py as a module: it opens Chromium the one way this project does."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_pictures", REPO / "docs" / "make_pictures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def browser(tmp_path: Path):
    need_chromium()
    driver = pictures_script().chromium(tmp_path / "profile")
    yield driver
    driver.quit()


def server_rows(path: Path) -> list[dict]:
    """What the server sent, as its own CSV log wrote it (one row per segment, flushed at once)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_page_is_a_live_dashboard_of_what_the_server_sent(browser, tmp_path: Path) -> None:
    """The fake microphone plays the bundled sample (six sentences, one speaker through six
    emotions) into the page; the server tracks speakers and logs every segment it sends."""
    from selenium.webdriver.common.by import By

    sent = tmp_path / "sent.csv"
    server = Server("--speakers", "--csv", str(sent))
    try:
        browser.set_window_size(1100, 1400)
        browser.get(f"http://127.0.0.1:{server.port}/")
        browser.find_element(By.ID, "start").click()
        deadline, seen, steady = time.monotonic() + 90, -1, 0.0
        while time.monotonic() < deadline:  # until six segments are in and nothing more comes for 3 s
            time.sleep(0.5)
            marks = len(browser.find_elements(By.CSS_SELECTOR, "#timeline g.seg:not(.interim)"))
            steady = steady + 0.5 if marks == seen else 0.0
            seen = marks
            if marks >= 6 and steady >= 3 and len(server_rows(sent)) == marks:
                break
        rows = server_rows(sent)
        status = browser.find_element(By.ID, "status").text
        assert len(rows) >= 6 and seen == len(rows), (status, seen, len(rows))
        assert status.startswith("listening (stream 1,") and "model default" in status
        # the bars: the shares of the last segment the server sent, in the model's order
        emotions = list(rows[0])[list(rows[0]).index("wall_time") + 1 : list(rows[0]).index("top_emotion")]
        bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar-row")
        assert [b.get_attribute("data-emotion") for b in bars] == emotions
        last = rows[-1]
        for b in bars:
            assert float(b.get_attribute("data-share")) == pytest.approx(float(last[b.get_attribute("data-emotion")]),
                                                                        abs=1e-4)  # fmt: skip
        top = browser.find_element(By.CSS_SELECTOR, "#bars .bar-row.top").get_attribute("data-emotion")
        assert top == last["top_emotion"]
        # the timeline: a mark per segment sent, where it was spoken; a lane per speaker
        marks = browser.find_elements(By.CSS_SELECTOR, "#timeline g.seg:not(.interim)")
        assert [int(m.get_attribute("data-segment")) for m in marks] == [int(r["segment"]) for r in rows]
        assert len(marks[0].find_elements(By.CSS_SELECTOR, "rect")) == len(emotions) + 1  # stacked shares, top
        lanes = browser.find_elements(By.CSS_SELECTOR, "#lanes .lane")
        assert sorted(lane.get_attribute("data-speaker") for lane in lanes) == sorted({r["speaker"] for r in rows})
        assert sum(len(lane.find_elements(By.CSS_SELECTOR, "rect.seg")) for lane in lanes) == len(rows)
        # the recent segments as before; the input level moved; the legend names every colour
        tops = [r.find_element(By.CSS_SELECTOR, ".top-emotion").text for r in
                browser.find_elements(By.CSS_SELECTOR, "#recent tr.segment")]  # fmt: skip
        assert tops == [r["top_emotion"] for r in reversed(rows)] and "anger" in tops  # its second sentence
        assert browser.find_element(By.ID, "level-db").text.endswith("dBFS")
        assert [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#legend span")] == emotions
        shot = tmp_path / "page.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 20_000
        if os.environ.get("EMOMON_TEST_ARTIFACTS"):  # CI keeps it with the test's output
            Path(os.environ["EMOMON_TEST_ARTIFACTS"]).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, Path(os.environ["EMOMON_TEST_ARTIFACTS"]) / "page.png")
        browser.find_element(By.ID, "stop").click()
    finally:
        server.stop()


def test_page_works_offline_in_dark_mode_and_on_a_phone_and_updates_interim_results_in_place(browser) -> None:
    """Nothing the page loads comes from another host; in dark mode its background is dark;
    an interim result is drawn, then replaced by its segment's final one (messages handed to
    the page's own handler, as the WebSocket would); at a phone's width nothing overflows."""
    from selenium.webdriver.common.by import By

    server = Server()
    try:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme",
                                                                              "value": "dark"}]})  # fmt: skip
        browser.get(f"http://127.0.0.1:{server.port}/")
        assert browser.find_element(By.ID, "start").is_displayed()
        hosts = browser.execute_script(
            "return performance.getEntriesByType('resource').map((e) => new URL(e.name).host)"
        )
        assert all(h == f"127.0.0.1:{server.port}" for h in hosts), hosts
        html = server.get("/")[1]
        assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
        rgb = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert sum(int(v) for v in rgb[rgb.index("(") + 1 : -1].split(",")[:3]) < 3 * 60, rgb
        shares = {"anger": 0.7, "calm": 0.2, "fear": 0.1}
        browser.execute_script(
            "onMessage({type: 'ready', stream: 1, sample_rate: 16000, model: 'm',"
            " emotions: ['anger', 'calm', 'fear']});"
            "onMessage({type: 'interim', segment: 0, start_s: 1, end_s: 3, shares: arguments[0], top_emotion: 'anger',"
            " status: 'ok'});", shares,
        )  # fmt: skip
        interim = browser.find_elements(By.CSS_SELECTOR, "#timeline g.seg")
        assert len(interim) == 1 and "interim" in interim[0].get_attribute("class")
        assert "interim" in browser.find_element(By.ID, "latest-label").text
        final = {"anger": 0.1, "calm": 0.6, "fear": 0.3}
        browser.execute_script(
            "onMessage({type: 'segment', segment: 0, start_s: 1, end_s: 4, shares: arguments[0], top_emotion: 'calm',"
            " latency_ms: 40, status: 'ok'});", final,
        )  # fmt: skip
        marks = browser.find_elements(By.CSS_SELECTOR, "#timeline g.seg")
        assert len(marks) == 1 and "interim" not in marks[0].get_attribute("class")
        bars = {b.get_attribute("data-emotion"): float(b.get_attribute("data-share"))
                for b in browser.find_elements(By.CSS_SELECTOR, "#bars .bar-row")}  # fmt: skip
        assert bars == final and len(browser.find_elements(By.CSS_SELECTOR, "#recent tr.segment")) == 1
        # a phone's screen: nothing wider than it but the table, which scrolls inside its own box
        browser.set_window_size(390, 844)
        inner = browser.execute_script("return document.documentElement.clientWidth")
        widest = browser.execute_script(
            "return Math.max(...[...document.querySelectorAll('#bars, #timeline, #lanes, .table-wrap')]"
            ".map((e) => e.getBoundingClientRect().right))"
        )
        assert browser.execute_script("return document.documentElement.scrollWidth") <= inner and widest <= inner
    finally:
        server.stop()


def test_a_device_rate_the_server_refuses_is_resampled_in_the_page(browser, tmp_path: Path) -> None:
    """A 96 kHz audio context (as a 96 kHz interface gives): the page's worklet brings it to
    16 kHz, the server takes it, and the sample's sentences come back as long as they are.
    (Where they start depends on when Chromium's fake device began its loop of the file.)"""
    from selenium.webdriver.common.by import By

    sent = tmp_path / "sent.csv"
    server = Server("--csv", str(sent))
    try:
        browser.get(f"http://127.0.0.1:{server.port}/?context_rate=96000")
        browser.find_element(By.ID, "start").click()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(server_rows(sent)) < 6:
            time.sleep(0.5)
        assert browser.execute_script("return ctx.sampleRate") == 96000
        status = browser.find_element(By.ID, "status").text
        rows = server_rows(sent)
    finally:
        server.stop()
    assert status.startswith("listening (stream 1, 16000 Hz"), status
    assert len(rows) >= 6 and all(r["status"] == "ok" for r in rows)
    lengths = [float(r["end_s"]) - float(r["start_s"]) for r in rows[1:]]  # the first may start mid-sentence
    assert all(1.2 <= d <= 2.8 for d in lengths), lengths  # the sample's sentences last 1.5-2.2 s: the rate is right
    assert "anger" in {r["top_emotion"] for r in rows}  # its angry sentence, heard as such


def test_readme_pictures_are_made_by_one_command(tmp_path: Path) -> None:
    """docs/make_pictures.py: the page with the sample's six segments, and emomon plot of it."""
    import subprocess
    import sys

    import matplotlib.image

    need_chromium()
    done = subprocess.run([sys.executable, "docs/make_pictures.py", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    page, plot = (matplotlib.image.imread(tmp_path / n) for n in ("page.png", "plot.png"))
    assert page.shape[1] == 1000 and page.shape[0] > 800, page.shape  # the window's width, the page's height
    assert plot.shape[1] > 1000 and plot.shape[0] > 300


def test_the_page_can_send_opus_from_mediarecorder(browser, tmp_path: Path) -> None:
    """With the Opus box ticked (?send=opus), the page streams Chromium's MediaRecorder
    chunks (WebM/Opus, 32 kb/s) instead of PCM; the server decodes them at 48 kHz and the
    sample's sentences come back as long as they are, its angry one heard as such."""
    from selenium.webdriver.common.by import By

    sent = tmp_path / "sent.csv"
    server = Server("--csv", str(sent))
    try:
        browser.get(f"http://127.0.0.1:{server.port}/?send=opus")
        assert browser.find_element(By.ID, "opus").is_selected()
        browser.find_element(By.ID, "start").click()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(server_rows(sent)) < 6:
            time.sleep(0.5)
        status = browser.find_element(By.ID, "status").text
        assert browser.execute_script("return recorder && recorder.mimeType").startswith("audio/webm")
        browser.find_element(By.ID, "stop").click()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "ended" not in browser.find_element(By.ID, "status").text:
            time.sleep(0.2)  # the recorder's last chunk, then the end: the server closes with 1000
        ended = browser.find_element(By.ID, "status").text
        rows = server_rows(sent)
        _, metrics = server.get("/metrics")
    finally:
        server.stop()
    assert status.startswith("listening (stream 1, 48000 Hz"), status
    assert ended == "ended", ended
    assert len(rows) >= 6 and all(r["status"] == "ok" for r in rows)
    lengths = [float(r["end_s"]) - float(r["start_s"]) for r in rows[1:-1]]  # the first and last may be cut
    assert all(1.2 <= d <= 2.8 for d in lengths), lengths
    assert "anger" in {r["top_emotion"] for r in rows}
    assert 'emomon_refused_total{reason="undecodable"}' not in metrics
