"""Settings read on every request, as plain values.

A read through `django.conf.settings` goes through `LazyObject.__getattribute__`, in Python:
~0.5 µs here, against ~0.1 µs for `get()` below. A value is kept from its first read until
Django announces a change of that setting (`setting_changed`: `override_settings`, and
pytest-django's `settings` fixture, which tests use), so a changed setting is seen at once.
"""

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

_values: dict[str, Any] = {}


def get(name: str) -> Any:
    try:
        return _values[name]
    except KeyError:
        value = _values[name] = getattr(settings, name)
        return value


def _forget(*, setting: str, **kwargs: Any) -> None:
    _values.pop(setting, None)


setting_changed.connect(_forget, dispatch_uid="gateway_project.lib.hot_settings")
