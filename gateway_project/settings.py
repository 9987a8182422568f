"""Settings for organized-gateway, read from the environment (see .env.example).

Every variable has a safe embedded default: a fresh machine runs on SQLite with an
in-process rate limiter and cache. DATABASE_URL and REDIS_URL switch to PostgreSQL and
Redis. A bad value stops start-up with a line naming the variable, one line for each bad
value (gateway_project.lib.env).
"""

import hashlib
import hmac
from decimal import Decimal
from pathlib import Path

import dj_database_url
from corsheaders.defaults import default_headers as cors_default_headers
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from gateway_project.lib.env import (
    env_bool,
    env_choice,
    env_float,
    env_header_names,
    env_int,
    env_list,
    env_str,
    env_url,
    env_usd,
    note_problems,
    raise_noted_problems,
    refuse,
)

# Every bad value is named at once, by raise_noted_problems() at the end of this module.
note_problems()

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)

# SECRET_KEY, else the key `make run` keeps in .secret_key, so manage.py commands run by
# an operator use the same key as the server (tokens at rest derive theirs from it).
_SECRET_KEY_FILE = Path(env_str("SECRET_KEY_FILE", str(BASE_DIR / ".secret_key")))
SECRET_KEY = env_str("SECRET_KEY") or (_SECRET_KEY_FILE.read_text().strip() if _SECRET_KEY_FILE.is_file() else None)
if not SECRET_KEY:
    if not DEBUG:
        refuse(
            "SECRET_KEY is not set. Set it to a long random value "
            "(`make run` creates one in .secret_key), or set DEBUG=1 for local development."
        )
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Only for its table_versions table (gateway_project.lib.table_versions).
    "gateway_project",
    "proxy",
    "billing",
    "accounts",
    "corsheaders",
    # Locks out staff logins after repeated failures (admin sign-in); its records are in admin.
    "axes",
]

# Middleware for admin and everything outside /v1. The relay is served by its own
# handler with RELAY_MIDDLEWARE (gateway_project/asgi.py): it uses no sessions, CSRF or
# messages, and each sync middleware would cost a thread hop on every relayed call.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]
# CorsMiddleware is async-capable: no thread hop on the relay (see the CORS settings below).
RELAY_MIDDLEWARE: list[str] = ["corsheaders.middleware.CorsMiddleware"]

ROOT_URLCONF = "gateway_project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "gateway_project.asgi.application"


