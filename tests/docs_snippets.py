"""The code blocks of a documentation page, as `make docs-check` runs them.

A block is checked when an HTML comment (invisible on the site) stands on the line above it:

    <!-- docs-check: python -->                         run with the Python clients' venv
    <!-- docs-check: node -->                           run with Node.js, the npm clients beside it
    <!-- docs-check: sh -->                             run with bash (curl, the Codex CLI on PATH)
    <!-- docs-check: file config.toml -->               not run: written beside the runs below it
    <!-- docs-check: output -->                         not run: shows what the block above prints

Options after the runner: `gateway=header|key|codex` (the gateway's identity mode, header by
default) and `expect="..."` (a text the run must print; the stub upstream's greeting by default).
"""

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

# What the bundled stub upstream answers every chat or Responses call with.
STUB_GREETING = "Hello from the organized-gateway stub upstream."
RUNNERS = ("python", "node", "sh", "file", "output")
GATEWAYS = ("header", "key", "codex")

_MARKER = re.compile(r"^\s*<!--\s*docs-check:\s*(.*?)\s*-->\s*$")
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})")


@dataclass(frozen=True)
class Snippet:
    page: Path
    line: int
    runner: str
    code: str
    name: str = ""
    gateway: str = "header"
    expect: str = STUB_GREETING
    # The page's `file` blocks above this one, by name (a later one replaces an earlier one).
    files: tuple[tuple[str, str], ...] = ()

    @property
    def id(self) -> str:
        return f"{self.page.name}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.runner in ("python", "node", "sh")


def read(page: Path) -> tuple[list[Snippet], list[int]]:
    """The page's marked blocks, and the line numbers of the blocks that carry no marker."""
    lines = page.read_text().splitlines()
    snippets: list[Snippet] = []
    unmarked: list[int] = []
    files: dict[str, str] = {}
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        indent, ticks = fence.groups()
        start = index
        index += 1
        body: list[str] = []
        while index < len(lines) and not lines[index].strip().startswith(ticks):
            body.append(lines[index][len(indent) :] if lines[index].startswith(indent) else lines[index].lstrip())
            index += 1
        index += 1  # the closing fence
        marker = _MARKER.match(lines[start - 1]) if start else None
        if not marker:
            unmarked.append(start + 1)
            continue
        snippet = _snippet(page, start + 1, marker.group(1), "\n".join(body) + "\n", files)
        if snippet.runner == "file":
            files[snippet.name] = snippet.code
        snippets.append(snippet)
    return snippets, unmarked


def _snippet(page: Path, line: int, marker: str, code: str, files: dict[str, str]) -> Snippet:
    runner, *words = shlex.split(marker)
    if runner not in RUNNERS:
        raise ValueError(f"{page.name}:{line}: unknown runner {runner!r}, not one of {', '.join(RUNNERS)}")
    name = words.pop(0) if runner == "file" and words else ""
    options = dict(word.split("=", 1) for word in words)
    unknown = set(options) - {"gateway", "expect"}
    if unknown or options.get("gateway", "header") not in GATEWAYS or (runner == "file" and not name):
        raise ValueError(f"{page.name}:{line}: bad docs-check marker {marker!r}")
    return Snippet(page, line, runner, code, name=name, files=tuple(files.items()), **options)


def titled_block(page: Path, title: str) -> str:
    """The fenced block of an operators' page shown under `title` (```sh title="..."), which a
    test runs with its paths and ports replaced."""
    found = re.findall(r'^```\w+ title="' + re.escape(title) + r'"\n(.*?)^```$', page.read_text(), re.M | re.S)
    assert len(found) == 1, f"{page.name} has {len(found)} blocks titled {title}"
    return found[0]


def replaced(text: str, old: str, new: str) -> str:
    """`old` replaced in a block, which must still hold it: a test never passes on a page that
    no longer says what it replaces."""
    assert old in text, f"{old!r} is no longer in the page's block"
    return text.replace(old, new)
