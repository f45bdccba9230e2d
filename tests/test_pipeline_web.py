"""The web page in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium)
against a real `eidetic serve`: load, live update, query, open an episode, forget it."""

from __future__ import annotations

import os
import shutil
import tempfile

import httpx
import numpy as np
import pytest

from memory.store import EpisodeStore
from memory.types import SoundRecord
from tests.conftest import IN_CI
from tests.test_pipeline_serve import build_store, make_episode, start, stop

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1000"]  # fmt: skip


def need_browser() -> tuple[str, str]:
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        browser = None
    if not (browser and driver):
        msg = "needs chromium, chromium-driver (make sysdeps) and selenium (pip install -e '.[test]')"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return browser, driver


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = need_browser()
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager never downloads anything
    profile = tempfile.mkdtemp(prefix="eidetic-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def test_page_load_query_open_forget(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    root = build_store(tmp_path / "store")
    proc, base = start(root)
    wait = WebDriverWait(browser, 20)
    try:
        browser.get(base + "/")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#timeline .ep")) == 2)
        assert "demo.mp4: 2" in browser.find_element(By.ID, "sources").text
        assert "object" in browser.find_element(By.ID, "objects").text
        # an object's timeline: the episodes it was seen in, newest first
        browser.find_element(By.CSS_SELECTOR, '#objects button[data-object="object"]').click()
        wait.until(lambda d: [c.get_attribute("data-episode") for c in
                              d.find_elements(By.CSS_SELECTOR, "#object-timeline .ep")] == ["2", "1"])  # fmt: skip
        # a new episode written by another process appears without a reload (server-sent events)
        with EpisodeStore(root) as st:
            st.add(make_episode("can_opening", 30.0), [np.full((40, 60, 3), 120, np.uint8)])
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#timeline .ep[data-episode="3"]'))
        # ask
        box = browser.find_element(By.ID, "q")
        box.send_keys("when did the glass break?")
        browser.find_element(By.ID, "ask-button").click()
        wait.until(lambda d: "glass_breaking" in d.find_element(By.ID, "answer").text)
        cards = browser.find_elements(By.CSS_SELECTOR, "#evidence .ep")
        assert [c.get_attribute("data-episode") for c in cards] == ["2"]
        # a sound heard but not captured (audio event log only): shown, with no episode to open
        with EpisodeStore(root) as st:
            st.add_sounds("/media/demo.mp4", [SoundRecord("dog", 0.8, 40.0, 41.0)])
        box.clear()
        box.send_keys("when did the dog bark?")
        browser.find_element(By.ID, "ask-button").click()
        wait.until(lambda d: "not captured" in d.find_element(By.ID, "answer").text)
        assert "dog" in browser.find_element(By.CSS_SELECTOR, "#evidence .heard").text
        box.clear()
        box.send_keys("when did the glass break?")
        browser.find_element(By.ID, "ask-button").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#evidence .ep[data-episode="2"]'))
        cards = browser.find_elements(By.CSS_SELECTOR, "#evidence .ep")
        # open the episode: keyframe loaded, object box drawn over it, sounds listed
        cards[0].click()
        wait.until(EC.visibility_of_element_located((By.ID, "episode")))
        assert browser.find_element(By.ID, "episode-title").text.startswith("Episode 2")
        wait.until(lambda d: d.execute_script(
            "const i = document.querySelector('#episode-keyframes img'); return i && i.complete && i.naturalWidth > 0"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#episode-keyframes svg rect"))
        assert "glass_breaking" in browser.find_element(By.ID, "episode-sounds").text
        # forget it
        browser.find_element(By.ID, "forget").click()
        wait.until(EC.alert_is_present()).accept()
        wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, '.ep[data-episode="2"]'))
        assert not browser.find_element(By.ID, "episode").is_displayed()
        assert httpx.get(base + "/v1/episodes/2").status_code == 404
        assert browser.execute_script("return document.querySelectorAll('#timeline .ep').length") == 2
    finally:
        assert stop(proc) == 0
