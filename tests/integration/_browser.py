"""
A real headless Chromium for browser tests, driven through Selenium and Debian's chromedriver.

L{start_browser} starts one Chromium WebDriver for a test and registers a cleanup that quits it.
Trial never calls C{setUpClass}/C{tearDownClass}, so the browser lives as long as one test
method; Chromium starts in about half a second, which keeps that cheap.

The binaries are fixed: C{/usr/bin/chromium} and C{/usr/bin/chromedriver} (Debian's C{chromium}
and C{chromium-driver} packages, which CI installs). Selenium is handed the driver through a
L{Service}, so it never tries to download one. When either binary is missing the test fails with
a message saying what to install: a browser test is never skipped.

L{Browser.save_screenshot} writes whole-page PNGs to L{screenshot_dir}: the folder named by
C{$NSQADMIN_SCREENSHOT_DIR}, else C{<repo>/test-output/screenshots/}.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait
from twisted.trial.unittest import SynchronousTestCase

__all__ = [
    "CHROMEDRIVER",
    "CHROMIUM",
    "SCREENSHOT_DIR_VARIABLE",
    "Browser",
    "check_installed",
    "screenshot_dir",
    "start_browser",
]

#: The Chromium binary (Debian package C{chromium}).
CHROMIUM = Path("/usr/bin/chromium")
#: Its WebDriver (Debian package C{chromium-driver}).
CHROMEDRIVER = Path("/usr/bin/chromedriver")

#: The environment variable naming the folder screenshots go to.
SCREENSHOT_DIR_VARIABLE = "NSQADMIN_SCREENSHOT_DIR"

#: The browser window, fixed so that screenshots and layouts do not depend on the machine.
WINDOW_SIZE = (1280, 1024)

#: The default bound of every wait, in seconds.
WAIT_TIMEOUT = 10.0
#: How often a wait polls.
POLL_INTERVAL = 0.05

#: Chromium's flags: headless, as root in a container (no sandbox, no /dev/shm), no GPU.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--metrics-recording-only",
    "--lang=en-US",
)

_T = TypeVar("_T")

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def screenshot_dir() -> Path:
    """The folder screenshots are written to (created on first use)."""
    configured = os.environ.get(SCREENSHOT_DIR_VARIABLE)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "test-output" / "screenshots"


def check_installed() -> None:
    """
    Fail unless Chromium and chromedriver are installed (cheap: tests call it before starting
    anything else, so that a missing browser fails fast).
    """
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        raise AssertionError(
            f"the browser tests need headless Chromium and its WebDriver, but {', '.join(missing)} "
            "is missing: install them with `apt-get install chromium chromium-driver` "
            "(.ci/run does this)"
        )


class Browser:
    """
    One headless Chromium, with the waits and screenshots the nsqadmin tests use.

    Every wait is bounded; when one times out, the failure message holds the page's URL and
    visible text, and a screenshot named C{FAILED-<what>} is saved.
    """

    def __init__(self, driver: WebDriver) -> None:
        self.driver = driver

    # -- navigation and lookups --------------------------------------------------------------

    def get(self, url: str) -> None:
        """Navigate to C{url} and wait for its C{load} event."""
        self.driver.get(url)

    def script(self, source: str, *args: Any) -> Any:
        """Run JavaScript in the page; its C{return} value."""
        return self.driver.execute_script(source, *args)

    def find(self, css: str) -> WebElement:
        """The first element matching the CSS selector C{css} (it must exist)."""
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        """Every element matching the CSS selector C{css}."""
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str = "body") -> str:
        """The visible text of the first element matching C{css}."""
        return self.find(css).text

    def js_text(self, css: str) -> str | None:
        """
        The visible text of the first element matching C{css} (None when there is none), read in
        one script: a page that swaps its content meanwhile cannot make it stale.
        """
        found = self.script(
            "var e = document.querySelector(arguments[0]); return e === null ? null : e.innerText;", css
        )
        return None if found is None else str(found)

    def js_attribute(self, css: str, name: str) -> str | None:
        """Attribute C{name} of the first element matching C{css} (None when either is missing)."""
        found = self.script(
            "var e = document.querySelector(arguments[0]);"
            "return e === null ? null : e.getAttribute(arguments[1]);",
            css,
            name,
        )
        return None if found is None else str(found)

    def click(self, css: str, timeout: float = WAIT_TIMEOUT) -> None:
        """
        Click (a real, user-like click) the first element matching C{css}, waiting for it; a page
        that swaps the element out between the lookup and the click is retried.
        """

        def clicked(driver: WebDriver) -> bool:
            driver.find_element(By.CSS_SELECTOR, css).click()
            return True

        self.wait_for(f"{css!r} can be clicked", clicked, timeout)

    # -- waiting -----------------------------------------------------------------------------

    def wait_for(self, what: str, condition: Callable[[WebDriver], _T], timeout: float = WAIT_TIMEOUT) -> _T:
        """
        Poll C{condition(driver)} until it returns something true and return that.

        Selenium's "element is gone" and "stale element" errors count as "not yet".

        @raise AssertionError: C{timeout} seconds passed; the message describes the page.
        """
        wait: WebDriverWait[WebDriver] = WebDriverWait(
            self.driver, timeout, poll_frequency=POLL_INTERVAL, ignored_exceptions=(WebDriverException,)
        )
        try:
            return wait.until(condition)
        except TimeoutException:
            raise AssertionError(f"{what}: not so after {timeout}s\n{self.describe(what)}") from None

    def wait_element(self, css: str, timeout: float = WAIT_TIMEOUT) -> WebElement:
        """Wait until an element matching C{css} exists; return it."""

        def present(driver: WebDriver) -> list[WebElement]:
            return driver.find_elements(By.CSS_SELECTOR, css)[:1]

        return self.wait_for(f"an element matches {css!r}", present, timeout)[0]

    def wait_gone(self, css: str, timeout: float = WAIT_TIMEOUT) -> None:
        """Wait until no element matches C{css}."""
        self.wait_for(
            f"no element matches {css!r}",
            lambda driver: not driver.find_elements(By.CSS_SELECTOR, css),
            timeout,
        )

    def wait_text(self, css: str, wanted: str, timeout: float = WAIT_TIMEOUT) -> WebElement:
        """Wait until the first element matching C{css} shows C{wanted} in its text; return it."""

        def shows(driver: WebDriver) -> list[WebElement]:
            return [e for e in driver.find_elements(By.CSS_SELECTOR, css)[:1] if wanted in e.text]

        return self.wait_for(f"{css!r} shows {wanted!r}", shows, timeout)[0]

    def accept_confirm(self, timeout: float = WAIT_TIMEOUT) -> str:
        """Wait for a C{window.confirm} dialog, accept it, and return its question."""

        def dialog(driver: WebDriver) -> str:
            try:
                alert = driver.switch_to.alert
                question = alert.text
            except NoAlertPresentException:
                return ""
            alert.accept()
            return question or "(empty question)"

        return self.wait_for("a confirm dialog opens", dialog, timeout)

    # -- evidence ----------------------------------------------------------------------------

    def describe(self, what: str = "") -> str:
        """The current URL and visible text, for failure messages (saving a screenshot too)."""
        try:
            url = self.driver.current_url
            body = self.text()
        except WebDriverException as e:
            return f"(the page could not be read: {e.msg})"
        if what:
            try:
                shot = self.save_screenshot("FAILED-" + what)
            except (OSError, WebDriverException) as e:
                shot = Path(f"(no screenshot: {e})")
            return f"page {url} (screenshot {shot}) shows:\n{body}"
        return f"page {url} shows:\n{body}"

    def console_errors(self) -> list[str]:
        """The page's JavaScript console messages of level SEVERE since the last call."""
        entries: list[dict[str, Any]] = self.driver.get_log("browser")
        return [str(entry.get("message", "")) for entry in entries if entry.get("level") == "SEVERE"]

    def save_screenshot(self, name: str) -> Path:
        """
        Save the whole page (beyond the window's height) as C{<screenshot_dir>/<name>.png}.

        @return: the file written.
        """
        folder = screenshot_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (_UNSAFE_NAME.sub("_", name).strip("_")[:120] + ".png")
        metrics = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        width = max(int(size["width"]), WINDOW_SIZE[0])
        height = max(int(size["height"]), 1)
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            },
        )
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def quit(self) -> None:
        """End Chromium and its driver."""
        self.driver.quit()


def start_browser(test: SynchronousTestCase) -> Browser:
    """
    Start a headless Chromium for C{test}; its cleanup quits it.

    @raise AssertionError: Chromium or chromedriver is not installed, or would not start.
    """
    check_installed()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    # The console log, so that tests can fail on JavaScript errors.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # A confirm() left open by a failed test must not swallow the next command silently.
    options.set_capability("unhandledPromptBehavior", "ignore")
    try:
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    except WebDriverException as e:
        raise AssertionError(f"headless Chromium would not start: {e.msg}") from None
    browser = Browser(driver)
    test.addCleanup(browser.quit)
    driver.set_page_load_timeout(WAIT_TIMEOUT * 2)
    driver.set_script_timeout(WAIT_TIMEOUT)
    return browser
