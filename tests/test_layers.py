"""The apps' imports point one way, as docs/developers/architecture.md draws them:
proxy → billing → accounts → gateway_project.lib. An import against the arrow, lazy ones
included, fails here with its file and line before it tangles the apps."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("proxy", "billing", "accounts", "gateway_project")

# What each part may import of the others, besides its own modules.
ALLOWED = {
    # gateway_project.models: the table_versions table lib/table_versions.py keeps.
    "gateway_project/lib": {"gateway_project.models"},
    "accounts": {"gateway_project.lib"},
    # proxy.models: the access log, which billing sums (rollups) and costs again (recost).
    "billing": {"gateway_project.lib", "accounts", "proxy.models"},
    "proxy": {"gateway_project.lib", "accounts", "billing"},
}


def imports_of_apps(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) of each import of the apps in a file: `import a.b` is (a.b, a.b),
    `from a import b` is (a, a.b), for b may be a module or a name in a."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, node.module, f"{node.module}.{alias.name}") for alias in node.names]
    return [(line, module, name) for line, module, name in found if module.split(".")[0] in APPS]


def allowed(part: str, module: str, name: str) -> bool:
    permitted = ALLOWED[part] | {part.replace("/", ".")}
    return any(m == p or m.startswith(p + ".") for p in permitted for m in (module, name))


def against_the_arrow(part: str, path: Path) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for line, module, name in imports_of_apps(path)
        if not allowed(part, module, name)
    ]


@pytest.mark.parametrize("part", ALLOWED)
def test_imports_point_one_way(part):
    files = [p for p in sorted((ROOT / part).rglob("*.py")) if "migrations" not in p.parts]
    assert [problem for path in files for problem in against_the_arrow(part, path)] == []


def test_a_lazy_import_against_the_arrow_is_seen(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from proxy.models import RequestLog\n\ndef f():\n    from proxy import routing\n")
    assert [line for line, module, name in imports_of_apps(sample) if not allowed("billing", module, name)] == [4]
