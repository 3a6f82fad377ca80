"""A page looked at as a person would: Debian's Chromium, headless, driven by Selenium through
Debian's chromedriver (both from apt: `.ci/run` installs them). Selenium is told where the driver
is, so it never tries to download one.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "var" / "test-artifacts"   # screenshots the tests keep (var/ is not committed)


@dataclass
class PageLook:
    title: str
    text: str
    images: int
    broken_images: list[str]          # alt text of images whose naturalWidth is 0
    console_errors: list[str]
    screenshot: Path


def browser_binaries() -> tuple[str, str]:
    """(chromium, chromedriver), or skip the test saying how to install them."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("the report is checked in a real browser: apt-get install chromium chromium-driver "
                    "(.ci/run does this)")
    return chromium, driver


def look_at(page: Path, screenshot_name: str, width: int = 1280) -> PageLook:
    """Open ``page`` (a local file) in headless Chromium, wait for it to load, and report what a person
    would see: every image's natural width, console errors, the text; a full-page screenshot is kept
    under var/test-artifacts/."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={width},1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.get(page.resolve().as_uri())
        driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "Promise.all([...document.images].map(i => i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; })))"
            ".then(() => done());")
        images = driver.execute_script(
            "return [...document.images].map(i => [i.alt, i.naturalWidth, i.complete]);")
        height = driver.execute_script("return document.documentElement.scrollHeight;")
        driver.set_window_size(width, min(int(height) + 100, 16000))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / screenshot_name
        driver.save_screenshot(str(shot))
        errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        return PageLook(driver.title, driver.find_element("tag name", "body").text, len(images),
                        [alt for alt, natural, _ in images if not natural], errors, shot)
    finally:
        driver.quit()
