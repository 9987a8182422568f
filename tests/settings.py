"""Test settings: the real settings, plus what tests need to share a database with
the gateway they serve from a thread."""

import os

os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-not-for-production")

from gateway_project.settings import *  # noqa: F403
from gateway_project.settings import BASE_DIR, DATABASES

# A file, not SQLite's shared in-memory database: the gateway under test writes from
# other threads (and, in some tests, other processes).
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / ".test-db.sqlite3")}
