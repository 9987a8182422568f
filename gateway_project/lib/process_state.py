"""What a worker remembers between requests (caches, recent refusals, a service's health),
forgotten in one call.

Each module that keeps such state registers how to forget it (`on_reset`); `reset()` makes
the process behave as if freshly started, as tests need between two of them. Per-loop
resources (pools, clients) are not state in this sense: they are closed, not forgotten.
"""

from collections.abc import Callable

_resetters: list[Callable[[], None]] = []


def on_reset(forget: Callable[[], None]) -> Callable[[], None]:
    """Have reset() call `forget` (usable as a decorator)."""
    _resetters.append(forget)
    return forget


def reset() -> None:
    """Forget everything registered: the process's memory as at start-up."""
    for forget in _resetters:
        forget()
