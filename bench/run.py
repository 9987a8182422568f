"""`make bench`: the gateway with every feature on, against its references, in one sitting.

Targets, alternated within each scenario so drift hits all alike:
  direct    nginx returning a canned completion (the fast stub upstream)
  bare      a Django async view relaying to nginx with httpx, nothing else (bench/bare)
  constant  Django returning the same constant (the framework's ceiling)
  Portkey   Portkey's gateway (npm), one Node.js process, relaying to nginx (bench/references.py)
  LiteLLM   LiteLLM's proxy (PyPI), one process, its one model served by nginx
  gateway   this project: codex mode (key identity, stored tokens), PostgreSQL, Redis rate
            limits, USERS users on a metered plan with request and token quotas and a USD
            budget, a priced model, metrics, the access log, and routing (a `*` route to one
            upstream) — all on
Streaming scenarios use the bundled stub (20 events, 5 ms apart) directly and through the
gateway. Loopback only; every load is bounded in time and count. Portkey and LiteLLM are
installed on the first run into bench/.references; --references=none leaves them out.
"""

import argparse
import asyncio
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

BASE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE))

import httpx  # noqa: E402

from bench import references  # noqa: E402
from bench.processes import cpu_seconds, free_port, rss_mib, wait_for_port, workers_of  # noqa: E402
from bench.streams import many_streams, percentile  # noqa: E402

MARK_START, MARK_END = "<!-- bench:start -->", "<!-- bench:end -->"


@dataclass
class Load:
    rps: float
    p50: float
    p99: float
    requests: int
    errors: int


