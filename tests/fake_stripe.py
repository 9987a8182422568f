"""Stripe's API as the SDK sees it, served on loopback: the SDK's real calls are recorded here.

Checkout and Billing Portal sessions are created as Stripe creates them; prices added with
`add_price()` are answered to GET /v1/prices/<id>. Like Stripe, a
repeated idempotency key gets the first answer again (or an idempotency_error when the
parameters differ). The URLs it returns lead to small pages of its own, so a browser can
follow the whole way. Failures are queued with `fail()`; they are answered before the
idempotency layer (as a load balancer in front of Stripe would), so a retry can succeed.
"""

import html
import itertools
import json
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from gateway_project.stub_upstream import read_body


@dataclass
class StripeCall:
    method: str
    path: str
    headers: dict[str, str]
    # The form body as the SDK sends it: nested keys bracketed, e.g. "line_items[0][price]".
    form: dict[str, str]

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


@dataclass
class _Failure:
    status: int
    error: dict
    retry: bool | None


@dataclass
class FakeStripe:
    url: str = ""
    calls: list[StripeCall] = field(default_factory=list)
    # The session objects created, by id.
    sessions: dict[str, dict] = field(default_factory=dict)
    # The price objects Stripe knows, by id.
    prices: dict[str, dict] = field(default_factory=dict)
    _failures: list[_Failure] = field(default_factory=list)
    _replies: dict[str, tuple[dict[str, str], int, dict]] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.sessions.clear()
            self.prices.clear()
            self._failures.clear()
            self._replies.clear()
            self._ids = itertools.count(1)

    def fail(self, status: int = 500, error: dict | None = None, *, times: int = 1, retry: bool | None = None) -> None:
        """Answer the next `times` API calls with `status` and a Stripe error body; `retry`
        sets Stripe-Should-Retry (False: the SDK gives up at once, whatever the status)."""
        error = error or {"type": "api_error", "message": "Something went wrong on Stripe's end."}
        with self._lock:
            self._failures.extend(_Failure(status, error, retry) for _ in range(times))

    def add_price(
        self, price_id: str, unit_amount: int | None, currency: str = "usd", interval: str | None = "month", count=1
    ) -> None:
        """A price as Stripe returns it: `unit_amount` in the currency's smallest unit (None:
        tiered), recurring every `count` `interval`s (None: a one-time price)."""
        recurring = {"interval": interval, "interval_count": count, "usage_type": "licensed"} if interval else None
        self.prices[price_id] = {
            "id": price_id,
            "object": "price",
            "active": True,
            "currency": currency,
            "unit_amount": unit_amount,
            "unit_amount_decimal": None if unit_amount is None else str(unit_amount),
            "billing_scheme": "per_unit" if unit_amount is not None else "tiered",
            "recurring": recurring,
            "type": "recurring" if interval else "one_time",
            "livemode": False,
        }

    def calls_to(self, path: str) -> list[StripeCall]:
        return [call for call in self.calls if call.path == path]

    def checkouts(self) -> list[StripeCall]:
        """The calls that asked for a Checkout Session, in order (retries and repeats included)."""
        return self.calls_to("/v1/checkout/sessions")

    def portals(self) -> list[StripeCall]:
        return self.calls_to("/v1/billing_portal/sessions")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        method, path = scope["method"], scope["path"]
        host, port = scope["server"]
        base = f"http://{host}:{port}"
        if method == "GET" and path.startswith(("/c/pay/", "/p/session/")):
            await _page(send, self.sessions.get(path.rsplit("/", 1)[-1]))
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        form = dict(parse_qsl(body.decode(), keep_blank_values=True))
        self.calls.append(StripeCall(method, path, headers, form))
        status, reply, extra = self._answer(method, path, headers, form, base)
        await _json(send, status, reply, {"request-id": f"req_fake_{len(self.calls)}", **extra})

    def _answer(self, method: str, path: str, headers: dict, form: dict, base: str) -> tuple[int, dict, dict]:
        if not headers.get("authorization", "").startswith("Bearer sk_"):
            return 401, {"error": {"type": "invalid_request_error", "message": "You did not provide an API key."}}, {}
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            extra = {} if failure.retry is None else {"stripe-should-retry": str(failure.retry).lower()}
            return failure.status, {"error": failure.error}, extra
        if method == "GET" and path.startswith("/v1/prices/"):
            price_id = path.removeprefix("/v1/prices/")
            if price_id not in self.prices:
                missing = {"type": "invalid_request_error", "code": "resource_missing"}
                return 404, {"error": {**missing, "message": f"No such price: '{price_id}'"}}, {}
            return 200, self.prices[price_id], {}
        create = {"/v1/checkout/sessions": self._checkout, "/v1/billing_portal/sessions": self._portal}.get(path)
        if method != "POST" or create is None:
            message = f"Unrecognized request URL ({method}: {path})."
            return 404, {"error": {"type": "invalid_request_error", "message": message}}, {}
        key = headers.get("idempotency-key")
        with self._lock:
            if key in self._replies:
                first_form, status, reply = self._replies[key]
                if first_form != form:
                    message = "Keys for idempotent requests can only be used with the same parameters."
                    return 400, {"error": {"type": "idempotency_error", "message": message}}, {}
                return status, reply, {"idempotent-replayed": "true"}
            reply = create(form, base, next(self._ids))
            self.sessions[reply["id"]] = reply
            if key:
                self._replies[key] = (form, 200, reply)
        return 200, reply, {}

    @staticmethod
    def _checkout(form: dict, base: str, number: int) -> dict:
        session_id = f"cs_test_{number}"
        return {
            "id": session_id,
            "object": "checkout.session",
            "url": f"{base}/c/pay/{session_id}",
            "mode": form.get("mode"),
            "status": "open",
            "payment_status": "unpaid",
            "client_reference_id": form.get("client_reference_id"),
            "customer": form.get("customer"),
            "customer_email": form.get("customer_email"),
            "metadata": _nested(form, "metadata"),
            "success_url": form.get("success_url"),
            "cancel_url": form.get("cancel_url"),
            "livemode": False,
        }

    @staticmethod
    def _portal(form: dict, base: str, number: int) -> dict:
        session_id = f"bps_{number}"
        return {
            "id": session_id,
            "object": "billing_portal.session",
            "url": f"{base}/p/session/{session_id}",
            "customer": form.get("customer"),
            "return_url": form.get("return_url"),
            "livemode": False,
        }


def _nested(form: dict[str, str], name: str) -> dict[str, str]:
    """`name[key]=value` fields as {key: value}."""
    prefix = f"{name}["
    return {k[len(prefix) : -1]: v for k, v in form.items() if k.startswith(prefix) and k.count("[") == 1}


async def _json(send, status: int, payload: dict, extra: dict[str, str]) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json")]
    headers += [(k.encode(), v.encode()) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _page(send, session: dict | None) -> None:
    if session is None:
        status, title, text = 404, "Fake Stripe", "<p>No such session.</p>"
    elif session["object"] == "checkout.session":
        status, title = 200, "Fake Stripe Checkout"
        text = f"<p><a id='pay' href='{html.escape(session['success_url'] or '')}'>Pay and return</a></p>"
    else:
        status, title = 200, "Fake Stripe Billing Portal"
        text = f"<p><a id='return' href='{html.escape(session['return_url'] or '')}'>Return</a></p>"
    if session is not None:
        text = f"<p id='session'>{html.escape(session['id'])}</p>{text}"
    body = (
        f"<!doctype html><html><head><title>{title}</title></head><body><h1>{title}</h1>{text}</body></html>"
    ).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/html")]})
    await send({"type": "http.response.body", "body": body})
