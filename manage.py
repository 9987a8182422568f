#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    from django.conf import settings
    from django.core.management import execute_from_command_line

    from gateway_project.lib.env import stop_on_bad_configuration

    # Read now, so a bad value stops every command with its own lines; Django would print a
    # traceback above them (or, for `help`, carry on with its core commands only).
    with stop_on_bad_configuration():
        _ = settings.INSTALLED_APPS
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
