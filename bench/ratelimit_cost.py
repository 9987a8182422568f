"""Cost of one rate-limit check, against a bare Redis round trip measured in the same run.

    make bench-ratelimit            (REDIS_URL defaults to redis://127.0.0.1:6379/0)

Prints a Markdown table: per-check time of each backend, and the Redis check as a
multiple of a PING through redis-py's asyncio client (1.0 = one plain round trip).
"""

import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
os.environ.setdefault("SECRET_KEY", "bench-only")

import django

django.setup()

import redis.asyncio as redis  # noqa: E402

from proxy.ratelimit import InProcessLimiter, RedisLimiter  # noqa: E402

CHECKS = int(os.environ.get("BENCH_CHECKS", "5000"))
ROUNDS = 5
USERS = 20_000


async def _timed(operation, count: int) -> tuple[float, float]:
    """Microseconds per operation, one at a time: elapsed, and this process's CPU (the
    client's own work; Redis's is on another process)."""
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        await operation(i)
    return (time.perf_counter() - started) / count * 1e6, (time.process_time() - cpu) / count * 1e6


async def main() -> None:
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    redis_limiter, in_process = RedisLimiter(url), InProcessLimiter()
    # The reference round trip, and the clean-up, through redis-py's own client.
    client = redis.Redis.from_url(url)
    now = time.time()

    async def ping(i):
        await client.ping()

    async def redis_hit(i):
        await redis_limiter.hit(f"bench-{i % USERS}", 1_000_000, now + i / 1e6)

    async def local_hit(i):
        await in_process.hit(f"bench-{i % USERS}", 1_000_000, now + i / 1e6)

    results = {"ping": [], "redis": [], "in-process": []}
    await redis_hit(0)  # load the script
    for _ in range(ROUNDS):  # alternate, so drift hits all alike
        results["ping"].append(await _timed(ping, CHECKS))
        results["redis"].append(await _timed(redis_hit, CHECKS))
        results["in-process"].append(await _timed(local_hit, CHECKS))
    keys = [key async for key in client.scan_iter("gateway:rate:bench-*")]
    for start in range(0, len(keys), 1000):
        await client.delete(*keys[start : start + 1000])
    await redis_limiter.aclose()
    await client.aclose()

    median = {name: statistics.median(elapsed for elapsed, _ in values) for name, values in results.items()}
    cpu = {name: statistics.median(spent for _, spent in values) for name, values in results.items()}
    print(f"machine: {platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()}")
    print(f"{CHECKS} sequential checks × {ROUNDS} alternating rounds, {USERS} users, Redis at {url}\n")
    print("| operation | µs per call (median of rounds) | × Redis PING | client CPU µs per call |")
    print("|---|---|---|---|")
    for name, label in (
        ("ping", "Redis PING (one round trip)"),
        ("redis", "Redis limiter check"),
        ("in-process", "in-process limiter check"),
    ):
        print(f"| {label} | {median[name]:.1f} | {median[name] / median['ping']:.2f} | {cpu[name]:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