def _database(url: str, pooler: str) -> dict:
    try:
        config = dj_database_url.parse(url)
    except ValueError as error:
        raise ImproperlyConfigured(f"DATABASE_URL is not valid: {error}") from None
    engine = config["ENGINE"]
    if pooler != "none" and engine != "django.db.backends.postgresql":
        raise ImproperlyConfigured(f"DATABASE_POOLER={pooler} needs a postgres:// DATABASE_URL.")
    if engine == "django.db.backends.sqlite3":
        # WAL lets readers (admin) run beside the access-log writer; IMMEDIATE
        # transactions take the write lock up front instead of failing on upgrade.
        config["OPTIONS"] = {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    elif engine == "django.db.backends.postgresql":
        # Async code reaches the ORM from worker threads that each close their connection
        # after use; the pool makes that close a return instead of a new login per request.
        options = config.get("OPTIONS", {})
        config["OPTIONS"] = {
            **options,
            "connect_timeout": 3,
            # max_size matches the worker's database threads (gateway_project/asgi.py).
            "pool": {"min_size": 2, "max_size": 20, "timeout": 5},
        }
        if pooler == "none":
            # JIT compiles each large query (20-160 ms at 10 M rows) and never pays off for
            # these short reads. The asyncpg connections of the request path are left alone.
            # PgBouncer refuses this startup parameter: behind it, JIT is switched off with
            # ALTER DATABASE (docs/operators/deploy.md, "Behind PgBouncer").
            config["OPTIONS"]["options"] = f"{options.get('options', '')} -c jit=off".strip()
        else:
            # A cursor held across statements (QuerySet.iterator) would be looked for on
            # whichever server connection the pooler hands out next (Django's documentation,
            # "Transaction pooling and server-side cursors").
            config["DISABLE_SERVER_SIDE_CURSORS"] = True
    else:
        raise ImproperlyConfigured(
            f"DATABASE_URL uses {engine.rsplit('.', 1)[-1]}: only postgres:// and sqlite:// are supported."
        )
    return config


DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
# pgbouncer: DATABASE_URL reaches PostgreSQL through PgBouncer (or another pooler) in
# transaction mode, where a session's state does not outlive a transaction: no startup
# parameters, no named prepared statements, settings applied per transaction.
DATABASE_POOLER = env_choice("DATABASE_POOLER", ("none", "pgbouncer"), "none")
try:
    DATABASES = {"default": _database(DATABASE_URL, DATABASE_POOLER)}
except ImproperlyConfigured as error:
    refuse(str(error))
    DATABASES = {}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_url("REDIS_URL", schemes=("redis", "rediss", "unix"))
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# axes first: it refuses a locked-out login before the password is even checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- customers: sign-in links, email, the account page ------------------------------

# Where customers reach the gateway: sign-in links and Stripe's return URLs point here.
# PORT is read whether or not PUBLIC_URL is set, so that a bad one stops `make run` at its first
# step with every other bad value, not later in gunicorn's configuration.
_PORT = env_int("PORT", 8000, minimum=1, maximum=65535)
PUBLIC_URL = env_url("PUBLIC_URL") or f"http://{env_str('HOST', '127.0.0.1')}:{_PORT}"
# Sign-in attempts from one IP in 15 minutes: links asked for, and keys that failed (a key
# that works always signs in). Behind a proxy, set CLIENT_IP_HEADER, or every customer
# shares the proxy's address.
SIGN_IN_ATTEMPTS_PER_IP = env_int("SIGN_IN_ATTEMPTS_PER_IP", 100, minimum=1)
# Sections of the account page that other apps render (billing: use, chart, plan buttons).
ACCOUNT_PAGE_SECTIONS = ["billing.account_page.usage_section", "billing.account_page.billing_section"]
# Django's own email settings; the console backend prints sign-in links to the server's log.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH")
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "organized-gateway <noreply@localhost>")
if EMAIL_BACKEND == "django.core.mail.backends.filebased.EmailBackend" and not EMAIL_FILE_PATH:
    refuse("EMAIL_BACKEND is the file backend: set EMAIL_FILE_PATH to the folder to write to.")

