# organized-gateway: `make run` serves the gateway, `make test` runs the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CHROMIUM := /usr/bin/chromium
NGINX := /usr/sbin/nginx
WRK := /usr/bin/wrk
PGBOUNCER := /usr/sbin/pgbouncer

.PHONY: run test lint format clean bench bench-tools bench-ratelimit soak bench-outage docs docs-check screenshots

run: $(VENV)/.runtime .secret_key
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v 0
	exec $(PY) -m gateway_project.serve

test: $(VENV)/.dev $(CHROMIUM) $(NGINX) $(WRK) $(PGBOUNCER)
	$(PY) -m pytest $(PYTEST_ARGS)

# The gateway with every feature on against its references (needs PostgreSQL and Redis),
# Portkey's gateway (needs Node.js) and LiteLLM's proxy among them, both installed on first use
# into bench/.references; writes the table to bench/RESULTS.md. BENCH_ARGS="--duration 2" for a
# quick run, BENCH_ARGS="--references=none" without the peers.
bench: $(VENV)/.runtime $(NGINX) $(WRK)
	$(PY) bench/run.py $(BENCH_ARGS)

bench-tools: $(NGINX) $(WRK)

# Debian packages the tests drive, never downloaded builds: Chromium (browser tests in
# tests/e2e), nginx and wrk (the bench's stub upstream and load driver), PgBouncer (the
# gateway behind a pooler, tests/test_pgbouncer.py). Installed with apt when missing and
# running as root; otherwise a clear stop instead of skipped tests.
$(CHROMIUM) $(NGINX) $(WRK) $(PGBOUNCER) &:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium nginx-light wrk pgbouncer; \
	else \
		echo "The tests need Debian's chromium, nginx-light, wrk and pgbouncer: sudo apt-get install -y chromium nginx-light wrk pgbouncer" >&2; exit 1; \
	fi

# Cost of one rate-limit check against a bare Redis round trip (needs Redis).
bench-ratelimit: $(VENV)/.runtime
	$(PY) bench/ratelimit_cost.py

# Load soak (needs PostgreSQL and Redis; use a database of its own, its plans are changed):
#   DATABASE_URL=postgres://.../gateway_soak REDIS_URL=redis://... make soak SOAK_SECONDS=300
SOAK_SECONDS ?= 300
soak: $(VENV)/.runtime
	$(PY) bench/soak.py --seconds $(SOAK_SECONDS)

# A primary upstream down for 30 s in the middle of a 60 s load through two gateway
# processes: every call answered, rows = calls, nothing billed twice (needs PostgreSQL and
# Redis; use a database of its own, its routes are changed):
#   DATABASE_URL=postgres://.../gateway_outage REDIS_URL=redis://... make bench-outage
bench-outage: $(VENV)/.runtime
	$(PY) bench/outage.py $(BENCH_ARGS)

# The documentation site into site/ (docs/, mkdocs.yml); strict: a broken link, page or
# included file fails the build (not with --quiet: it hides the warnings --strict counts).
# `.venv/bin/mkdocs serve` shows it while editing.
docs: $(VENV)/.dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# The docs' pictures (docs/images/) taken anew by the browser tests: the steps whose screenshot
# names a `docs=` image write it too. Commit what changed; `make test` leaves them alone.
screenshots: $(VENV)/.dev $(CHROMIUM)
	DOCS_SCREENSHOTS=1 $(PY) -m pytest tests/e2e $(PYTEST_ARGS)

# Every code block of the trainees' pages (docs/trainees/*.md) run against the gateway, served
# as `make run` serves it with the bundled stub upstream, by the clients the pages show: pinned
# in tests/clients, installed on first use into its .venv and node_modules (git-ignored; needs
# Node.js and npm). A snippet that fails, or a block without its docs-check line, fails it.
docs-check: $(VENV)/.dev
	$(PY) -m tests.docs_clients
	$(PY) -m pytest tests/docs_check.py $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# A local secret for `make run` and manage.py when SECRET_KEY is unset; created once, kept out of git.
.secret_key:
	@umask 077 && $(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))' > $@

clean:
	rm -rf $(VENV) staticfiles .test-db.sqlite3* bench/.references site tests/clients/.venv tests/clients/node_modules
