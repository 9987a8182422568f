"""The docs' pictures are taken by the browser tests (`make screenshots`), never made by hand:
every image a page of docs/ shows, and every file in docs/images/, is named by a `docs=`
argument of a screenshot in tests/e2e."""

import re
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
DOCS = REPOSITORY / "docs"
# Literal names only: a name built at run time could not be checked here.
DOCS_ARGUMENT = re.compile(r"""\bdocs=["']([\w-]+)["']""")
# An image a page shows: a Markdown link or an <img>'s src under images/ (not the words
# "docs/images/" in a sentence).
IMAGE_LINK = re.compile(r"""(?:\]\(|src=["'])[^)"'\s]*images/([^)\s"'#?]+)""")


def taken_by_tests() -> set[str]:
    return {
        f"{name}.png"
        for test in (REPOSITORY / "tests" / "e2e").glob("*.py")
        for name in DOCS_ARGUMENT.findall(test.read_text())
    }


def test_every_image_the_docs_show_is_taken_by_a_browser_test():
    shown = {
        f"{page.relative_to(DOCS)}: images/{image}"
        for page in DOCS.rglob("*.md")
        for image in IMAGE_LINK.findall(page.read_text())
        if image not in taken_by_tests()
    }
    assert not shown, "images no test in tests/e2e takes (screenshot(..., docs=...)):\n" + "\n".join(sorted(shown))


def test_every_file_in_docs_images_is_taken_by_a_browser_test():
    kept = {image.name for image in (DOCS / "images").glob("*")} - taken_by_tests()
    assert not kept, f"docs/images holds files no test in tests/e2e takes: {sorted(kept)}"


def test_the_names_are_read_from_the_browser_tests():
    assert "admin-dashboard.png" in taken_by_tests()
