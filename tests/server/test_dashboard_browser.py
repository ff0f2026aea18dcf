"""The dashboard in a real browser: Debian's chromium, headless (--no-sandbox: CI runs as root), driven by
Selenium with the system chromedriver (no browser downloads). The page must render without console errors,
and after requests its sample count and plotted totals must grow. A screenshot is saved as an artifact in the
build directory (dashboard.png) for a person to look at.
"""
import os
import shutil
import time

import pytest
import requests

from sluice_server import MODEL, Server


def chrome():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    assert binary and driver, "chromium and chromium-driver are missing: ./setup.sh installs them"
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1366,900"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


@pytest.fixture(scope="module")
def srv():
    s = Server()
    yield s
    assert s.stop() == 0, s.stderr()


def wait_for(fn, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    return fn()


def test_dashboard_renders_and_updates(srv):
    d = chrome()
    try:
        d.set_page_load_timeout(30)
        d.get(srv.base + "/")
        samples = lambda: d.execute_script("return window.sluiceDashboard && window.sluiceDashboard.samples")
        assert wait_for(lambda: (samples() or 0) >= 2), "the page drew no samples"
        before = samples()
        gen = lambda: d.execute_script("return window.sluiceDashboard.last.gen")
        gen_before = gen()
        c = srv.client()
        for _ in range(4):
            c.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=16, extra_body={"ignore_eos": True})
        # the page polls every second: more samples, and the token total it plotted went up
        assert wait_for(lambda: samples() >= before + 2), "samples stopped growing"
        assert wait_for(lambda: gen() >= gen_before + 64), f"plotted generation total {gen()} (was {gen_before})"
        text = d.find_element("tag name", "body").text
        assert "sluice" in text.lower()
        out = os.path.join(os.environ.get("SLUICE_BUILD_DIR", "."), "dashboard.png")
        d.save_screenshot(out)
        assert os.path.getsize(out) > 10_000
        errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        d.quit()
    # the server itself saw the page's polls
    assert requests.get(srv.base + "/health", timeout=5).status_code == 200
