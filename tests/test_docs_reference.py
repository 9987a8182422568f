"""The reference pages say what the code does, read from the code itself (its syntax tree, nothing
imported or run): every environment variable the gateway reads is in
docs/reference/configuration.md and .env.example with its default and type, and every error code
it answers with is in docs/reference/errors.md with its status and type. Nothing is listed there
that the code no longer has."""

import ast
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
CONFIGURATION = BASE_DIR / "docs" / "reference" / "configuration.md"
ERRORS = BASE_DIR / "docs" / "reference" / "errors.md"
ENV_EXAMPLE = BASE_DIR / ".env.example"

# The gateway's code: the apps, the project, manage.py. Migrations read no settings.
SOURCES = ["gateway_project", "proxy", "billing", "accounts", "manage.py"]

# Variables the code reads that are not the operator's to set.
NOT_CONFIGURATION = {
    "DJANGO_SETTINGS_MODULE": "Django's own; manage.py and the ASGI module set it",
    "GATEWAY_WORKER_METRICS_DIR": "set by gunicorn_conf.py for its workers, never by hand",
}
# Still read under an old name: documented as such, left out of .env.example.
FORMER_NAMES = {"PROMETHEUS_MULTIPROC_DIR": "METRICS_DIR"}

# The bundled stub upstream answers like an upstream, not like the gateway: its errors are not the gateway's.
NOT_THE_GATEWAY = {BASE_DIR / "gateway_project" / "stub_upstream.py"}

READERS = {
    "env_str",
    "env_int",
    "env_float",
    "env_bool",
    "env_list",
    "env_choice",
    "env_url",
    "env_usd",
    "env_header_names",
}
# Where each reader takes its default (env_url and env_header_names have none: unset is none).
DEFAULT_ARGUMENT = {
    "env_str": 1,
    "env_int": 1,
    "env_float": 1,
    "env_bool": 1,
    "env_list": 1,
    "env_usd": 1,
    "env_choice": 2,
}
COMPUTED = object()  # a default the code computes (from another setting, the machine): not compared


def python_files() -> list[Path]:
    files = []
    for source in SOURCES:
        path = BASE_DIR / source
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return [file for file in files if "migrations" not in file.parts]


def parsed(file: Path) -> ast.Module:
    tree = ast.parse(file.read_text(), str(file))
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            child.parent = node
    return tree


def module_constants(tree: ast.Module) -> dict[str, object]:
    """NAME = "literal" at the top of a module: codes and variable names kept in constants."""
    constants = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant):
            for target in statement.targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = statement.value.value
    return constants


def literal(node: ast.AST | None, constants: dict[str, object]) -> object:
    """The value of a literal default (a constant, 10 * 1024 * 1024, a list of strings,
    Decimal("1.00")), else COMPUTED."""
    if node is None:
        return None
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Decimal" and len(node.args) == 1:
        text = literal(node.args[0], constants)
        return Decimal(text) if isinstance(text, str) else COMPUTED
    constant_parts = (ast.Constant, ast.BinOp, ast.operator, ast.List, ast.Tuple, ast.expr_context)
    if all(isinstance(part, constant_parts) for part in ast.walk(node)):
        return eval(compile(ast.Expression(node), "<default>", "eval"), {"__builtins__": {}})  # constants only
    return COMPUTED


# --- what the code reads ---------------------------------------------------------


@dataclass
class Read:
    name: str
    reader: str  # env_int, ...; "os.environ" for a raw read
    default: object  # None: unset means none; COMPUTED: not a literal
    keywords: dict[str, object]
    where: str


def environment_reads() -> list[Read]:
    reads = []
    for file in python_files():
        tree = parsed(file)
        constants = module_constants(tree)
        for node in ast.walk(tree):
            read = _read(node, constants)
            if read is not None:
                read.where = f"{file.relative_to(BASE_DIR)}:{node.lineno}"
                reads.append(read)
    return reads


