from django.db import models


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
    tokens = models.BigIntegerField(help_text="Tokens of the calls whose usage is known.")
    unknown_usage = models.BigIntegerField(help_text="Calls whose usage the upstream never reported.")
    cost_pico_usd = models.BigIntegerField("cost (pico-USD)", help_text="Cost of the calls whose cost is known.")
    unknown_cost = models.BigIntegerField(help_text="Calls whose cost is unknown.")
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
