from django.core.management.base import BaseCommand

from billing import rollups
from gateway_project.lib.wording import counted


class Command(BaseCommand):
    help = (
        "Recompute the usage rollups (per user and hour, per user) from the access log: every hour the log "
        "still holds is rebuilt; hours whose rows were pruned keep their rollups. Safe while the gateway runs."
    )

    def handle(self, *args, **options) -> None:
        hours, users = rollups.rebuild()
        totals = counted(users, "user's total", "users' totals")
        self.stdout.write(f"Rebuilt {counted(hours, 'user-hour')} from the log; {totals}.")
