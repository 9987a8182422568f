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
REPOSITORY = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPOSITORY / "test-output" / "e2e"
# The docs' pictures, written only when asked (`make screenshots`): an ordinary test run leaves
# the committed ones alone. tests/test_docs_images.py holds the docs to the names given here.
DOCS_IMAGES = REPOSITORY / "docs" / "images"
WRITE_DOCS_IMAGES = os.environ.get("DOCS_SCREENSHOTS") == "1"
# One size for every picture, so the docs' images keep their proportions from run to run.
VIEWPORT = {"width": 1280, "height": 800}
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


class Camera:
    """A numbered screenshot per step of a page's test, whole, into `folder`; with `docs`, also
    docs/images/<docs>.png when DOCS_SCREENSHOTS=1: the viewport, or only the element `of`
    selects (one section of a long page)."""

    def __init__(self, page: Page, folder: Path) -> None:
        self.page = page
        self.folder = folder
        self._step = 0
        folder.mkdir(parents=True, exist_ok=True)
        if WRITE_DOCS_IMAGES:
            DOCS_IMAGES.mkdir(exist_ok=True)

    def __call__(self, name: str, *, docs: str | None = None, of: str | None = None) -> None:
        self._step += 1
        self.page.screenshot(path=self.folder / f"{self._step:02d}-{name}.png", full_page=True)
        if docs and WRITE_DOCS_IMAGES:
            shown = self.page.locator(of) if of else self.page
            shown.screenshot(path=DOCS_IMAGES / f"{docs}.png")


class Operator:
    """A browser page of a logged-out operator, saving a numbered screenshot per step."""

    def __init__(self, page: Page, base_url: str, folder: Path) -> None:
        self.page = page
        self.base_url = base_url
        self.screenshot = Camera(page, folder)

    def open(self, path: str) -> Page:
        self.page.goto(self.base_url + path)
        return self.page

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
    context = browser.new_context(viewport=VIEWPORT)
    context.route("**/static/**", _static_file)
    # The admin's navigation sidebar closed, as its toggle leaves it: the pages' tables get the width.
    context.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
    try:
        yield Operator(context.new_page(), gateway.url, folder)
    finally:
        context.close()
