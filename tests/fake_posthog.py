"""PostHog's capture endpoint as the SDK sees it, served on loopback: every batch the SDK
posts is recorded here, decompressed, with the answer it got.

`status` is the answer to every post (200 by default). `hold()` makes the next post wait,
unanswered, until the test calls `release()`: while the SDK's consumer thread waits on it,
the test can show what the gateway does meanwhile.
"""

import asyncio
import gzip
import json
import threading
from dataclasses import dataclass, field

from gateway_project.stub_upstream import read_body


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    # The body as posted, decompressed when the SDK gzipped it.
    body: bytes
    status: int = 0

    @property
    def events(self) -> list[dict]:
        return json.loads(self.body)["batch"]


@dataclass
class FakePostHog:
    url: str = ""
    status: int = 200
    posts: list[Post] = field(default_factory=list)
    # Set when a held post has arrived; the post then waits for `_released`.
    held: threading.Event = field(default_factory=threading.Event)
    # Set when a post was answered 200.
    accepted: threading.Event = field(default_factory=threading.Event)
    _hold_next: bool = False
    _released: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hold(self) -> None:
        self._hold_next = True

    def release(self) -> None:
        self._released.set()

    @property
    def events(self) -> list[dict]:
        """Every event PostHog accepted (answered 200), in the order posted."""
        with self._lock:
            return [event for post in self.posts if post.status == 200 for event in post.events]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        post = Post(scope["path"], headers, body)
        if self._hold_next:
            self._hold_next = False
            self.held.set()
            # Bounded, so a test that fails before releasing cannot hold the SDK forever.
            await asyncio.to_thread(self._released.wait, 60)
        post.status = self.status if scope["path"] == "/batch/" else 404
        with self._lock:
            self.posts.append(post)
        if post.status == 200:
            self.accepted.set()
        answer = json.dumps({"status": 1} if post.status == 200 else {"detail": "fake PostHog says no"}).encode()
        response_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": post.status, "headers": response_headers})
        await send({"type": "http.response.body", "body": answer})
