"""Typed readers for environment variables.

Each reader returns a safe default when the variable is unset or empty, and stops
start-up with a BadConfiguration naming the variable, the value and what is allowed when
the value is bad. Between note_problems() and raise_noted_problems() (the settings module)
a bad value is noted and its default used instead, so that one stop names every bad value.
"""

import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal, InvalidOperation
from typing import TypeVar
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

T = TypeVar("T")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class BadConfiguration(ImproperlyConfigured):
    """Bad configuration values, one line each, every line complete in itself."""


# The problems noted so far while settings are read; None: a bad value raises at once.
_noted: list[str] | None = None


def note_problems() -> None:
    global _noted
    _noted = []


def raise_noted_problems() -> None:
    global _noted
    problems, _noted = _noted or [], None
    if problems:
        raise BadConfiguration("\n".join(problems))


def refuse(message: str) -> None:
    """A bad value: raised at once, or noted for raise_noted_problems()."""
    if _noted is None:
        raise BadConfiguration(message)
    _noted.append(message)


@contextlib.contextmanager
def stop_on_bad_configuration(status: int = 1) -> Iterator[None]:
    """A BadConfiguration becomes its lines on stderr and an exit with `status`: the lines say
    all an operator needs, and the traceback Python would print above them only buries them."""
    try:
        yield
    except BadConfiguration as error:
        print(error, file=sys.stderr, flush=True)
        raise SystemExit(status) from None


def _raw(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _bad(name: str, value: str, expected: str, default: T) -> T:
    refuse(f"{name}={_shown(value)!r} is not valid: expected {expected}.")
    return default


def _shown(value: str) -> str:
    """`value` with the password of a URL masked: the message goes to logs and terminals."""
    try:
        password = urlsplit(value).password if "@" in value else None
    except ValueError:
        return value
    return value.replace(f":{password}@", ":***@", 1) if password else value


def env_str(name: str, default: str | None = None) -> str | None:
    value = _raw(name)
    return default if value is None else value


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    return _bad(name, value, "one of 1/0, true/false, yes/no, on/off", default)


def env_int(name: str, default: int | None, *, minimum: int | None = None, maximum: int | None = None) -> int | None:
    bounds = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
    return _number(
        name,
        default,
        int,
        "a whole number",
        lambda n: (minimum is None or n >= minimum) and (maximum is None or n <= maximum),
        f"a whole number {bounds}",
    )


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    return _number(
        name, default, float, "a number of seconds", lambda n: n > minimum, f"a number greater than {minimum:g}"
    )


def _number(
    name: str, default: T, kind: Callable[[str], T], expected: str, in_range: Callable[[T], bool], in_range_text: str
) -> T:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = kind(value)
    except ValueError:
        return _bad(name, value, expected, default)
    if not in_range(number):
        return _bad(name, value, in_range_text, default)
    return number


def env_usd(name: str, default: Decimal | None) -> Decimal | None:
    """An amount of US dollars, e.g. 25 or 0.50 (at most 6 decimals)."""
    value = _raw(name)
    if value is None:
        return default
    try:
        amount = Decimal(value.removeprefix("$"))
    except InvalidOperation:
        return _bad(name, value, "an amount of US dollars, e.g. 25 or 0.50", default)
    if not amount.is_finite() or amount < 0 or amount != amount.quantize(Decimal("0.000001")):
        return _bad(name, value, "a non-negative amount of US dollars with at most 6 decimals", default)
    return amount


def env_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    value = _raw(name)
    if value is None:
        return default
    if value.lower() not in choices:
        return _bad(name, value, "one of " + ", ".join(choices), default)
    return value.lower()


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def env_header_names(name: str, *, never: frozenset[str]) -> tuple[str, ...]:
    """Comma-separated HTTP header names, lowercased; none of `never`."""
    names = tuple(item.lower() for item in env_list(name, []))
    for header in names:
        if not _HEADER_NAME.fullmatch(header):
            return _bad(name, header, "comma-separated HTTP header names", ())
        if header in never:
            refuse(
                f"{name} names {header}, which the gateway never forwards (its own credentials, "
                "the caller's Authorization and cookies, and per-hop headers stay at the gateway)."
            )
            return ()
    return names


def env_url(name: str, *, schemes: tuple[str, ...] = ("http", "https"), query: bool = False) -> str | None:
    """An absolute URL with one of `schemes`, returned without a trailing slash (a query
    string only where `query` allows one)."""
    value = _raw(name)
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.netloc or (parts.query and not query) or parts.fragment:
        without = "fragment" if query else "query or fragment"
        return _bad(name, value, f"an absolute {'/'.join(schemes)} URL without {without}", None)
    return value if parts.query else value.rstrip("/")
