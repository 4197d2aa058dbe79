"""A browser session on `harness app`, for the browser tests: the app served on a free loopback port, a headless
Debian chromium driven through chromium-driver, and what a person does on the page (choose a model, upload,
wait for the tables and maps)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
APP = [sys.executable, "-m", "harness.cli", "app"]  # `harness app`, as conftest.run_harness runs the command
WAIT = 240  # seconds for anything the page shows: two shared CPU cores run chromium, Streamlit and the workers


def require_browser() -> None:
    """Fail (never skip) when the browser is missing: the browser tests are part of the proof that the page works."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: the page's browser test drives Debian's chromium through "
                    "chromium-driver; .ci/run installs them (bin/test runs bin/browser-deps: apt-get install chromium "
                    "chromium-driver)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def served_app(uri: str, folder: Path, *options: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """`harness app --registry URI OPTIONS` on a free loopback port, once Streamlit answers: (process, URL)."""
    port, log = free_port(), folder / "server.log"
    with log.open("wb") as output:
        server = subprocess.Popen([*APP, "--registry", uri, "--port", str(port), *options],
                                  cwd=folder, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + WAIT
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as answer:
                    if answer.read() == b"ok":
                        break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, f"the app did not start:\n{log.read_text()}"
            time.sleep(0.5)
        yield server, url
    finally:
        server.terminate()  # Streamlit stops on SIGTERM, and the serving pool's atexit stops the workers
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert server.returncode in (0, -signal.SIGTERM), log.read_text()


def photograph(driver: WebDriver, path: Path) -> None:
    """The whole page in one picture: the window made as tall as the page's content."""
    height = driver.execute_script('return document.querySelector(\'[data-testid="stMain"]\').scrollHeight')
    driver.set_window_size(1400, min(int(height) + 160, 6000))
    time.sleep(1)  # let the layout settle at the new size
    assert driver.save_screenshot(str(path))


@contextmanager
def chromium(folder: Path, width: int = 1400, height: int = 1200) -> Iterator[WebDriver]:
    """A headless chromium (its own profile under `folder`), closed afterwards."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}", f"--user-data-dir={folder / 'profile'}",
                     # Tabs in the background keep their websocket and timers running: the sessions run at once.
                     "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                     "--disable-backgrounding-occluded-windows"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, condition, what: str):
    """`condition(driver)` once it is truthy; a failure says what was awaited and what the page said."""
    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.5, ignored_exceptions=(WebDriverException,)).until(
            condition)
    except Exception as error:
        body = driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"waited {WAIT} s for {what}; the page shows:\n{body[-3000:]}") from error


def elements(driver: WebDriver, test_id: str) -> list:
    return driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{test_id}"]')


def open_page(driver: WebDriver, url: str) -> None:
    driver.get(url)
    wait_for(driver, lambda d: elements(d, "stFileUploaderDropzoneInput"), "the file uploader")


def add_model(driver: WebDriver, label: str) -> None:
    """Pick one more model in the chooser, as a person does: open it, click the option."""
    chooser = elements(driver, "stMultiSelect")[0]
    chooser.find_element(By.TAG_NAME, "input").click()
    option = wait_for(driver, lambda d: [item for item in d.find_elements(By.CSS_SELECTOR, '[role="option"]')
                                         if label in item.text], f"the option {label}")[0]
    option.click()
    chooser.find_element(By.TAG_NAME, "input").send_keys(Keys.ESCAPE)
    wait_for(driver, lambda d: any(label in tag.text for tag in elements(d, "stMultiSelect")[0].find_elements(
        By.CSS_SELECTOR, "[data-tag]")), f"{label} among the chosen models")


def upload(driver: WebDriver, *paths: Path) -> None:
    elements(driver, "stFileUploaderDropzoneInput")[0].send_keys("\n".join(str(path) for path in paths))


def results(driver: WebDriver, labels: list[str], images: int) -> bool:
    """True once `images` tables each hold every model's column and 14 findings, and every map has loaded."""
    tables = elements(driver, "stTable")
    if len(tables) != images:
        return False
    for table in tables:
        headers = [cell.text for cell in table.find_elements(By.TAG_NAME, "th")]
        rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
        if not all(label in headers for label in labels) or len(rows) != 14:
            return False
    maps = [image for image in elements(driver, "stImage")
            if any(caption.text.startswith(tuple(labels)) for caption in image.find_elements(
                By.CSS_SELECTOR, '[data-testid="stImageCaption"]'))]
    return len(maps) == images * len(labels) and all(
        driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0",
                              image.find_element(By.TAG_NAME, "img")) for image in maps)
