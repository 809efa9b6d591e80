"""The page in a real browser: Debian's chromium, headless, driven by Selenium through the system chromedriver.

A uvicorn server runs in a thread on a free 127.0.0.1 port. Skips when chromium, chromedriver or selenium is missing
(``.ci/run`` installs them). Screenshots go to the test's tmp folder and, when ``LESIONSEG_ARTIFACTS`` names a folder,
there too.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
import uuid
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("selenium")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from lesionseg.serve import create_app  # noqa: E402

from .conftest import blob_image, encode, live_server  # noqa: E402

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip(
        "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )


def _multipart(path: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as res:
        return json.loads(res.read())


@pytest.fixture(scope="module")
def server_url(predictor):
    with live_server(create_app({"skin": predictor}, threads=1, queue_size=4)) as (host, port):
        yield f"http://{host}:{port}"


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,1000")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture
def shoot(tmp_path):
    """Save a screenshot into the tmp folder and into $LESIONSEG_ARTIFACTS when set."""

    def save(driver, name: str) -> Path:
        path = tmp_path / name
        assert driver.save_screenshot(str(path)), "screenshot failed"
        artifacts = os.environ.get("LESIONSEG_ARTIFACTS")
        if artifacts:
            Path(artifacts).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(artifacts) / name)
        return path

    return save


def _open_page(driver, url: str) -> None:
    driver.get(url)
    WebDriverWait(driver, 30).until(
        lambda d: (
            d.execute_script("return [...document.querySelectorAll('#model option')].map(o => o.value)") == ["skin"]
        )
    )


def _upload(driver, path: Path) -> None:
    driver.find_element(By.ID, "file").send_keys(str(path))


def _wait_ready(driver, timeout: float = 90) -> None:
    def done(d):
        if d.find_element(By.ID, "error").is_displayed():
            raise AssertionError(f"the page shows an error: {d.find_element(By.ID, 'error').text}")
        return d.find_element(By.ID, "viewer").get_attribute("data-state") == "ready"

    WebDriverWait(driver, timeout).until(done)


def _overlay_pixels(driver) -> int:
    return driver.execute_script(
        "const c = document.getElementById('overlay-canvas');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n;"
    )


def _set_range(driver, element_id: str, value: float) -> None:
    driver.execute_script(
        "const el = document.getElementById(arguments[0]); el.value = arguments[1];"
        "el.dispatchEvent(new Event('input', {bubbles: true}));",
        element_id,
        str(value),
    )


def _area_shown(driver) -> tuple[float, str]:
    cell = driver.find_element(By.ID, "m-area")
    return float(cell.get_attribute("data-value")), cell.text


def test_page_segments_a_ph2_image_and_shows_the_api_area(server_url, browser, ph2_image, shoot):
    _open_page(browser, server_url)
    _upload(browser, ph2_image)
    _wait_ready(browser)
    shot = shoot(browser, "serve_page.png")
    assert shot.stat().st_size > 10_000

    body, ctype = _multipart(ph2_image)
    request = urllib.request.Request(f"{server_url}/api/segment", data=body, headers={"Content-Type": ctype})
    with urllib.request.urlopen(request, timeout=60) as res:
        api = json.loads(res.read())
    area, text = _area_shown(browser)
    assert area == api["measurements"]["area"]
    assert text.replace(",", "") == f"{api['measurements']['area']:.0f}"
    # The overlay paints exactly the lesion's pixels (fill and outline): the mask the API measured.
    assert _overlay_pixels(browser) == api["measurements"]["area"]
    caption = browser.find_element(By.ID, "caption").text
    assert ph2_image.name in caption and f"{api['image']['width']} × {api['image']['height']}" in caption
    # What the model says about its own mask, in words, as the API says it.
    trust = browser.find_element(By.ID, "trust")
    if api["trust"]["predicted_dice"] is not None:
        assert f"Estimated Dice of the mask: {100 * api['trust']['predicted_dice']:.0f} %" in trust.text
    assert ("unlike the images this model was trained on" in trust.text) == bool(api["trust"]["out_of_distribution"])

    # The threshold slider re-cuts the probability map in the page: no request reaches the server.
    served = _get_json(f"{server_url}/healthz")["served"]
    _set_range(browser, "threshold", 0.2)
    low, low_text = _area_shown(browser)
    _set_range(browser, "threshold", 0.8)
    high, _ = _area_shown(browser)
    assert low_text.startswith("≈") and low >= high
    assert browser.find_element(By.ID, "remeasure").is_displayed()
    assert _get_json(f"{server_url}/healthz")["served"] == served
    _set_range(browser, "threshold", api["threshold"])
    assert _area_shown(browser)[0] == api["measurements"]["area"]

    # Opacity 0 leaves only the outline, a band inside the lesion.
    _set_range(browser, "opacity", 0)
    outline = _overlay_pixels(browser)
    assert 0 < outline < api["measurements"]["area"]
    _set_range(browser, "opacity", 45)


def test_page_explains_a_refused_file(server_url, browser, tmp_path, shoot):
    _open_page(browser, server_url)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG at all" * 10)
    _upload(browser, broken)
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "error").is_displayed())
    message = browser.find_element(By.ID, "error").text
    assert "broken.png" in message and "not a readable image" in message
    shoot(browser, "serve_refused.png")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    _upload(browser, notes)
    WebDriverWait(browser, 10).until(lambda d: "notes.txt" in d.find_element(By.ID, "error").text)
    assert "only image files" in browser.find_element(By.ID, "error").text
    assert _get_json(f"{server_url}/healthz")["status"] == "ok"


def test_a_refused_file_clears_the_previous_result(server_url, browser, tmp_path, shoot):
    _open_page(browser, server_url)
    good = tmp_path / "lesion.png"
    good.write_bytes(encode(blob_image((120, 160), seed=3)[0]))
    _upload(browser, good)
    _wait_ready(browser)
    assert browser.find_element(By.ID, "m-area").get_attribute("data-value")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG at all" * 10)
    _upload(browser, broken)
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "error").is_displayed())
    shoot(browser, "serve_refused_after_result.png")
    # Nothing of lesion.png may stay under the message about broken.png: image, mask, table, caption, downloads.
    assert browser.find_element(By.ID, "viewer").get_attribute("data-state") == "empty"
    assert not browser.find_element(By.ID, "image-canvas").is_displayed()
    assert not browser.find_elements(By.ID, "m-area")
    assert browser.find_element(By.ID, "measurements").find_element(By.CSS_SELECTOR, "tbody").text == "No image yet."
    assert browser.find_element(By.ID, "caption").text == "" and browser.find_element(By.ID, "timings").text == ""
    assert not browser.find_element(By.ID, "download-mask").is_enabled()
    assert not browser.find_element(By.ID, "download-json").is_enabled()
    assert not browser.find_element(By.ID, "threshold").is_enabled()
    # The same after a file the page refuses itself, without asking the server.
    _upload(browser, good)
    _wait_ready(browser)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    _upload(browser, notes)
    WebDriverWait(browser, 10).until(lambda d: "notes.txt" in d.find_element(By.ID, "error").text)
    assert browser.find_element(By.ID, "viewer").get_attribute("data-state") == "empty"
    assert not browser.find_elements(By.ID, "m-area")


def test_page_fits_a_phone_width(server_url, browser, ph2_image, shoot):
    browser.set_window_size(390, 844)
    try:
        _open_page(browser, server_url)
        _upload(browser, ph2_image)
        _wait_ready(browser)
        inner = browser.execute_script("return window.innerWidth")
        assert browser.execute_script("return document.documentElement.scrollWidth") <= inner
        canvas = browser.find_element(By.ID, "image-canvas").rect
        assert 0 < canvas["width"] <= inner
        shoot(browser, "serve_phone.png")
    finally:
        browser.set_window_size(1280, 1000)
