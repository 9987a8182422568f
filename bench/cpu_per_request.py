"""CPU time per request of each process on the request path, under `wrk -c32`.

    python bench/cpu_per_request.py [--seconds 10] [--warm-up 3] [--database-url postgres://.../cpu_bench]

Runs the gateway as `make bench` does (codex mode, 20,000 metered users, PostgreSQL, Redis,
two workers) in front of nginx's canned completion, and reads each process's CPU seconds
from /proc before and after the load. On a machine whose speed drifts (a shared VM),
throughput moves with it; CPU per request divided by nginx's own (fixed work) does not, so
two versions of the gateway can be compared across minutes.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

BASE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE))

from bench import run  # noqa: E402
from bench.processes import cpu_seconds  # noqa: E402


def pids_named(name: str) -> list[int]:
    return [int(pid) for pid in subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout.split()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    # Long enough for every user to have called each worker once, the steady state of a
    # gateway that has been up a while (key lookups cached): 60 s at 20,000 users.
    parser.add_argument("--warm-up", type=int, default=3, help="seconds of untimed load first")
    parser.add_argument("--database-url", default="postgres://root@127.0.0.1:5432/organized_gateway_cpu_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    options = parser.parse_args()
    args = argparse.Namespace(
        duration=options.seconds, users=20_000, database_url=options.database_url, redis_url=options.redis_url
    )
    bench = run.Bench(args)
    try:
        bench.prepare_database()
        nginx_port = run.free_port()
        conf = bench.tmp / "nginx.conf"
        template = (BASE / "bench/nginx.conf.template").read_text()
        conf.write_text(template.replace("{tmp}", str(bench.tmp)).replace("{port}", str(nginx_port)))
        bench.start("nginx", ["nginx", "-c", str(conf), "-p", str(bench.tmp)], nginx_port)
        gateway = bench.start_gateway(f"http://127.0.0.1:{nginx_port}", workers=2)
        run.wrk(gateway.url, 32, options.warm_up, "/v1/chat/completions", bench.keys_file)
        groups = {
            "gateway": gateway.workers(),
            "postgres": pids_named("postgres"),
            "redis": pids_named("redis-server"),
            "nginx": pids_named("nginx"),
        }
        before = {name: cpu_seconds(pids) for name, pids in groups.items()}
        load = run.wrk(gateway.url, 32, options.seconds, "/v1/chat/completions", bench.keys_file)
        time.sleep(1.5)  # the access log's last batch
        spent = {name: (cpu_seconds(pids) - before[name]) / load.requests * 1e6 for name, pids in groups.items()}
    finally:
        for server in list(bench.servers):
            server.stop()
    print(
        f"{load.requests} requests ({load.rps:.0f}/s); CPU µs per request: "
        + ", ".join(f"{name} {value:.0f}" for name, value in spent.items())
        + f"; gateway ÷ nginx {spent['gateway'] / spent['nginx']:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
