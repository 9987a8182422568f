"""Where a call may go: named upstreams, and routes from a model name to ordered targets.

With only OPENCLAW_URL set and no routes, every model goes to the implicit `default`
upstream at that URL, exactly as a single-upstream gateway does.
"""

from dataclasses import dataclass

from django.conf import settings

# The name the access log and routes give the upstream at OPENCLAW_URL.
DEFAULT_UPSTREAM = "default"


@dataclass(frozen=True, slots=True)
class Upstream:
    """An upstream as a worker holds it in memory (secrets decrypted, never logged)."""

    name: str
    base_url: str
    # "caller": the caller's credential as a single-upstream gateway sends it (their
    # Authorization, or their stored Codex session under AUTH_MODE=codex); "api_key": the
    # operator's key, sent as `Authorization: Bearer`; "none": no credential.
    auth: str
    api_key: str | None
    # Extra headers sent with every call (e.g. OpenRouter's HTTP-Referer / X-Title).
    headers: tuple[tuple[str, str], ...]
    connect_timeout: float
    # Response headers must arrive within this many seconds of the request being sent.
    first_byte_timeout: float
    # A stream's first event must arrive within this many seconds of its headers.
    first_event_timeout: float
    # The longest silence allowed between two chunks once the answer has started.
    idle_timeout: float
    # Further attempts on this upstream after a failure worth retrying.
    retries: int

    def __repr__(self) -> str:  # never the key
        return f"Upstream({self.name!r}, {self.base_url!r}, auth={self.auth!r})"


@dataclass(frozen=True, slots=True)
class Target:
    upstream: Upstream
    # The model name to send; None: the caller's, as they sent it.
    model: str | None = None


def default_upstream() -> Upstream | None:
    """The implicit upstream at OPENCLAW_URL, or None when it is unset."""
    if not settings.OPENCLAW_URL:
        return None
    return Upstream(
        name=DEFAULT_UPSTREAM,
        base_url=settings.OPENCLAW_URL,
        auth="caller",
        api_key=None,
        headers=(),
        connect_timeout=settings.UPSTREAM_CONNECT_TIMEOUT,
        first_byte_timeout=settings.UPSTREAM_TIMEOUT,
        first_event_timeout=settings.UPSTREAM_TIMEOUT,
        idle_timeout=settings.UPSTREAM_TIMEOUT,
        retries=0,
    )


async def targets_for(model: str, *, pin: str | None = None) -> list[Target]:
    """The targets a call of `model` tries, in order (a pinned upstream first). Empty when
    nothing can serve it."""
    upstream = default_upstream()
    return [Target(upstream)] if upstream is not None else []
