import sys
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.codex import checked_tokens, read_tokens, session_expiry, store_session
from accounts.management.commands.create_api_key import account_for


class Command(BaseCommand):
    help = (
        "Store USER_ID's Codex OAuth session (encrypted). Reads standard input: an access token, "
        "optionally a refresh token on the next line, or a token response / Codex auth.json as JSON. "
        "Expiry: --expires-in or --expires-at, else from the JSON or the token's own exp claim."
    )

    def add_arguments(self, parser):
        parser.add_argument("user_id")
        parser.add_argument("--access-token", help="instead of stdin (visible to other users in ps: avoid)")
        parser.add_argument("--refresh-token", help="instead of stdin (visible to other users in ps: avoid)")
        parser.add_argument("--expires-in", type=int, help="seconds from now")
        parser.add_argument("--expires-at", help="ISO 8601 time, e.g. 2030-01-31T12:00:00Z")

    def handle(self, *args, user_id: str, **options):
        if options["access_token"]:
            try:
                payload = checked_tokens(
                    {"access_token": options["access_token"], "refresh_token": options["refresh_token"] or ""}
                )
            except ValueError as error:
                raise CommandError(str(error)) from None
        else:
            try:
                payload = read_tokens(sys.stdin.read())
            except ValueError as error:
                raise CommandError(f"{error} Pipe the token, or the auth.json, on standard input.") from None
        now = timezone.now()
        if options["expires_in"] is not None:
            payload["expires_in"] = options["expires_in"]
        if options["expires_at"]:
            expires_at = _parse_time(options["expires_at"])
        else:
            try:  # before the account is created: a refusal leaves nothing behind
                expires_at = session_expiry(payload, payload["access_token"], now)
            except ValueError as error:  # an --expires-in beyond what a datetime holds
                raise CommandError(str(error)) from None
        account = account_for(user_id, stderr=self.stderr)
        credential = store_session(account, payload, now, expires_at)
        expires_at = credential.expires_at
        self.stdout.write(f"Stored the Codex session of {user_id}, expiring {expires_at:%Y-%m-%d %H:%M %Z}.")


def _parse_time(value: str) -> datetime:
    try:
        parsed = parse_datetime(value)
    except ValueError:  # well formed, but no date: month 13, day 32
        parsed = None
    if parsed is None:
        raise CommandError(f"--expires-at {value!r} is not an ISO 8601 time.")
    if not 1970 <= parsed.year <= 2999:  # year 1 or 9999 overflow once moved to UTC
        raise CommandError(f"--expires-at {value!r} is not a time from 1970 to 2999.")
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, timezone.UTC)
