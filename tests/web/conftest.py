"""Fixtures of the web tests: Debian's headless Chromium driven through chromedriver (Selenium)."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from support.tools import require

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")


def available() -> bool:
    return os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)


class Browser:
    """One chromium with a fresh profile; ``quit`` stops driver and browser and removes the profile."""

    def __init__(self, width: int = 1280, height: int = 900) -> None:
        self.profile = tempfile.mkdtemp(prefix="shoal-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile}")
        options.add_argument(f"--window-size={width},{height}")
        # An explicit driver path: Selenium Manager is never asked to download anything.
        self.service = Service(executable_path=CHROMEDRIVER, log_output=os.path.join(self.profile, "driver.log"))
        self.driver = webdriver.Chrome(service=self.service, options=options)
        self.driver.set_page_load_timeout(30)

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser_factory():
    """Start browsers on demand; every one is quit (driver and chromium) at teardown."""
    require("chromium", CHROMIUM)
    require("chromedriver", CHROMEDRIVER)
    started = []

    def start(width: int = 1280, height: int = 900) -> Browser:
        browser = Browser(width, height)
        started.append(browser)
        return browser

    yield start
    for browser in started:
        browser.quit()


@pytest.fixture
def artifacts_dir() -> str:
    """tests/artifacts/ (gitignored): screenshots a person can look at after the run."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "artifacts")
    os.makedirs(path, exist_ok=True)
    return path
