import re

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, URLValidator
from django.db import models

from accounts.fields import EncryptedTextField
from proxy.routes import DEFAULT_PROBE, DEFAULT_UPSTREAM

DEFAULT_RETRIES = 2
MAX_RETRIES = 10
TIMEOUT_RANGE = [MinValueValidator(0.1), MaxValueValidator(3600)]


# An upstream's timeouts, as the admin form and routes files list them.
UPSTREAM_TIMEOUTS = ("connect_timeout", "first_byte_timeout", "first_event_timeout", "idle_timeout")


def _timeout(help_text: str) -> models.FloatField:
    """One of an upstream's timeouts, in seconds; empty: the gateway's setting."""
    return models.FloatField(null=True, blank=True, validators=TIMEOUT_RANGE, help_text=help_text)


# Headers an upstream's extra headers may not set: credentials go in its encrypted API key.
CREDENTIAL_HEADERS = frozenset(("authorization", "proxy-authorization", "api-key", "x-api-key", "cookie"))
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,100}")
# A probe: a method and a path appended to the base URL, as calls are.
PROBE_FORMAT = re.compile(r"(GET|HEAD|OPTIONS|POST) /[!-~]{0,190}")


class RequestLog(models.Model):
    """One row per /v1 request, refused ones included: the gateway's access log.

    Holds no secrets and no raw IP: `ip_hash` is a keyed hash of the client address.
    """

    user_id = models.CharField(max_length=128, help_text="Empty when the caller could not be identified.")
    method = models.CharField(max_length=16)
    endpoint = models.CharField(max_length=255, help_text="The request path, without query string.")
    status = models.PositiveSmallIntegerField(
        help_text="Status sent to the client; 499 when the client left, 502/504 when the upstream broke mid-stream."
    )
    latency_ms = models.PositiveIntegerField(help_text="From arrival to the last byte sent.")
    # Usage as the upstream reported it. NULL is unknown (a model call whose response
    # carried no usage), never 0; refusals and reads are 0.
    input_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="Input (prompt) tokens, cached ones included; empty: unknown."
    )
    cached_input_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="Of the input tokens, those read from the provider's cache; empty: unknown."
    )
    output_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="Output (completion) tokens, reasoning included; empty: unknown."
    )
    total_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="usage.total_tokens reported by the upstream; empty: unknown."
    )
    cost_pico_usd = models.BigIntegerField(
        "cost (pico-USD)",
        null=True,
        blank=True,
        help_text="In 10⁻¹² USD, from the usage and the model's price at the call's time; "
        "empty: unknown (no price, or unknown usage).",
    )
    model = models.CharField(max_length=128, blank=True)
    ip_hash = models.CharField(max_length=8)
    created_at = models.DateTimeField(help_text="When the request arrived.")
    request_id = models.CharField(
        max_length=64,
        blank=True,
        db_index=False,
        # Rows inserted by a worker that predates this column (a deploy's old workers
        # still running after migrate) get '' rather than failing NOT NULL.
        default="",
        db_default="",
        help_text="X-Request-ID: the caller's when well-formed, else one the gateway made; "
        "sent upstream and returned to the caller.",
    )
    upstream = models.CharField(
        max_length=64,
        blank=True,
        default="",
        db_default="",
        help_text="The upstream that answered the call; empty for the gateway's own refusals "
        "and for calls no upstream answered (unreachable, or silent until the timeout).",
    )
    attempts = models.PositiveSmallIntegerField(
        default=0,
        db_default=0,
        help_text="Attempts made on upstreams for the call, retries and fail-overs included "
        "(failed ones are never billed); 0 when the gateway answered itself.",
    )

    class Meta:
        db_table = "requests"
        indexes = [
            models.Index(fields=["user_id", "created_at"], name="requests_user_created"),
            # Time windows of the dashboard, the admin's date filters and first/last dates.
            models.Index(fields=["created_at"], name="requests_created"),
            # Exact lookup of one request by its id (admin search, a trainee's complaint).
            models.Index(fields=["request_id"], name="requests_request_id"),
        ]
        verbose_name = "request"

    def __str__(self) -> str:
        return f"{self.method} {self.endpoint} → {self.status}"


