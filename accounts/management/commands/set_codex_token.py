import json
import sys
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.codex import session_expiry
from accounts.management.commands.create_api_key import account_for
from accounts.models import CodexCredential


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
            payload = {"access_token": options["access_token"], "refresh_token": options["refresh_token"] or ""}
        else:
            payload = _read_tokens(sys.stdin.read())
        now = timezone.now()
        if options["expires_in"] is not None:
            payload["expires_in"] = options["expires_in"]
        expires_at = _parse_time(options["expires_at"]) if options["expires_at"] else None
        expires_at = expires_at or session_expiry(payload, payload["access_token"], now)
        account = account_for(user_id, stderr=self.stderr)
        CodexCredential.objects.update_or_create(
            account=account,
            defaults={
                "access_token": payload["access_token"],
                "refresh_token": payload.get("refresh_token") or "",
                "expires_at": expires_at,
                "last_refresh_error": "",
            },
        )
        self.stdout.write(f"Stored the Codex session of {user_id}, expiring {expires_at:%Y-%m-%d %H:%M %Z}.")


def _read_tokens(text: str) -> dict:
    text = text.strip()
    if not text:
        raise CommandError("No token given: pipe it on standard input, or use --access-token.")
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            raise CommandError("Standard input looks like JSON but does not parse.") from None
        tokens = document.get("tokens") if isinstance(document.get("tokens"), dict) else document
        if not isinstance(tokens.get("access_token"), str):
            raise CommandError("The JSON has no access_token (nor tokens.access_token).")
        return {**tokens, **{k: document[k] for k in ("expires_in", "expires_at") if k in document}}
    lines = text.splitlines()
    return {"access_token": lines[0].strip(), "refresh_token": lines[1].strip() if len(lines) > 1 else ""}


def _parse_time(value: str) -> datetime:
    parsed = parse_datetime(value)
    if parsed is None:
        raise CommandError(f"--expires-at {value!r} is not an ISO 8601 time.")
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, timezone.UTC)