def _read(node: ast.AST, constants: dict[str, object]) -> Read | None:
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_os_environ(node.value):
        name = literal(node.slice, constants)
        return Read(name, "os.environ", None, {}, "") if isinstance(name, str) else None
    if not isinstance(node, ast.Call) or not node.args:
        return None
    name = literal(node.args[0], constants)
    if not isinstance(name, str):
        return None  # a name only known at run time (a routes file's api_key_env)
    function = node.func
    if isinstance(function, ast.Name) and function.id in READERS:
        keywords = {k.arg: literal(k.value, constants) for k in node.keywords}
        if function.id == "env_choice":
            keywords["choices"] = literal(node.args[1], constants)
        position = DEFAULT_ARGUMENT.get(function.id)
        default_node = node.args[position] if position is not None and len(node.args) > position else None
        default = keywords.pop("default") if "default" in keywords else literal(default_node, constants)
        return Read(name, function.id, _or_default(node, default, constants), keywords, "")
    is_get = isinstance(function, ast.Attribute) and function.attr in ("get", "pop", "setdefault")
    if (is_get and _is_os_environ(function.value)) or (
        isinstance(function, ast.Attribute) and function.attr == "getenv" and getattr(function.value, "id", "") == "os"
    ):
        default = literal(node.args[1], constants) if len(node.args) > 1 else None
        return Read(name, "os.environ", default or None, {}, "")  # "": unset
    return None


def _is_os_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" and getattr(node.value, "id", "") == "os"


def _or_default(call: ast.Call, default: object, constants: dict[str, object]) -> object:
    """`env_url("X") or "https://..."`: the literal after `or` is the default."""
    parent = getattr(call, "parent", None)
    after_or = isinstance(parent, ast.BoolOp) and isinstance(parent.op, ast.Or) and parent.values[0] is call
    if default in (None, "") and after_or and len(parent.values) == 2:
        return literal(parent.values[1], constants)
    return None if default == "" else default


def read_variables() -> dict[str, list[Read]]:
    variables: dict[str, list[Read]] = {}
    for read in environment_reads():
        if read.name not in NOT_CONFIGURATION:
            variables.setdefault(read.name, []).append(read)
    return variables


# --- what the pages say --------------------------------------------------------------


def table_rows(page: Path, first_column: str) -> list[dict[str, str]]:
    """The rows of every table on `page` whose header starts with `first_column`, as
    {header: cell}; backticks kept."""
    rows, header = [], None
    for line in page.read_text().splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells if cells[0] == first_column else []
        elif header and not set(line) <= set("|-: "):
            rows.append(dict(zip(header, cells, strict=True)))
    return rows


def unquoted(cell: str) -> str:
    return cell.removeprefix("`").removesuffix("`")


def documented_variables() -> dict[str, dict[str, str]]:
    rows = table_rows(CONFIGURATION, "variable")
    documented = {unquoted(row["variable"]): row for row in rows}
    assert len(documented) == len(rows), "a variable has two rows in the configuration reference"
    return documented


def env_example() -> dict[str, str]:
    lines = ENV_EXAMPLE.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if re.match(r"[A-Z][A-Z0-9_]*=", line))


def as_literal(default: object) -> str:
    """A default as it would be written in the environment."""
    if isinstance(default, bool):
        return "1" if default else "0"
    if isinstance(default, (list, tuple)):
        return ",".join(default)
    return str(default)


def same_value(written: str, default: object) -> bool:
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        try:
            return float(written) == default
        except ValueError:
            return False
    if isinstance(default, Decimal):
        return written == str(default)
    return written == as_literal(default)


# A single backticked value: the default as the code writes it. Anything else is prose ("twice
# `UPSTREAM_TIMEOUT`"), allowed only where the code computes the default.
SINGLE_VALUE = re.compile(r"`([^`]*)`")