# Staff sign-in (admin): this many failures in a row lock that username out for
# ADMIN_LOCKOUT_MINUTES; operators see and reset lockouts in admin ("Axes").
AXES_FAILURE_LIMIT = env_int("ADMIN_LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = env_int("ADMIN_LOCKOUT_MINUTES", 30, minimum=1) / 60  # hours
# Locked by username, from wherever the guesses come: a lock by IP would also lock out every
# other operator behind the same address. axes.W006 warns about any lock without the IP; its
# worry (a count dodged by rotating user agents or cookies) does not apply to this one.
AXES_LOCKOUT_PARAMETERS = ["username"]
SILENCED_SYSTEM_CHECKS = ["axes.W006"]
AXES_RESET_ON_SUCCESS = True
# A failure while locked out does not start the wait again: otherwise one guess every
# ADMIN_LOCKOUT_MINUTES would keep a staff member out for good.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_TEMPLATE = "admin/locked_out.html"
AXES_CLIENT_IP_CALLABLE = "gateway_project.lib.client_addresses.pseudonymous_client_ip"
AXES_VERBOSE = False

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# --- security (admin and everything outside /v1; see SECURITY.md) ----------------

# Session and CSRF cookies only over https unless DEBUG; SECURE_COOKIES=0 serves the admin
# over plain http (a trusted workshop network only).
SECURE_COOKIES = env_bool("SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_HTTPONLY = True
# Behind a proxy that terminates TLS: the header it sets, e.g. X-Forwarded-Proto.
_PROXY_SSL_HEADER = env_str("SECURE_PROXY_SSL_HEADER")
if _PROXY_SSL_HEADER:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _PROXY_SSL_HEADER.upper().replace("-", "_"), "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Load balancers probe over plain http.
SECURE_REDIRECT_EXEMPT = [r"^health"]
SECURE_HSTS_SECONDS = env_int("HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("HSTS_PRELOAD", False)
X_FRAME_OPTIONS = "DENY"

# Browsers may call /v1 (never the admin or /api) from these origins, e.g. a workshop's
# web notebook: scheme://host[:port], comma-separated. Preflights are answered by the
# gateway: never forwarded, charged or logged.
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", [])
CORS_URLS_REGEX = r"^/v1/.*$"
CORS_ALLOW_HEADERS = (
    *cors_default_headers,
    "x-user-id",
    "x-gateway-key",
    "x-request-id",
    "openai-organization",
    "openai-project",
    "openai-beta",
    # The OpenAI JavaScript SDK's own headers.
    "x-stainless-arch",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
)
CORS_EXPOSE_HEADERS = [
    "x-request-id",
    "x-upstream-request-id",
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "openai-processing-ms",
]

# --- the gateway ---------------------------------------------------------------

# The default upstream (OpenClaw, a Tailscale bridge or tunnel URL): every /v1 call no route
# sends elsewhere is relayed here.
OPENCLAW_URL = env_url("OPENCLAW_URL")
# A routes file (TOML) loaded by `make run` before it serves, and by `manage.py load_routes`
# when given no file.
GATEWAY_ROUTES_FILE = env_str("GATEWAY_ROUTES_FILE", "")
# "openai": the caller's Authorization passes through (BYOK). "codex": the gateway
# injects the caller's stored Codex OAuth token.
AUTH_MODE = env_choice("AUTH_MODE", ("openai", "codex"), "openai")
# How callers prove who they are: "header" (X-User-ID, phase 1) or "key" (gateway API
# keys). Codex mode requires "key": a stored token is only used for a proven caller.
GATEWAY_IDENTITY = env_choice("GATEWAY_IDENTITY", ("header", "key"), "key" if AUTH_MODE == "codex" else "header")
# Seconds an API key lookup is cached in each worker (a revoked key works this long).
KEY_CACHE_SECONDS = env_int("KEY_CACHE_SECONDS", 10, minimum=0, maximum=300)
# Milliseconds between a worker's checks of whether prices or routes changed (one Redis or database
# read, not one per call); a change applies to calls within this time. 0: a check per call.
CHANGE_CHECK_MS = env_int("CHANGE_CHECK_MS", 500, minimum=0, maximum=1000)
# Fernet keys for tokens at rest, newest first; unset: derived from SECRET_KEY (W002).
GATEWAY_ENCRYPTION_KEYS = env_list("GATEWAY_ENCRYPTION_KEYS", [])
for _key in GATEWAY_ENCRYPTION_KEYS:
    try:
        Fernet(_key)
    except ValueError:
        refuse(
            "GATEWAY_ENCRYPTION_KEYS holds a value that is not a Fernet key (32 url-safe base64 bytes); "
            "make one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
        )
        break
# Codex OAuth refresh (manage.py refresh_codex_tokens).
CODEX_TOKEN_URL = env_url("CODEX_TOKEN_URL")
CODEX_CLIENT_ID = env_str("CODEX_CLIENT_ID", "")
CODEX_CLIENT_SECRET = env_str("CODEX_CLIENT_SECRET", "")
# Credentials expiring within this many seconds are refreshed.
CODEX_REFRESH_WITHIN = env_int("CODEX_REFRESH_WITHIN", 600, minimum=1)

# Seconds allowed between two bytes from the upstream (not the whole response).
UPSTREAM_TIMEOUT = env_float("UPSTREAM_TIMEOUT", 60.0)
UPSTREAM_CONNECT_TIMEOUT = env_float("UPSTREAM_CONNECT_TIMEOUT", 5.0)
# Seconds allowed between two events once a stream has started (at most UPSTREAM_TIMEOUT);
# an upstream's own idle_timeout replaces it. Then the stream is rescued or ends (proxy.rescue).
STREAM_IDLE_TIMEOUT = env_float("STREAM_IDLE_TIMEOUT", 30.0)
# Seconds a call may take until its answer starts (first stream event, or whole JSON
# body), every retry and fail-over included (proxy.routing); then the last answer, or 504.
UPSTREAM_DEADLINE = env_float("UPSTREAM_DEADLINE", 2 * UPSTREAM_TIMEOUT)
# A 429's Retry-After is waited out when at most this many seconds; longer: back-off.
UPSTREAM_RETRY_AFTER_MAX = env_float("UPSTREAM_RETRY_AFTER_MAX", 10.0)
# A non-stream answer is held whole (so a failed one can be retried unseen) up to this
# size; a larger one is relayed as it comes.
UPSTREAM_HOLD_BYTES = env_int("UPSTREAM_HOLD_BYTES", 1024 * 1024, minimum=0)
# Circuit breakers (proxy.breakers): an upstream that fails this many calls in a row (no
# connection, reset, 5xx, silence, a broken stream) is skipped for BREAKER_COOLDOWN seconds,
# then tried by one trial at a time (its background probe, else one call). 0 turns them off.
BREAKER_FAILURES = env_int("BREAKER_FAILURES", 3, minimum=0)
BREAKER_COOLDOWN = env_float("BREAKER_COOLDOWN", 15.0)
# Each upstream is probed in the background this often (proxy.probes); 0: never.
UPSTREAM_PROBE_SECONDS = env_int("UPSTREAM_PROBE_SECONDS", 15, minimum=0)
# Largest request body relayed; larger ones get 413.
MAX_REQUEST_BYTES = env_int("MAX_REQUEST_BYTES", 10 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BYTES

# "include": streamed chat and legacy completions are forwarded with
# stream_options.include_usage, so every stream is metered (the usage chunk the client did
# not ask for is taken out again). "passthrough": bodies go as sent, for upstreams that
# refuse stream_options; streams without include_usage then have unknown usage.
STREAM_USAGE = env_choice("STREAM_USAGE", ("include", "passthrough"), "include")

# Headers that stay at the gateway whatever FORWARD_*_HEADERS say: its own credentials and
# identity headers, the caller's Authorization (passed, in BYOK mode, by the gateway
# itself), cookies, and what each hop sets for itself.
NEVER_FORWARDED_HEADERS = frozenset(
    (
        "authorization",
        "proxy-authorization",
        "x-gateway-key",
        "x-user-id",
        "x-codex-token",
        "x-forwarded-user",
        "cookie",
        "set-cookie",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "accept-encoding",
    )
)
# Extra caller headers relayed to the upstream, and upstream headers relayed back
# (comma-separated names), besides the built-in lists (docs/operators/relay.md).
FORWARD_REQUEST_HEADERS = env_header_names("FORWARD_REQUEST_HEADERS", never=NEVER_FORWARDED_HEADERS)
FORWARD_RESPONSE_HEADERS = env_header_names("FORWARD_RESPONSE_HEADERS", never=NEVER_FORWARDED_HEADERS)

# Requests a user may make in any rolling 60 seconds (plans may override per tier).
RATE_LIMIT_PER_MINUTE = env_int("RATE_LIMIT_PER_MINUTE", 50, minimum=1)

# Monthly limits of callers without a paid tier; unset: unlimited (phase 1 as before).
FREE_MONTHLY_REQUESTS = env_int("FREE_MONTHLY_REQUESTS", None, minimum=0)
FREE_MONTHLY_TOKENS = env_int("FREE_MONTHLY_TOKENS", None, minimum=0)
# Monthly budget in USD of callers without a paid tier; unset: none.
FREE_MONTHLY_BUDGET = env_usd("FREE_MONTHLY_BUDGET", None)
# Within this many USD of their budget, a caller's calls are admitted one at a time (the
# bound on how far calls in flight can take a month past its budget: docs/operators/prices-budgets.md).
BUDGET_MARGIN_USD = env_usd("BUDGET_MARGIN_USD", Decimal("1.00"))
# How long a call admitted alone may hold that place if it is never written (a crash).
BUDGET_LEASE_SECONDS = env_int("BUDGET_LEASE_SECONDS", 900, minimum=1)
# How long a call refused for that place waits for it to be freed before its 429: the call
# holding it may have ended a moment ago, its cost still being written.
BUDGET_WAIT_SECONDS = env_float("BUDGET_WAIT_SECONDS", 1.0)
# Shown in the 402 message when a monthly quota is spent.
BILLING_UPGRADE_URL = env_url("BILLING_UPGRADE_URL")
# Signing secret of the Stripe webhook endpoint (whsec_...); unset: webhooks are refused.
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET")
# Stripe API key (sk_... or rk_...) for checkout and billing portal sessions; unset: customers
# cannot buy from the account page (the buttons are hidden, the API answers 503).
STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY")
# Where the Stripe SDK sends its calls: Stripe itself, or stripe-mock / a test server.
STRIPE_API_BASE = env_url("STRIPE_API_BASE") or "https://api.stripe.com"
# Where Stripe sends the customer back after checkout, and from the billing portal.
STRIPE_SUCCESS_URL = env_url("STRIPE_SUCCESS_URL", query=True) or f"{PUBLIC_URL}/account/?checkout=success"
STRIPE_CANCEL_URL = env_url("STRIPE_CANCEL_URL", query=True) or f"{PUBLIC_URL}/account/?checkout=cancelled"
STRIPE_PORTAL_RETURN_URL = env_url("STRIPE_PORTAL_RETURN_URL", query=True) or f"{PUBLIC_URL}/account/"

# Header carrying the client IP when behind a proxy (e.g. CF-Connecting-IP);
# unset: the socket peer (REMOTE_ADDR).
CLIENT_IP_HEADER = env_str("CLIENT_IP_HEADER")
# Key for the access log's ip_hash; defaults to one derived from SECRET_KEY.
IP_HASH_KEY = (
    env_str("IP_HASH_KEY") or hmac.new(SECRET_KEY.encode(), b"organized-gateway ip_hash", hashlib.sha256).hexdigest()
)
# Bearer token Prometheus sends to scrape /metrics (proxy/metrics.py); unset: /metrics answers 404.
METRICS_TOKEN = env_str("METRICS_TOKEN")

# PostHog LLM analytics (proxy/analytics.py): one event per model call, sent off the request's
# path. Unset: nothing is exported and the SDK is never imported.
POSTHOG_API_KEY = env_str("POSTHOG_API_KEY")
POSTHOG_HOST = env_url("POSTHOG_HOST") or "https://us.i.posthog.com"

LOG_LEVEL = env_choice("LOG_LEVEL", ("debug", "info", "warning", "error"), "info").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        # [request id] of the /v1 request being served, "-" outside one (gateway_project.lib.request_ids).
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"},
    },
    "filters": {"request_id": {"()": "gateway_project.lib.request_ids.RequestIdFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["request_id"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Keep third-party chatter (e.g. httpx logs every request URL) at warnings.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        # Stripe's SDK logs every call it makes at INFO.
        "stripe": {"level": "WARNING"},
        # django-axes logs every admin sign-in and reset at INFO; lockouts are in admin.
        "axes": {"level": "WARNING"},
        # PostHog's SDK warns once per event it drops; proxy/analytics.py counts them instead.
        "posthog": {"level": "ERROR"},
        # Django logs every 4xx as a warning; /v1 refusals are in the access log already,
        # and a flood of bad keys must not become a flood of log lines.
        "django.request": {"level": "ERROR"},
    },
}

# Last: stops start-up naming every bad value noted above, one line each.
raise_noted_problems()
