"""Every `manage.py` command the docs show exists, and takes the arguments they show it with:
a renamed command or flag fails here, naming the page and the line as written."""

import re
import shlex
from pathlib import Path

import pytest
from django.core.management import get_commands, load_command_class

REPOSITORY = Path(__file__).resolve().parents[1]
PAGES = [*sorted((REPOSITORY / "docs").rglob("*.md")), REPOSITORY / "README.md"]
FENCED = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
# A command line as shown: up to a comment, a redirection, a pipe or the next command.
COMMAND = re.compile(r"(?:manage\.py|gateway-manage) ([a-z_]+)([^#|<>&;'\n]*)")
SUBSTITUTION = re.compile(r"\$\([^)]*\)")


def code_of(text: str) -> list[str]:
    fenced = FENCED.findall(text)
    return fenced + INLINE.findall(FENCED.sub("", text))


def shown_commands() -> list[tuple[str, str, list[str]]]:
    """(page, line as shown, [command, arguments...]) of each command in the docs' code,
    comments left out."""
    found = []
    for page in PAGES:
        lines = [line.split(" #")[0] for code in code_of(page.read_text()) for line in code.splitlines()]
        for line in lines:
            if line.lstrip().startswith("#"):
                continue
            for name, rest in COMMAND.findall(line):
                # `[--minutes 5]`: an optional part, shown with its brackets.
                # `$(date +%Y%m)` in a file name: one word, as the shell makes it.
                words = SUBSTITUTION.sub("X", rest.replace("[", " ").replace("]", " ").replace("\\", ""))
                arguments = shlex.split(words)
                found.append((str(page.relative_to(REPOSITORY)), f"{name}{rest}".strip(), [name, *arguments]))
    return found


def refused(name: str, arguments: list[str]) -> str | None:
    """Why the command would not take these arguments; None when it would."""
    app = get_commands().get(name)
    if app is None:
        return "no such command"
    if not arguments:
        return None  # named, not run: that it exists is what the page says
    parser = load_command_class(app, name).create_parser("manage.py", name)
    parser.allow_abbrev = False  # --older is not --older-than, whatever argparse allows
    try:
        parser.parse_args(arguments)
    except (SystemExit, Exception) as error:
        return f"arguments refused ({type(error).__name__})"
    return None


def test_the_docs_show_commands():
    assert len(shown_commands()) > 20


@pytest.mark.parametrize(("page", "shown", "words"), shown_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_each_command_shown_exists_with_its_arguments(page, shown, words):
    assert refused(words[0], words[1:]) is None, f"{page}: manage.py {shown}"


def test_a_renamed_flag_is_caught():
    assert refused("prune_requests", ["--older-than", "90d"]) is None
    assert refused("prune_requests", ["--older", "90d"]) is not None
    assert refused("prune_request", []) == "no such command"
