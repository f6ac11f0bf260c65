"""Headless Chromium driven by selenium, for tests of the web page.

Debian's ``chromium`` and ``chromium-driver`` are used as installed (scripts/test
installs them): selenium is given both paths, so it never tries to download a browser
or a driver. The flags let Chromium run as root on a machine with no network beyond
loopback: without the background-networking ones it keeps dialling out.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--window-size=1440,1400")


def _need(tool: str, package: str) -> str:
    found = shutil.which(tool)
    if found is None:
        pytest.skip(f"{tool} is not installed: it comes with Debian's '{package}' package, "
                    "which scripts/test installs (as root, with apt-get)")
    return found


@contextmanager
def chromium(tmp_path: Path, *flags: str) -> Iterator[object]:
    """A selenium WebDriver on a fresh headless Chromium profile under ``tmp_path``;
    ``flags`` are added to ``CHROMIUM_FLAGS``."""
    browser_binary = _need("chromium", "chromium")
    driver_binary = _need("chromedriver", "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = browser_binary
    for flag in (*CHROMIUM_FLAGS, *flags):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=driver_binary,
                      log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()
