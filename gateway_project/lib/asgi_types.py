"""The ASGI interface's types, for the gateway's own ASGI layers.

Stdlib only: request_ids uses them, and settings.LOGGING imports it while Django sets itself up.
"""

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
