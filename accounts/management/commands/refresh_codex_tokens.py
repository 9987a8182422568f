from datetime import timedelta

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts.codex import REFRESH_TIMEOUT, refresh_expiring


class Command(BaseCommand):
    help = (
        "Refresh Codex OAuth sessions expiring soon (CODEX_REFRESH_WITHIN seconds). "
        "Exits 1 when any refresh failed. Run from cron every few minutes."
    )

    def add_arguments(self, parser):
        parser.add_argument("--within", type=int, help="seconds ahead to look (default: CODEX_REFRESH_WITHIN)")

    def handle(self, *args, within: int | None, **options):
        if not settings.CODEX_TOKEN_URL:
            raise CommandError("CODEX_TOKEN_URL is not set: there is no token endpoint to refresh against.")
        window = timedelta(seconds=within or settings.CODEX_REFRESH_WITHIN)
        with httpx.Client(timeout=REFRESH_TIMEOUT, trust_env=False) as client:
            report = refresh_expiring(timezone.now(), window, client)
        self.stdout.write(
            f"refreshed {len(report.refreshed)}, failed {len(report.failed)}, "
            f"{report.fresh} not due (expiring later than {window})"
        )
        for user_id, error in report.failed:
            self.stderr.write(f"  {user_id}: {error}")
        if report.failed:
            raise SystemExit(1)
