"""Debian's headless Chromium driven by selenium (the test extra), for tests, benchmarks and screenshots.

The driver is /usr/bin/chromedriver, named explicitly so that Selenium Manager never downloads a browser
or a driver; the flags keep Chromium off the network (no background services, no QUIC, no updates).
"""
from __future__ import annotations

from pathlib import Path

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--force-device-scale-factor=1", "--hide-scrollbars")


def missing() -> str | None:
    """Why the browser cannot start here (None when it can)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} is absent (Debian: apt-get install -y chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


# WebGPU without a GPU: Chromium's software Vulkan (SwiftShader) as the adapter. Slow, but the same API path.
SOFTWARE_WEBGPU = ("--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-vulkan=swiftshader",
                   "--use-webgpu-adapter=swiftshader", "--use-angle=swiftshader", "--enable-unsafe-swiftshader")


def headless_chromium(profile: Path, width: int = 1100, height: int = 900, network_log: bool = False,
                      fake_camera: bool = False, software_webgpu: bool = False):
    """A selenium WebDriver for a fresh headless Chromium using the empty folder ``profile``.
    ``fake_camera``: getUserMedia gets Chromium's test pattern, allowed without asking.
    ``software_webgpu``: a WebGPU adapter on the CPU (SwiftShader) instead of no GPU at all."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    flags = [f for f in FLAGS if f != "--disable-gpu"] + list(SOFTWARE_WEBGPU) if software_webgpu else list(FLAGS)
    for flag in (*flags, f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    if fake_camera:
        options.add_argument("--use-fake-device-for-media-stream")
        options.add_argument("--use-fake-ui-for-media-stream")
    if network_log:  # every request the page makes, read back with driver.get_log("performance")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(600)
    return driver


def open_page(driver, url: str) -> dict:
    """Load a p2p web page and wait until its model runs; the page's info (execution provider, threads, ...).
    The page's own loop is paused: the caller drives the model through ``window.p2pTest``."""
    driver.get(url)
    info = driver.execute_script("return p2pTest.ready")
    driver.execute_script("p2pTest.pause(true)")
    return info
