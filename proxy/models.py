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
    tokens_est = models.PositiveIntegerField(default=0, help_text="usage.total_tokens reported by the upstream.")
    model = models.CharField(max_length=128, blank=True)
    ip_hash = models.CharField(max_length=8)
    created_at = models.DateTimeField(help_text="When the request arrived.")

    class Meta:
        db_table = "requests"
        indexes = [models.Index(fields=["user_id", "created_at"], name="requests_user_created")]
        verbose_name = "request"

    def __str__(self) -> str:
        return f"{self.method} {self.endpoint} → {self.status}"
