"""Pins: an account, or a plan, sent to an upstream of its own (a customer's own bridge)
first. Stored as the upstream's name: upstreams belong to `proxy`, which `accounts` does
not import, so proxy tells this module which names exist (`known_upstreams`)."""

from collections.abc import Callable

from django.core.exceptions import ValidationError
from django.db import models

# Set by proxy when it starts: the names of the upstreams a pin may name.
known_upstreams: Callable[[], set[str]] | None = None

MAX_LENGTH = 64


def validate_pin(name: str) -> None:
    if not name or known_upstreams is None:
        return
    names = known_upstreams()
    if name not in names:
        listed = ", ".join(sorted(names)) or "none yet; add one under Upstreams"
        raise ValidationError(f"No upstream is named {name!r}. Upstreams: {listed}.", code="unknown_upstream")


HELP_TEXT = (
    "The name of an upstream this caller's calls go to first (a customer's own bridge); "
    "then the model's route. Empty: the route only."
)


def pinned_upstream_field() -> models.CharField:
    """The pin of an account or a plan: an upstream's name, "" for none."""
    return models.CharField(
        max_length=MAX_LENGTH,
        blank=True,
        # Rows written by code that predates the column (old workers during a deploy, raw SQL) get "".
        default="",
        db_default="",
        validators=[validate_pin],
        help_text=HELP_TEXT,
    )
