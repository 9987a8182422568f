"""Settings the request path reads, as plain values held until a setting changes.

Django's settings object costs ~0.5-0.7 µs a read (`LazyObject.__getattribute__` runs in
Python on every attribute), and a call read dozens. `get(name)` keeps a setting's value from
its first read; a function decorated with `held` (a value derived from settings) runs once.
Both are forgotten whenever Django announces a change (`setting_changed`: `override_settings`,
pytest-django's `settings` fixture), so a changed setting is seen at once.
"""

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from django.core.signals import setting_changed

T = TypeVar("T")

_values: dict[str, Any] = {}


def get(name: str) -> Any:
    try:
        return _values[name]
    except KeyError:
        value = _values[name] = getattr(settings, name)
        return value


def held(function: Callable[[], T]) -> Callable[[], T]:
    cached = functools.cache(function)

    def forget(**kwargs) -> None:
        cached.cache_clear()

    setting_changed.connect(forget, weak=False)
    return cached


def _forget(*, setting: str, **kwargs: Any) -> None:
    _values.pop(setting, None)


setting_changed.connect(_forget, dispatch_uid="gateway_project.lib.from_settings")
