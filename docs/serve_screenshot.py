"""Screenshot of the ``lesionseg serve`` page with one image segmented (headless chromium through Selenium).

    lesionseg serve --model skin --port 8000 &
    python docs/serve_screenshot.py --url http://127.0.0.1:8000 --image IMAGE --out docs/serve.png

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("docs/serve.png"))
    p.add_argument("--width", type=int, default=1280)
    args = p.parse_args()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={args.width},900")
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(args.url)
        WebDriverWait(driver, 30).until(
            lambda d: d.execute_script("return document.querySelector('#model option')?.value")
        )
        driver.find_element(By.ID, "file").send_keys(str(args.image.resolve()))
        WebDriverWait(driver, 120).until(
            lambda d: (
                d.find_element(By.ID, "viewer").get_attribute("data-state") == "ready"
                or d.find_element(By.ID, "error").is_displayed()
            )
        )
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(args.width, height + 120)  # the window's own frame takes some of it in headless mode
        inner = driver.execute_script("return window.innerHeight")
        driver.set_window_size(args.width, height + (height + 120 - inner))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
        print(f"wrote {args.out}")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