class Server:
    """A process serving on a loopback port. `env` adds to this process's environment, or is
    the whole of it with `inherit=False`; stderr goes to `log` when given (a reference's
    per-request messages would otherwise fill an unread pipe and stall it)."""

    def __init__(
        self,
        name: str,
        command: list[str],
        port: int,
        env: dict[str, str] | None = None,
        *,
        inherit: bool = True,
        log: Path | None = None,
    ) -> None:
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        stderr = log.open("wb") if log else subprocess.PIPE
        self.process = subprocess.Popen(
            command,
            cwd=BASE,
            env={**(os.environ if inherit else {}), **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            wait_for_port(port, self.process, timeout=120)
        except SystemExit as error:
            self.stop()
            tail = "".join(log.read_text(errors="replace").splitlines(True)[-20:]) if log else ""
            raise SystemExit(f"{name}: {error}\n{tail}") from None

    def workers(self) -> list[int]:
        return workers_of(self.process.pid) or [self.process.pid]

    def processes(self) -> list[int]:
        """The process and its children: all whose CPU time a request costs."""
        return [self.process.pid, *workers_of(self.process.pid)]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(40)
        except subprocess.TimeoutExpired:
            self.process.kill()


class PeakMemory:
    """Samples the workers' RSS in the background while a load runs."""

    def __init__(self, server: Server) -> None:
        self.pids, self.peak = server.workers(), 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max([self.peak, *(rss_mib(pid) for pid in self.pids)])


def wrk(url: str, connections: int, duration: float, path: str, keys_file: str | None, headers: str = "") -> Load:
    threads = min(2, connections)
    env = {**os.environ, "BENCH_PATH": path, "BENCH_HEADERS": headers}
    if keys_file:
        env["BENCH_KEYS_FILE"] = keys_file
    else:
        env.pop("BENCH_KEYS_FILE", None)
    seconds = max(1, round(duration))  # wrk takes whole seconds
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        "bench/wrk_post.lua",
        url,
    ]
    result = subprocess.run(command, cwd=BASE, env=env, capture_output=True, text=True, timeout=duration + 60)
    out = result.stdout
    if "Requests/sec" not in out:
        raise SystemExit(f"wrk failed against {url}: {result.stdout}{result.stderr}")
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.MULTILINE))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    errors += int((re.search(r"Non-2xx or 3xx responses: (\d+)", out) or [0, 0])[1])
    return Load(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
        p50=_ms(percentiles["50"]),
        p99=_ms(percentiles["99"]),
        requests=int(re.search(r"(\d+) requests in", out)[1]),
        errors=errors,
    )


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def versions() -> str:
    def first_line(command: list[str]) -> str:
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=10)
            return (result.stdout + result.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    import django
    import uvicorn

    tools = [
        [sys.executable, "-m", "gunicorn", "--version"],
        ["nginx", "-v"],
        ["wrk", "-v"],
        ["psql", "--version"],
        ["redis-server", "--version"],
    ]
    return (
        f"Python {platform.python_version()}, Django {django.__version__}, httpx {httpx.__version__}, "
        f"uvicorn {uvicorn.__version__}, " + ", ".join(first_line(tool) for tool in tools)
    )


@dataclass
class Target:
    """One column of the throughput scenario: where wrk sends its calls, and the server whose
    processes' CPU time is counted for them."""

    name: str
    server: Server
    path: str = "/v1/chat/completions"
    keys: str | None = None
    headers: str = ""


@dataclass
class Row:
    scenario: str
    cells: dict[str, str]  # by column name; missing ones are blank
    result: str = ""
    target: str = ""
    met: bool | None = None


COLUMNS = ("direct", "bare relay", "Django constant", "Portkey", "LiteLLM", "gateway")
# The goals against the peers: (column, times the gateway's throughput).
PEER_TARGETS = (("Portkey", 1.5), ("LiteLLM", 6.0))


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
        self.keys_file = str(self.tmp / "keys.txt")
        self.servers: list[Server] = []
        self.rows: list[Row] = []
        self.raw: list[str] = []
        self.failures: list[str] = []

    # --- set-up ---------------------------------------------------------------

    def gateway_env(self, upstream: str, workers: int) -> dict[str, str]:
        return {
            "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
            "SECRET_KEY": "bench-only-secret-key",
            "DATABASE_URL": self.args.database_url,
            "REDIS_URL": self.args.redis_url,
            "OPENCLAW_URL": upstream,
            "AUTH_MODE": "codex",
            "METRICS_TOKEN": "bench-only-metrics-token",
            "WEB_CONCURRENCY": str(workers),
            "LOG_LEVEL": "warning",
        }

    def prepare_database(self) -> None:
        import psycopg
        import redis

        target = urlsplit(self.args.database_url)
        name = target.path.lstrip("/")
        admin = target._replace(path="/postgres").geturl()
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{name}"')
        redis.Redis.from_url(self.args.redis_url).flushdb()
        env = {**os.environ, **self.gateway_env("http://127.0.0.1:9", 1), "BENCH_USERS": str(self.args.users)}
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=BASE, env=env, check=True)
        subprocess.run([sys.executable, "bench/seed.py", self.keys_file], cwd=BASE, env=env, check=True)

    def start(self, name: str, command: list[str], port: int, env: dict[str, str] | None = None, **options) -> Server:
        server = Server(name, command, port, env, **options)
        self.servers.append(server)
        return server

    def stop(self, server: Server) -> None:
        server.stop()
        self.servers.remove(server)

    def load_routes(self, upstream: str) -> None:
        """Routing on, as deployed: one upstream and a catch-all route to it (its retries and
        background probe as a routes file leaves them), instead of OPENCLAW_URL alone."""
        routes = self.tmp / "routes.toml"
        routes.write_text(f'[upstreams.bench]\nbase_url = "{upstream}"\n\n[routes]\n"*" = [{{ upstream = "bench" }}]\n')
        env = {**os.environ, **self.gateway_env(upstream, 1)}
        command = [sys.executable, "manage.py", "load_routes", str(routes)]
        subprocess.run(command, cwd=BASE, env=env, check=True, stdout=subprocess.DEVNULL)

    def start_gateway(self, upstream: str, workers: int) -> Server:
        self.load_routes(upstream)
        port = free_port()
        env = {**self.gateway_env(upstream, workers), "PORT": str(port)}
        command = [sys.executable, "-m", "gunicorn", "-c", "gateway_project/gunicorn_conf.py"]
        gateway = self.start("gateway", [*command, "gateway_project.asgi:application"], port, env)
        with httpx.Client(timeout=30) as client:  # warm: plan cache, connections (slow on a busy machine)
            client.get(f"{gateway.url}/health")
        return gateway

    def start_stub(self, events: int, interval_ms: int) -> Server:
        port = free_port()
        env = {"STUB_STREAM_EVENTS": str(events), "STUB_STREAM_INTERVAL_MS": str(interval_ms)}
        command = [sys.executable, "-m", "uvicorn", "gateway_project.stub_upstream:app", "--port", str(port)]
        return self.start("stub", [*command, "--log-level", "warning", "--no-access-log"], port, env)

    def start_nginx(self) -> Server:
        port = free_port()
        conf = self.tmp / "nginx.conf"
        template = (BASE / "bench/nginx.conf.template").read_text()
        conf.write_text(template.replace("{tmp}", str(self.tmp)).replace("{port}", str(port)))
        return self.start("nginx", ["nginx", "-c", str(conf), "-p", str(self.tmp)], port)

    def start_bare(self, nginx: str) -> Server:
        port = free_port()
        command = [sys.executable, "-m", "gunicorn", "-w", "2", "-k", "uvicorn_worker.UvicornWorker"]
        command += ["-b", f"127.0.0.1:{port}", "--no-control-socket", "bench.bare.asgi:application"]
        env = {"BENCH_UPSTREAM_URL": nginx, "DJANGO_SETTINGS_MODULE": "bench.bare.settings"}
        return self.start("bare", command, port, env)

    def reference_targets(self, nginx: str) -> list[Target]:
        """Portkey's gateway and LiteLLM's proxy in front of nginx, as --references asks."""
        targets = []
        if "portkey" in self.args.references:
            script, port = references.install_portkey(), free_port()
            command = references.portkey_command(script, port)
            env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root")}
            portkey = self.start("Portkey", command, port, env, inherit=False, log=self.tmp / "portkey.log")
            targets.append(Target("Portkey", portkey, headers=references.portkey_headers(nginx)))
        if "litellm" in self.args.references:
            command, port = references.install_litellm(), free_port()
            config = references.write_litellm_config(self.tmp / "litellm.yaml", nginx, "gpt-4o-mini")
            command = references.litellm_command(command, config, port)
            log = self.tmp / "litellm.log"
            litellm = self.start("LiteLLM", command, port, references.litellm_env(), inherit=False, log=log)
            targets.append(Target("LiteLLM", litellm, headers=references.litellm_headers()))
        return targets

    # --- scenarios ------------------------------------------------------------

    def requests_scenarios(self) -> None:
        nginx = self.start_nginx()
        bare = self.start_bare(nginx.url)
        peers = self.reference_targets(nginx.url)
        gateway = self.start_gateway(nginx.url, workers=2)
        time.sleep(1)  # let start-up allocations settle before reading idle memory
        idle = max(rss_mib(pid) for pid in gateway.workers())
        targets = [
            Target("direct", nginx),
            Target("bare relay", bare),
            Target("Django constant", bare, path="/constant/v1/chat/completions"),
            *peers,
            Target("gateway", gateway, keys=self.keys_file),
        ]
        for target in targets:  # a first call each: a reference that cannot answer stops here
            self.check_answers(target)
        results, cpu, peak, sent = self.alternate(targets, nginx, idle)
        self.throughput_rows(targets, results, cpu)
        errors = sum(load.errors for (name, _), loads in results.items() if name == "gateway" for load in loads)
        # Sent: wrk's completed calls plus check_answers' one.
        loads_at_32 = self.args.rounds + (1 if self.args.warm_up else 0)
        self.check_access_log(sent + 1, errors, connections_closed=32 * loads_at_32 + self.args.rounds)
        self.rows.append(
            Row("idle RSS per gateway worker (MiB)", {"gateway": f"{idle:.0f}"}, f"{idle:.0f}", "≤ 100", idle <= 100)
        )
        self.rows.append(Row("peak RSS per gateway worker under load (MiB)", {"gateway": f"{peak:.0f}"}, f"{peak:.0f}"))
        for server in list(self.servers):
            self.stop(server)

    def check_answers(self, target: Target) -> None:
        headers = dict(line.split(": ", 1) for line in target.headers.splitlines())
        if target.keys:
            headers["Authorization"] = f"Bearer {Path(target.keys).read_text().split()[0]}"
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        response = httpx.post(f"{target.server.url}{target.path}", json=body, headers=headers, timeout=60)
        if response.status_code != 200 or "choices" not in response.text:
            raise SystemExit(f"{target.name} does not answer a chat call: {response.status_code} {response.text[:500]}")

    def alternate(self, targets: list[Target], nginx: Server, idle: float):
        """Each round loads every target in turn; CPU time per request is read, at 32
        connections, for the target's own processes and for nginx behind it."""
        results: dict[tuple[str, int], list[Load]] = {}
        cpu: dict[str, list[tuple[float, float]]] = {}
        peak, sent_to_gateway = idle, 0
        for target in targets if self.args.warm_up else ():
            # Untimed, the same for every target: each measured at its steady state (a JIT
            # compiled, pools filled, and in the gateway every user's key lookup cached, as
            # in a gateway that has been serving its callers for a while).
            load = wrk(target.server.url, 32, self.args.warm_up, target.path, target.keys, target.headers)
            self.raw.append(f"{target.name:16} warm-up {self.args.warm_up:g} s: {load.requests} requests, not counted")
            if target.name == "gateway":
                sent_to_gateway += load.requests
        for connections, duration in ((32, self.args.duration), (1, self.args.duration / 2)):
            for _ in range(self.args.rounds):
                for target in targets:
                    pids, nginx_pids = target.server.processes(), nginx.processes()
                    before = cpu_seconds(pids), cpu_seconds(nginx_pids)
                    with PeakMemory(target.server) as memory:
                        load = wrk(target.server.url, connections, duration, target.path, target.keys, target.headers)
                    spent = cpu_seconds(pids) - before[0], cpu_seconds(nginx_pids) - before[1]
                    if connections == 32 and load.requests:
                        cpu.setdefault(target.name, []).append(tuple(s / load.requests * 1e6 for s in spent))
                    if target.name == "gateway":
                        peak = max(peak, memory.peak)
                        sent_to_gateway += load.requests
                    results.setdefault((target.name, connections), []).append(load)
                    self.raw.append(
                        f"{target.name:16} c={connections:<3} {load.rps:9.1f} req/s  p50 {load.p50:7.2f} ms  "
                        f"p99 {load.p99:7.2f} ms  requests {load.requests}  errors {load.errors}"
                    )
        return results, cpu, peak, sent_to_gateway

    def throughput_rows(self, targets: list[Target], results: dict, cpu: dict) -> None:
        def median(name: str, connections: int, field: str) -> float:
            return statistics.median(getattr(load, field) for load in results[name, connections])

        names = [target.name for target in targets]
        rps = {name: median(name, 32, "rps") for name in names}
        p50_1 = {name: median(name, 1, "p50") for name in names}
        added = {name: p50_1[name] - p50_1["direct"] for name in names}
        # µs of the target's own CPU per request, and that over nginx's per request in the same
        # load: nginx does fixed work per call, so the quotient holds when the machine's speed drifts.
        per_request = {name: statistics.median(us for us, _ in cpu[name]) for name in names}
        normalised = {name: statistics.median(us / max(ng, 0.01) for us, ng in cpu[name]) for name in names}
        cpu_cells = {n: f"{per_request[n]:.0f} (÷ {normalised[n]:.1f})" for n in names}
        cpu_cells["Django constant"] = f"{per_request['Django constant']:.0f}"  # it never calls nginx
        ratio = rps["gateway"] / rps["bare relay"]
        self.rows += [
            Row(
                "throughput, 32 connections (req/s)",
                {n: f"{rps[n]:.0f}" for n in names},
                f"{ratio:.2f} × bare",
                "≥ 1.0 × bare",
                ratio >= 1.0,
            ),
            Row(
                "p50 / p99 at 32 connections (ms)",
                {n: f"{median(n, 32, 'p50'):.2f} / {median(n, 32, 'p99'):.2f}" for n in names},
            ),
            Row(
                "CPU per request at 32 connections (µs; ÷ nginx's)",
                cpu_cells,
                f"gateway ÷ nginx {normalised['gateway']:.1f}",
            ),
        ]
        for peer, goal in PEER_TARGETS:
            if peer not in rps:
                continue
            errors = sum(load.errors for connections in (32, 1) for load in results[peer, connections])
            times, cpu_times = rps["gateway"] / rps[peer], normalised[peer] / normalised["gateway"]
            self.rows.append(
                Row(
                    f"gateway against {peer}: throughput (CPU per request)",
                    {peer: f"{errors} errors" if errors else ""},
                    f"{times:.2f} × {peer}; {peer}'s CPU per request {cpu_times:.2f} × the gateway's",
                    f"≥ {goal:g} × {peer}",
                    times >= goal and errors == 0,
                )
            )
        self.rows.append(
            Row(
                "added p50 latency, 1 connection (ms)",
                {n: f"{added[n]:+.2f}" for n in names},
                f"{added['gateway']:+.2f} vs {added['bare relay']:+.2f}",
                "≤ bare relay's",
                added["gateway"] <= added["bare relay"],
            )
        )

    def check_access_log(self, completed: int, errors: int, connections_closed: int) -> None:
        """Rows written = requests sent. wrk counts the responses that completed inside its
        window; requests still in flight when it stops were sent too (logged, as 200 or 499),
        so rows lie between `completed` and `completed` plus one per connection it closed.
        Monthly usage, counted at admission on a separate path, covers every row except
        499s that left before admission."""
        import psycopg

        with psycopg.connect(self.args.database_url) as connection:
            deadline, rows, last = time.monotonic() + 30, -1, -2
            while rows != last and time.monotonic() < deadline:
                last = rows
                time.sleep(1)  # the writer flushes behind the responses
                rows, cut_off = connection.execute(
                    "SELECT COUNT(*), COUNT(*) FILTER (WHERE status = 499) FROM requests"
                ).fetchone()
            usage = connection.execute("SELECT COALESCE(SUM(requests), 0) FROM billing_monthlyusage").fetchone()[0]
        ok = errors == 0 and rows - cut_off <= usage <= rows and completed <= rows <= completed + connections_closed
        self.raw.append(
            f"access log: {rows} rows ({cut_off} of them 499), {completed} responses completed inside wrk's "
            f"windows, {connections_closed} connections closed by wrk, monthly usage {usage} requests, {errors} errors"
        )
        self.rows.append(
            Row(
                "access log rows = requests sent (usage = admitted)",
                {"gateway": f"{rows}"},
                f"{rows} rows, {usage} counted, {completed} completed",
                "equal",
                ok,
            )
        )

    def streaming_scenarios(self) -> None:
        stub = self.start_stub(events=20, interval_ms=5)
        gateway = self.start_gateway(stub.url, workers=2)
        keys = Path(self.keys_file).read_text().split()
        for count, repeats in ((1, self.args.single_streams), (256, self.args.rounds)):
            measured: dict[str, tuple[list[float], list[float], int]] = {}
            for _ in range(repeats):
                for name, url, stream_keys in (("direct", stub.url, None), ("gateway", gateway.url, keys)):
                    results = asyncio.run(many_streams(url, count, stream_keys))
                    first, gaps, failed = measured.get(name, ([], [], 0))
                    first += [r.first_event_ms for r in results if r.ok]
                    gaps += [g for r in results if r.ok for g in r.gaps_ms]
                    measured[name] = (first, gaps, failed + sum(not r.ok or r.events < 21 for r in results))
            direct, through = measured["direct"], measured["gateway"]
            ttfe_added = percentile(through[0], 0.5) - percentile(direct[0], 0.5)
            gap_added = percentile(through[1], 0.99) - percentile(direct[1], 0.99)
            self.raw.append(
                f"streams x{count}: first event p50 direct {percentile(direct[0], 0.5):.2f} ms, gateway "
                f"{percentile(through[0], 0.5):.2f} ms; gap p99 direct {percentile(direct[1], 0.99):.2f} ms, gateway "
                f"{percentile(through[1], 0.99):.2f} ms; failed streams direct {direct[2]}, gateway {through[2]}"
            )
            # The first-event target is a caller's added wait (one stream). With 256 streams
            # opening in the same instant, each worker has 128 to set up at once, and a
            # stream's first event waits behind the others' set-up: reported, not a target.
            self.rows.append(
                Row(
                    f"time to first event, added, {count} stream(s) (ms p50)",
                    {"direct": f"{percentile(direct[0], 0.5):.2f}", "gateway": f"{percentile(through[0], 0.5):.2f}"},
                    f"{ttfe_added:+.2f}",
                    "≤ 3 ms" if count == 1 else "",
                    ttfe_added <= 3 and through[2] == 0 if count == 1 else None,
                )
            )
            self.rows.append(
                Row(
                    f"inter-event gap p99, added, {count} stream(s) (ms)",
                    {"direct": f"{percentile(direct[1], 0.99):.2f}", "gateway": f"{percentile(through[1], 0.99):.2f}"},
                    f"{gap_added:+.2f}",
                    "≤ 5 ms" if count == 256 else "",
                    gap_added <= 5 and through[2] == 0 if count == 256 else None,
                )
            )
        self.stop(gateway)
        self.stop(stub)

    def open_streams_scenario(self) -> None:
        count, seconds = self.args.open_streams, max(4, int(self.args.duration))
        stub = self.start_stub(events=seconds * 2, interval_ms=500)
        gateway = self.start_gateway(stub.url, workers=1)
        keys = Path(self.keys_file).read_text().split()
        with PeakMemory(gateway) as memory:
            results = asyncio.run(many_streams(gateway.url, count, keys))
        failed = sum(not r.ok or r.events < seconds * 2 + 1 for r in results)
        self.raw.append(
            f"{count} open streams on one worker for {seconds} s: {failed} failed, peak RSS {memory.peak:.0f} MiB"
        )
        self.rows.append(
            Row(
                f"{count} open streams on one worker: failed / peak RSS (MiB)",
                {"gateway": f"{failed} / {memory.peak:.0f}"},
                f"{failed} / {memory.peak:.0f}",
                "0 / ≤ 250",
                failed == 0 and memory.peak <= 250,
            )
        )
        self.stop(gateway)
        self.stop(stub)

    # --- report ---------------------------------------------------------------

    def peers_line(self) -> str:
        chosen = [name for name in references.NAMES if name in self.args.references]
        if not chosen:
            return "Portkey and LiteLLM not run (--references=none);"
        pins = {"portkey": " with ".join(references.PORTKEY), "litellm": references.LITELLM}
        return "references " + ", ".join(pins[name] for name in chosen) + ";"

    def report(self) -> str:
        lines = [
            MARK_START,
            f"## Gateway against its references ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
            "",
            f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}. {versions()}.",
            f"Command: `{' '.join(self.args.command)}` — {self.args.users} users, {self.args.duration:g} s per load "
            f"(half at 1 connection), {self.args.rounds} alternating rounds after an untimed {self.args.warm_up:g} s "
            "load of each target, medians reported; gunicorn + uvicorn "
            "workers, 2 per Django server; Portkey's gateway one Node.js process, LiteLLM's proxy one process "
            f"(each its default); {self.peers_line()} wrk with bench/wrk_post.lua; streams with bench/streams.py.",
            "",
            "| scenario | " + " | ".join(COLUMNS) + " | result | target | met |",
            "|---" * (len(COLUMNS) + 4) + "|",
        ]
        for row in self.rows:
            met = "" if row.met is None else ("yes" if row.met else "**no**")
            cells = [row.cells.get(column, "") for column in COLUMNS]
            lines.append("| " + " | ".join([row.scenario, *cells, row.result, row.target, met]) + " |")
        lines += ["", "Raw numbers:", "", "```", *self.raw, "```", MARK_END]
        return "\n".join(lines) + "\n"

    def run(self) -> int:
        try:
            self.prepare_database()
            self.requests_scenarios()
            self.streaming_scenarios()
            self.open_streams_scenario()
        finally:
            for server in list(self.servers):
                server.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)
        report = self.report()
        print(report)
        output = Path(self.args.output)
        previous = output.read_text() if output.exists() else ""
        if MARK_START in previous:
            before, rest = previous.split(MARK_START, 1)
            report = before + report + rest.split(MARK_END, 1)[1].lstrip("\n")
        else:
            report = previous + ("\n" if previous else "") + report
        output.write_text(report)
        return 0


