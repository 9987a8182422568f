"""Which upstream path a /v1 request maps to, refusing any that could leave /v1/."""

import re
from urllib.parse import quote, unquote

from django.http import HttpRequest

from gateway_project.lib.errors import GatewayError

PREFIX = "/v1/"
# Encoded slashes or backslashes would become separators after one more decoding.
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c)", re.IGNORECASE)
_PRINTABLE_ASCII = re.compile(r"[!-~]*")


def upstream_path(request: HttpRequest) -> str:
    """The path and query to request upstream, exactly as the client encoded them.

    Refuses dot segments (plain or percent-encoded), encoded separators, empty
    segments and anything outside printable ASCII, so nothing the upstream or a
    proxy in between normalises can land outside /v1/.
    """
    raw = _raw_path(request)
    rest = raw[len(PREFIX) :] if raw.startswith(PREFIX) else None
    if rest is None or not _PRINTABLE_ASCII.fullmatch(raw) or _ENCODED_SEPARATOR.search(rest) or "\\" in rest:
        raise _invalid_path()
    segments = rest.split("/")
    for position, segment in enumerate(segments):
        decoded = unquote(segment)
        is_last = position == len(segments) - 1
        if decoded in (".", "..") or (not segment and not is_last) or not decoded.isprintable():
            raise _invalid_path()
    query = request.META.get("QUERY_STRING", "")
    return f"{raw}?{query}" if query else raw


def _raw_path(request: HttpRequest) -> str:
    scope = getattr(request, "scope", None) or {}
    raw = scope.get("raw_path")
    if raw is None:
        return quote(request.path, safe="/%:@!$&'()*+,;=-._~")
    return raw.decode("latin-1").split("?", 1)[0]


def _invalid_path() -> GatewayError:
    return GatewayError(
        400,
        "invalid_path",
        "The request path is not a valid /v1/ API path: it may not contain '.' or '..' "
        "segments, encoded slashes or empty segments.",
    )