def default_problem(read: Read, cell: str) -> str | None:
    if read.default is COMPUTED:
        return None
    if read.default in (None, [], ()):  # unset, or an empty list: nothing
        if not cell.startswith("—"):
            return f"{read.name}: unset means none in the code ({read.where}), so its default should start with —"
        return None
    value = SINGLE_VALUE.fullmatch(cell)
    if value is None or not same_value(value[1], read.default):
        return f"{read.name}: the default is {as_literal(read.default)!r} in {read.where}, the reference says {cell}"
    return None


def expected_type(read: Read) -> str | None:
    """What the type column must say for a typed reader: its range, its choices."""
    if read.reader == "env_int":
        low, high = read.keywords.get("minimum"), read.keywords.get("maximum")
        if high is not None:
            return f"integer {low}–{high}"
        return f"integer ≥ {low}" if low is not None else "integer"
    if read.reader == "env_float":
        return f"seconds > {read.keywords.get('minimum', 0):g}"
    if read.reader == "env_choice":
        return "one of " + ", ".join(f"`{choice}`" for choice in read.keywords["choices"])
    return {
        "env_bool": "boolean",
        "env_url": "URL",
        "env_usd": "USD",
        "env_list": "list",
        "env_header_names": "list",
    }.get(read.reader)


def type_problem(read: Read, cell: str) -> str | None:
    expected = expected_type(read)
    if expected is not None and expected not in cell:
        return f"{read.name}: the type should say {expected!r} ({read.where}); it says {cell}"
    return None


# --- configuration ------------------------------------------------------------------


def test_every_reader_of_lib_env_is_known_here():
    # A reader added to lib/env.py but not here would hide the variables read through it.
    tree = ast.parse((BASE_DIR / "gateway_project" / "lib" / "env.py").read_text())
    defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("env_")}

    assert defined == READERS


def test_every_variable_the_code_reads_is_in_the_configuration_reference():
    read, documented = read_variables(), documented_variables()

    missing = {name: reads[0].where for name, reads in read.items() if name not in documented}
    assert not missing, f"read by the code, missing from {CONFIGURATION.relative_to(BASE_DIR)}: {missing}"


def test_the_configuration_reference_lists_no_variable_the_code_no_longer_reads():
    read, documented = read_variables(), documented_variables()

    gone = sorted(set(documented) - set(read))
    assert not gone, f"in {CONFIGURATION.relative_to(BASE_DIR)} but read nowhere in the code: {gone}"


def documented_problems(problem_of, column: str) -> list[str]:
    """`problem_of(read, documented value)` for every read of a documented variable, the
    problems found (None: none)."""
    documented = documented_variables()
    problems = [
        problem_of(read, documented[name][column])
        for name, reads in read_variables().items()
        if name in documented
        for read in reads
    ]
    return [problem for problem in problems if problem]


def test_each_documented_default_is_the_codes_default():
    assert documented_problems(default_problem, "default") == []


def test_each_documented_type_is_what_the_codes_reader_accepts():
    assert documented_problems(type_problem, "type") == []


def test_env_example_lists_the_documented_variables_with_the_codes_defaults():
    example, documented, read = env_example(), documented_variables(), read_variables()

    listed = set(documented) - set(FORMER_NAMES)
    assert sorted(listed - set(example)) == [], "documented, missing from .env.example"
    assert sorted(set(example) - listed) == [], "in .env.example, not documented"
    wrong = [
        f"{name}={value} in .env.example; the code's default ({each.where}) is {as_literal(each.default)}"
        for name, value in example.items()
        if value
        for each in read.get(name, [])
        if each.default not in (None, [], (), COMPUTED) and not same_value(value, each.default)
    ]
    assert wrong == []


# --- errors -------------------------------------------------------------------------

ERROR_CLASSES = {"GatewayError", "UpstreamFailure"}


@dataclass(frozen=True)
class Refusal:
    status: int | None  # None: the status is set elsewhere (a response built around the body)
    code: str
    type: str
    where: str


