"""Load a routes file (TOML; see proxy.routes_file and docs/operators/routing.md):

    manage.py load_routes routes.toml
    manage.py load_routes              # the file GATEWAY_ROUTES_FILE names

The whole file is checked first: a bad one changes nothing, and the message names its line or
key. Loading the same file again changes nothing, and says so.
"""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from proxy import routes_loader
from proxy.routes_file import RoutesFileError


class Command(BaseCommand):
    help = "Load upstreams, routes and pins from a TOML routes file (default: GATEWAY_ROUTES_FILE); idempotent."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", nargs="?", help="a .toml routes file; default: GATEWAY_ROUTES_FILE")

    def handle(self, *args, file: str | None, **options) -> None:
        file = file or settings.GATEWAY_ROUTES_FILE
        if not file:
            raise CommandError("Name a routes file, or set GATEWAY_ROUTES_FILE.")
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"{file}: cannot be read ({error}).") from None
        try:
            wanted, summary = routes_loader.load(text)
        except RoutesFileError as error:
            raise CommandError(f"{file}: {error} Nothing was changed.") from None
        self.stdout.write(f"{file}: {summary.text(wanted)}")
