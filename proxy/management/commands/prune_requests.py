"""Delete access-log rows older than a cut-off, in batches, archiving them first when asked.

    manage.py prune_requests --older-than 90d [--archive requests.jsonl.gz] [--batch-size 5000]

Each batch is archived (and flushed to disk), then deleted in a transaction of its own:
never one huge transaction holding locks on the table the gateway writes to. Monthly usage
lives in its own table, so quotas and the month's counts are unchanged by pruning, and so do
the rollups: summaries outlive the rows. Only whole hours are deleted.
"""

import contextlib
import gzip
import json
import os
import re
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from billing import rollups
from gateway_project.lib.wording import counted
from proxy.models import RequestLog

_AGE = re.compile(r"(\d+)([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}
FIELDS = tuple(field.attname for field in RequestLog._meta.concrete_fields)  # every column, cost included


def parse_age(text: str) -> timedelta:
    match = _AGE.fullmatch(text.strip())
    if not match:
        raise CommandError(f"--older-than {text!r}: expected a number and a unit, e.g. 90d, 12h or 30m.")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


class Command(BaseCommand):
    help = "Delete access-log rows older than --older-than, in batches; archive them first with --archive."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--older-than", required=True, type=parse_age, help="e.g. 90d, 12h, 30m")
        parser.add_argument("--archive", help="append the rows to this .jsonl.gz file before deleting them")
        parser.add_argument("--batch-size", type=int, default=5000)

    def handle(self, *args, older_than: timedelta, archive: str | None, batch_size: int, **options) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        # Whole hours only: an hour's rows are either all in the log or all gone, so the log
        # and the hourly rollups agree on every hour it still holds (billing.rollups).
        cutoff = rollups.hour_of(timezone.now() - older_than)
        old = RequestLog.objects.filter(created_at__lt=cutoff).order_by("id")
        deleted = 0
        # Appending adds a gzip member: the file stays one readable archive across runs.
        with contextlib.ExitStack() as stack:
            raw = stack.enter_context(open(archive, "ab")) if archive else None
            sink = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="ab")) if raw else None
            while batch := list(old.values(*FIELDS)[:batch_size]):
                if sink is not None:
                    sink.write(b"".join(json.dumps(row, cls=DjangoJSONEncoder).encode() + b"\n" for row in batch))
                    sink.flush()
                    os.fsync(raw.fileno())  # archived for sure before it is deleted
                with transaction.atomic():
                    RequestLog.objects.filter(id__in=[row["id"] for row in batch]).delete()
                deleted += len(batch)
        where = f", archived to {archive}" if archive else ""
        rows = counted(deleted, "access-log row")
        self.stdout.write(f"Deleted {rows} from before {cutoff:%Y-%m-%d %H:%M} UTC{where}.")