class UserSummary(models.Model):
    """Per user of the access log, pruned rows included: the SQL view `user_summary`, over
    the per-user rollups (billing.UserTotal) since migration proxy 0007, for ad-hoc SQL too.
    """

    id = models.BigIntegerField(primary_key=True)
    user_id = models.CharField(max_length=128)
    requests = models.BigIntegerField()
    errors = models.BigIntegerField(help_text="Requests answered with a status of 400 or more.")
    rate_limited = models.BigIntegerField(help_text="Requests refused with 429.")
    over_quota = models.BigIntegerField(help_text="Requests refused with 402.")
    total_tokens = models.BigIntegerField(help_text="Tokens of the calls whose usage is known.")
    unknown_usage_requests = models.BigIntegerField(help_text="Calls whose usage the upstream never reported.")
    cost_pico_usd = models.BigIntegerField("cost (pico-USD)", help_text="Cost of the calls whose cost is known.")
    unknown_cost_requests = models.BigIntegerField(help_text="Calls whose cost is unknown.")
    avg_latency_ms = models.FloatField()
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        managed = False
        db_table = "user_summary"
        verbose_name = "user summary"
        verbose_name_plural = "user summaries"

    def __str__(self) -> str:
        return self.user_id or "(unidentified)"


class Upstream(models.Model):
    """A named place calls are relayed to (a bridge, OpenAI, OpenRouter), as routes name it.

    The operator's API key is stored encrypted (GATEWAY_ENCRYPTION_KEYS) and never shown again.
    """

    class Auth(models.TextChoices):
        CALLER = "caller", "the caller's credential (as AUTH_MODE sends it)"
        API_KEY = "api_key", "the operator's API key"
        NONE = "none", "none"

    name = models.SlugField(
        max_length=64, unique=True, help_text="How routes, pins and the access log name it: letters, digits, - and _."
    )
    base_url = models.CharField(
        "base URL",
        max_length=500,
        validators=[URLValidator(schemes=["http", "https"])],
        help_text="The URL the /v1/... path is appended to, as OPENCLAW_URL.",
    )
    auth = models.CharField(max_length=16, choices=Auth.choices, default=Auth.CALLER)
    api_key = EncryptedTextField("API key", blank=True, help_text="Sent as Authorization: Bearer with auth api_key.")
    headers = models.JSONField(
        default=dict, blank=True, help_text='Extra headers sent with every call, e.g. {"X-Title": "Workshop"}.'
    )
    connect_timeout = _timeout("Seconds; empty: UPSTREAM_CONNECT_TIMEOUT.")
    first_byte_timeout = _timeout("Seconds from sending to the response headers; empty: UPSTREAM_TIMEOUT.")
    first_event_timeout = _timeout("Seconds from a stream's headers to its first event; empty: UPSTREAM_TIMEOUT.")
    idle_timeout = _timeout("Seconds of silence allowed between two chunks; empty: UPSTREAM_TIMEOUT.")
    retries = models.PositiveSmallIntegerField(
        default=DEFAULT_RETRIES,
        validators=[MaxValueValidator(MAX_RETRIES)],
        help_text="Further attempts on this upstream after a failure worth retrying, before the next target.",
    )
    enabled = models.BooleanField(default=True, help_text="Off: routes and pins skip it.")
    probe = models.CharField(
        max_length=200,
        blank=True,
        default=DEFAULT_PROBE,
        help_text="The cheap request sent every UPSTREAM_PROBE_SECONDS to see whether it is up (a method and the path "
        "appended to the base URL, with its credential and extra headers); any status below 500 means up. "
        "Empty: never probed.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.name == DEFAULT_UPSTREAM:
            raise ValidationError({"name": f"{DEFAULT_UPSTREAM!r} is the upstream at OPENCLAW_URL; choose another."})
        self.base_url = (self.base_url or "").rstrip("/")
        problem = header_problem(self.headers)
        if problem:
            raise ValidationError({"headers": problem})
        if self.auth == self.Auth.API_KEY and not self.api_key:
            raise ValidationError({"api_key": "auth api_key needs an API key."})
        self.probe = " ".join((self.probe or "").split())
        if self.probe and not PROBE_FORMAT.fullmatch(self.probe):
            raise ValidationError({"probe": 'A method (GET, HEAD, OPTIONS or POST) and a path, e.g. "GET /v1/models".'})


class Route(models.Model):
    """Where calls of a model go: its targets, in order of priority."""

    model = models.CharField(
        max_length=128,
        unique=True,
        help_text="A model name (also covers its dated snapshots, e.g. gpt-4o covers gpt-4o-2024-08-06), "
        "or * for every model no other route names.",
    )

    class Meta:
        ordering = ["model"]

    def __str__(self) -> str:
        return self.model


class RouteTarget(models.Model):
    class Continuation(models.TextChoices):
        OFF = "", "no"
        PREFILL = "prefill", "prefill: continues the text sent as an assistant message"
        RESTART = "restart", "restart: the same request again, relayed past the text already sent"

    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="targets")
    upstream = models.ForeignKey(Upstream, on_delete=models.PROTECT, related_name="targets")
    model = models.CharField(
        "model to send", max_length=128, blank=True, help_text="Empty: the model the caller asked for."
    )
    priority = models.PositiveSmallIntegerField(
        default=1, help_text="Lower first; the next priority serves when every target before it failed."
    )
    weight = models.PositiveIntegerField(
        default=1, validators=[MinValueValidator(1)], help_text="Share of the calls among targets of one priority."
    )
    continuation = models.CharField(
        max_length=16,
        choices=Continuation.choices,
        blank=True,
        default=Continuation.OFF,
        db_default="",
        help_text="A chat stream an earlier target broke off after it started may be finished here.",
    )

    class Meta:
        ordering = ["route", "priority", "id"]
        constraints = [
            models.UniqueConstraint(fields=["route", "upstream", "model"], name="route_target_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.upstream} ({self.model or 'caller’s model'})"


class UpstreamHealth(models.Model):
    """What the gateway knows of an upstream's health, by name (the implicit `default` too):
    its circuit breaker as last changed by any process, and its last probe. proxy.health
    writes it with raw SQL, off the request's path."""

    name = models.CharField(max_length=64, unique=True)
    state = models.CharField(max_length=8, default="closed", db_default="closed")
    # When the breaker last opened or closed, and while open the end of its cool-down.
    state_since = models.DateTimeField(null=True, blank=True)
    open_until = models.DateTimeField(null=True, blank=True)
    # When the last probe started: also the lease that lets one process probe per interval.
    probed_at = models.DateTimeField(null=True, blank=True)
    probe_ok = models.BooleanField(null=True, blank=True)
    probe_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True, default="", db_default="")
    last_error_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "upstream health"
        verbose_name_plural = "upstream health"

    def __str__(self) -> str:
        return f"{self.name}: {self.state}"


class UpstreamMinute(models.Model):
    """Attempts on an upstream in one minute with latencies in one bucket (proxy.health):
    the last minutes' error rate, latency and traffic. Rows older than an hour are pruned."""

    upstream = models.CharField(max_length=64)
    minute = models.DateTimeField(help_text="The minute's start.")
    latency_le_ms = models.PositiveIntegerField(help_text="The bucket's upper bound, in milliseconds.")
    calls = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["upstream", "minute", "latency_le_ms"], name="upstream_minute_unique"),
        ]
        indexes = [models.Index(fields=["minute"], name="upstream_minute_minute")]


def header_problem(headers: object) -> str | None:
    """What is wrong with an upstream's extra headers, or None."""
    if not isinstance(headers, dict):
        return "Headers must be an object of header names to values."
    for name, value in headers.items():
        if not isinstance(value, str) or not _HEADER_NAME.fullmatch(name) or not value.isascii():
            return f"Header {name!r}: a header name (letters, digits, -) and a text value in ASCII."
        if name.lower() in CREDENTIAL_HEADERS:
            return f"Header {name!r} carries a credential: use auth api_key (stored encrypted) instead."
    return None
