"""README's two pictures, made from the bundled sample with the shipped default model, so that
they stay true to the code:

- docs/pictures/page.png: the page `emomon serve` gives a browser, in Debian's headless
  Chromium whose fake microphone plays the sample, once its six sentences are in;
- docs/pictures/plot.png: `emomon plot` of `emomon replay --sample --csv`.

    python docs/make_pictures.py              # both, into docs/pictures
    python docs/make_pictures.py --out DIR    # elsewhere

Needs chromium, chromium-driver and selenium (make system-deps, emomon[serve]) and
matplotlib; everything runs on this machine (the server on a free loopback port).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "streamer" / "samples" / "emodb_speaker11.wav"
CLI = [sys.executable, "-m", "emomon.cli"]
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={SAMPLE}%noloop",
    "--autoplay-policy=no-user-gesture-required", "--hide-scrollbars",
)  # fmt: skip


def plot_picture(out: Path, work: Path) -> None:
    subprocess.run([*CLI, "replay", str(SAMPLE), "--speed", "0", "--no-dashboard", "--csv", str(work / "s.csv")],
                   check=True, capture_output=True, cwd=work)  # fmt: skip
    subprocess.run([*CLI, "plot", str(work / "s.csv"), "-o", str(out), "--title", "emodb_speaker11.wav (bundled)"],
                   check=True, capture_output=True, cwd=work)  # fmt: skip


def chromium(profile: Path):
    """Debian's headless Chromium under Selenium, its fake microphone playing the sample (the
    browser tests open theirs here too): the browser and driver on disk, nothing fetched,
    nothing phoning home."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


def page_picture(out: Path, work: Path, segments: int = 6) -> None:
    from selenium.webdriver.common.by import By

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([*CLI, "serve", "--port", str(port)], cwd=work, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    driver = None
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"emomon serve did not start: {server.stderr.read()}") from None
                time.sleep(0.2)
        driver = chromium(work / "profile")
        driver.set_window_size(1000, 1240)
        driver.get(f"http://127.0.0.1:{port}/")
        driver.find_element(By.ID, "start").click()
        deadline = time.monotonic() + 90
        while len(driver.find_elements(By.CSS_SELECTOR, "#recent tr.segment")) < segments:
            if time.monotonic() > deadline:
                raise SystemExit("the page did not show the sample's six segments within 90 s")
            time.sleep(0.5)
        time.sleep(1.0)  # the bars' transition
        driver.save_screenshot(str(out))
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "pictures", help="folder for page.png and plot.png")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        plot_picture(args.out.resolve() / "plot.png", Path(tmp))
        page_picture(args.out.resolve() / "page.png", Path(tmp))
    print(f"{args.out / 'page.png'}\n{args.out / 'plot.png'}")


if __name__ == "__main__":
    main()
