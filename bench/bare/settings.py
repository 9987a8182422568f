"""The references the gateway is measured against: a bare Django async relay (httpx, no
middleware, no features) and Django returning a constant (the framework's ceiling)."""

import os

SECRET_KEY = "bench-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.bare.urls"
DATABASES: dict = {}
USE_TZ = True
UPSTREAM_URL = os.environ["BENCH_UPSTREAM_URL"].rstrip("/")
