"""The error contract shared by every part of the gateway: OpenAI's error shape.

Every OpenAI SDK turns `{"error": {"message", "type", "code", "param"}}` with the right
status into its own exception (RateLimitError, AuthenticationError, ...), so callers see
the message as-is.
"""

import re

from django.conf import settings
from django.http import JsonResponse


class GatewayError(Exception):
    """A refusal or failure the caller should see, raised by any step of the pipeline."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.type = type
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.code, self.message, type=self.type)

    def response(self) -> JsonResponse:
        return JsonResponse(self.body(), status=self.status, headers=self.headers)


def error_body(code: str, message: str, *, type: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": type, "code": code, "param": None}}


def service_unavailable(message: str) -> GatewayError:
    """A service the request needs (the database) is down: 503, never a 500 or a silent pass."""
    return GatewayError(503, "service_unavailable", message, type="server_error")


_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]+@")


def for_operators(error: BaseException) -> str:
    """An error as the process log tells it: the class and text of what failed underneath
    (a refusal written for callers gives way to its cause), the database password masked.

    Drivers' messages (the text, not only the class) are what tells "connection refused"
    from "prepared statement already exists"; none is known to carry a password, but a
    DSN in an error must not put one in the log.
    """
    while isinstance(error, GatewayError) and error.__cause__ is not None:
        error = error.__cause__
    if isinstance(error, GatewayError):
        return f"{error.status} {error.code}"
    text = _URL_PASSWORD.sub(r"\1***@", f"{type(error).__name__}: {error}")
    password = settings.DATABASES["default"].get("PASSWORD")
    return text.replace(password, "***") if password else text
