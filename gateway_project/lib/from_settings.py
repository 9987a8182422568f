"""Values the request path derives from settings, held until a setting changes.

Django's settings object costs ~0.7 µs a read (`LazyObject.__getattribute__` runs in Python
on every attribute), and the relay read a dozen of them on every call. A function decorated
with `held` runs once; what it returned is forgotten whenever a setting changes
(`override_settings`, pytest-django's `settings` fixture: Django's `setting_changed` signal).
"""

import functools
from collections.abc import Callable
from typing import TypeVar

from django.core.signals import setting_changed

T = TypeVar("T")


def held(function: Callable[[], T]) -> Callable[[], T]:
    cached = functools.cache(function)

    def forget(**kwargs) -> None:
        cached.cache_clear()

    setting_changed.connect(forget, weak=False)
    return cached
