"""Test settings: the real settings, plus what tests need to share a database with
the gateway they serve from a thread."""

import os

os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-not-for-production")

from gateway_project.settings import *  # noqa: F403
from gateway_project.settings import BASE_DIR, DATABASES

# A file, not SQLite's shared in-memory database: the gateway under test writes from
# other threads (and, in some tests, other processes).
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": os.environ.get("TEST_DATABASE_NAME", str(BASE_DIR / ".test-db.sqlite3"))}
elif os.environ.get("TEST_DATABASE_NAME"):
    # Two test runs side by side (a developer's and a helper's) each need a database of their own.
    DATABASES["default"]["TEST"] = {"NAME": os.environ["TEST_DATABASE_NAME"]}

# Tests never export to a real PostHog, whatever the shell holds: those of the export point
# it at a fake (tests/test_analytics.py).
POSTHOG_API_KEY = None

# No background probes in tests: those of proxy.probes drive one round themselves.
UPSTREAM_PROBE_SECONDS = 0