def _references(value: str) -> tuple[str, ...]:
    chosen = references.NAMES if value == "all" else () if value == "none" else tuple(value.split(","))
    unknown = set(chosen) - set(references.NAMES)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown reference {', '.join(sorted(unknown))}: all, none, portkey, litellm")
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load at 32 connections")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warm-up", type=float, default=30.0, help="seconds of untimed load per target first")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--single-streams", type=int, default=30, help="sequential single streams per round")
    parser.add_argument("--open-streams", type=int, default=1000)
    parser.add_argument("--output", default=str(BASE / "bench/RESULTS.md"))
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgres://root@127.0.0.1:5432/organized_gateway_bench"),
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    parser.add_argument(
        "--references",
        default="all",
        type=_references,
        help="peers to measure: all (default), none, or a comma-separated list of portkey, litellm; "
        "installed into bench/.references on first use",
    )
    args = parser.parse_args()
    args.command = ["make", "bench"] if len(sys.argv) == 1 else ["python", "bench/run.py", *sys.argv[1:]]
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: `make bench` installs it (apt-get install nginx-light wrk).")
    # Each stream holds two sockets in a worker: 1,000 streams need more than the usual 1,024 files.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        return Bench(args).run()
    except references.Unavailable as error:
        raise SystemExit(f"{error}\n(--references=none runs the bench without the peers.)") from None


if __name__ == "__main__":
    sys.exit(main())
