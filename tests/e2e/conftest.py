"""Browser tests: Playwright driving Debian's Chromium against the gateway served on loopback."""

import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.contrib.staticfiles import finders
from playwright.sync_api import Browser, Page, Route, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "e2e"
OPERATOR = ("operator", "a long operator password")


@pytest.fixture(scope="module")
def browser(django_db_setup) -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"The browser tests need Debian's Chromium at {CHROMIUM}: apt-get install -y chromium")
    # Playwright's sync API keeps an event loop running in this thread, and Django then refuses
    # the tests' own ORM calls. The gateway under test runs in its own thread, unaffected; the
    # check is off only while this module's browser lives.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def _static_file(route: Route) -> None:
    """Admin CSS and JS straight from the apps, as collectstatic would gather them.

    Served by the browser itself: under the test server, Django's ASGI handler leaves open the
    files of FileResponses the browser abandons, and tests treat the ResourceWarning as an error.
    """
    found = finders.find(urlsplit(route.request.url).path.removeprefix("/static/"))
    if found:
        route.fulfill(path=found)
    else:
        route.fulfill(status=404)


class Operator:
    """A browser page of a logged-out operator, saving a numbered screenshot per step."""

    def __init__(self, page: Page, base_url: str, folder: Path) -> None:
        self.page = page
        self.base_url = base_url
        self.folder = folder
        self._step = 0

    def open(self, path: str) -> Page:
        self.page.goto(self.base_url + path)
        return self.page

    def screenshot(self, name: str) -> None:
        self._step += 1
        self.page.screenshot(path=self.folder / f"{self._step:02d}-{name}.png", full_page=True)

    def log_in(self) -> None:
        self.open("/admin/")
        self.page.fill("#id_username", OPERATOR[0])
        self.page.fill("#id_password", OPERATOR[1])
        self.screenshot("login")
        self.page.click("input[type=submit]")
        self.page.wait_for_selector("#site-name")


@pytest.fixture
def operator(browser, gateway, django_user_model, request) -> Iterator[Operator]:
    django_user_model.objects.create_superuser(OPERATOR[0], "operator@example.com", OPERATOR[1])
    folder = SCREENSHOTS / re.sub(r"\W+", "-", request.node.name)
    folder.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.route("**/static/**", _static_file)
    try:
        yield Operator(context.new_page(), gateway.url, folder)
    finally:
        context.close()