def refusals() -> list[Refusal]:
    """Every error the code builds: GatewayError(status, code, ...) and its subclasses, and
    error_body(code, ...) inside a JsonResponse(..., status=...)."""
    found = []
    for file in python_files():
        if file in NOT_THE_GATEWAY:
            continue
        tree = parsed(file)
        constants = module_constants(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                refusal = _refusal(node, constants, f"{file.relative_to(BASE_DIR)}:{node.lineno}")
                if refusal is not None:
                    found.append(refusal)
    return found


def _refusal(call: ast.Call, constants: dict[str, object], where: str) -> Refusal | None:
    function = call.func
    name = function.id if isinstance(function, ast.Name) else getattr(function, "attr", "")
    error_type = keyword(call, "type", constants, "invalid_request_error")
    if name in ERROR_CLASSES or _is_super_init_of_an_error(call):
        if len(call.args) < 2 or any(isinstance(arg, ast.Starred) for arg in call.args):
            return None  # passes on its caller's arguments
        status, code = literal(call.args[0], constants), literal(call.args[1], constants)
        assert isinstance(status, int) and isinstance(code, str), f"cannot read the status and code at {where}"
        return Refusal(status, code, error_type, where)
    if name == "error_body":
        code = literal(call.args[0], constants)
        if not isinstance(code, str):
            return None  # a GatewayError's body: its code is read where it is raised
        response = call.parent  # JsonResponse(error_body(...), status=...)
        status = keyword(response, "status", constants) if isinstance(response, ast.Call) else None
        return Refusal(status, code, error_type, where)
    return None


def keyword(call: ast.Call, name: str, constants: dict[str, object], default: object = None) -> object:
    return next((literal(k.value, constants) for k in call.keywords if k.arg == name), default)


def _is_super_init_of_an_error(call: ast.Call) -> bool:
    function = call.func
    if not (isinstance(function, ast.Attribute) and function.attr == "__init__"):
        return False
    if not (isinstance(function.value, ast.Call) and getattr(function.value.func, "id", "") == "super"):
        return False
    node = call
    while not isinstance(node, (ast.ClassDef, ast.Module)):
        node = node.parent
    return isinstance(node, ast.ClassDef) and any(getattr(base, "id", "") in ERROR_CLASSES for base in node.bases)


def documented_errors() -> set[tuple[int, str, str]]:
    return {(int(row["status"]), unquoted(row["code"]), unquoted(row["type"])) for row in table_rows(ERRORS, "status")}


def test_every_error_code_the_gateway_returns_is_in_the_error_reference():
    documented_codes = {code for _, code, _ in documented_errors()}

    missing = {refusal.code: refusal.where for refusal in refusals() if refusal.code not in documented_codes}
    assert not missing, f"returned by the code, missing from {ERRORS.relative_to(BASE_DIR)}: {missing}"


def test_the_error_reference_lists_no_code_the_gateway_no_longer_returns():
    codes = {refusal.code for refusal in refusals()}

    gone = sorted(code for _, code, _ in documented_errors() if code not in codes)
    assert not gone, f"in {ERRORS.relative_to(BASE_DIR)} but returned nowhere in the code: {gone}"


def test_each_documented_status_and_type_is_the_codes():
    found, documented = refusals(), documented_errors()
    in_code = {(refusal.status, refusal.code, refusal.type) for refusal in found}
    status_unknown = {refusal.code for refusal in found if refusal.status is None}

    undocumented = [
        f"{refusal.where}: {refusal.status} {refusal.code} ({refusal.type}) is not a row of the error reference"
        for refusal in found
        if refusal.status is not None and (refusal.status, refusal.code, refusal.type) not in documented
    ]
    not_in_code = [row for row in documented if row[1] not in status_unknown and row not in in_code]
    assert undocumented == []
    assert not_in_code == [], "rows of the error reference whose status or type the code never returns"
