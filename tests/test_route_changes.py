"""A change of upstreams or routes (a file loaded, an edit in admin) reaches every worker
within CHANGE_CHECK_MS, without a database read per call; gateway processes started with one
routes file route the same."""

import subprocess
import sys
from io import StringIO

import httpx
import pytest
from django.core.management import call_command

from billing import cached
from proxy import routes
from proxy.models import Route, Upstream
from tests.servers import BASE_DIR, free_port, gateway_environment, wait_until_serving
from tests.test_models_list import ListingUpstream

FILE = """
[upstreams.bridge]
base_url = "{bridge}"

[upstreams.openrouter]
base_url = "{openrouter}"
auth = "api_key"
api_key_env = "ROUTES_TEST_KEY"

[routes]
"gpt-5" = [{{ upstream = "bridge" }}, {{ upstream = "openrouter", model = "openai/gpt-5", priority = 2 }}]
"*" = [{{ upstream = "openrouter" }}]
"""


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(cached, "clock", lambda: now[0])
    return now


@pytest.fixture
def openrouter():
    from tests.servers import ServerThread

    app = ListingUpstream("meta-llama/llama-3.3-70b-instruct")
    server = ServerThread(app)
    app.url = server.url
    yield app
    server.stop()


def load(tmp_path, text: str) -> str:
    path = tmp_path / "routes.toml"
    path.write_text(text)
    out = StringIO()
    call_command("load_routes", str(path), stdout=out)
    return out.getvalue()


def listed(client: httpx.Client) -> list[str]:
    return [entry["id"] for entry in client.get("/v1/models", headers={"X-User-ID": "ana"}).json()["data"]]


def plan(gateway, model: str) -> list[tuple[str, str | None]]:
    """What the gateway's worker would try for `model`, read from its own copy."""
    return [(t.upstream.name, t.model) for t in gateway.server.call(routes.targets_for(model))]


def test_a_file_loaded_while_serving_applies_half_a_second_later(
    gateway, upstream, openrouter, settings, clock, tmp_path, monkeypatch
):
    settings.CHANGE_CHECK_MS = 500
    monkeypatch.setenv("ROUTES_TEST_KEY", "sk-or-v1-x")
    text = FILE.format(bridge=upstream.url, openrouter=openrouter.url)
    with gateway.client() as client:
        before = listed(client)
        load(tmp_path, text)
        still = listed(client)
        clock[0] += 0.5
        after = listed(client)

    assert "stub-mini" in before and before == still  # relayed: no routes yet
    assert after == ["gpt-5", "meta-llama/llama-3.3-70b-instruct"]
    assert plan(gateway, "gpt-5-2025-08-07") == [("bridge", None), ("openrouter", "openai/gpt-5")]


def test_an_edit_in_admin_applies_half_a_second_later(gateway, upstream, settings, clock, admin_client):
    settings.CHANGE_CHECK_MS = 500
    bridge = Upstream.objects.create(name="bridge", base_url=upstream.url)
    spare = Upstream.objects.create(name="spare", base_url=upstream.url)
    route = Route.objects.create(model="gpt-5")
    route.targets.create(upstream=bridge)
    route.targets.create(upstream=spare, priority=2)

    first = plan(gateway, "gpt-5")
    form = {"name": "bridge", "base_url": upstream.url, "auth": "caller", "headers": "{}", "retries": "2"}
    disabled = admin_client.post(f"/admin/proxy/upstream/{bridge.pk}/change/", form)  # "enabled" unticked
    unchanged = plan(gateway, "gpt-5")
    clock[0] += 0.5
    second = plan(gateway, "gpt-5")
    admin_client.post(f"/admin/proxy/route/{route.pk}/delete/", {"post": "yes"})
    clock[0] += 0.5
    third = plan(gateway, "gpt-5")

    assert disabled.status_code == 302
    assert (first, unchanged) == ([("bridge", None), ("spare", None)], [("bridge", None), ("spare", None)])
    assert second == [("spare", None)]
    assert third == [("default", None)]  # no route left: the upstream at OPENCLAW_URL


def test_between_two_checks_calls_read_neither_routes_nor_their_version(gateway, settings, clock, monkeypatch):
    settings.CHANGE_CHECK_MS = 500
    reads = []
    real_read, real_read_table = routes.table_versions.read, routes._cache._read

    async def counted_read(name):
        reads.append(name)
        return await real_read(name)

    def counted_read_table():
        reads.append("rows")
        return real_read_table()

    monkeypatch.setattr(routes.table_versions, "read", counted_read)
    monkeypatch.setattr(routes._cache, "_read", counted_read_table)
    for _ in range(10):
        plan(gateway, "gpt-5")
    first = [name for name in reads if name in ("routes", "rows")]
    clock[0] += 0.5
    plan(gateway, "gpt-5")

    assert first == ["routes", "rows"]
    assert [name for name in reads if name in ("routes", "rows")] == ["routes", "rows", "routes"]


def test_two_gateway_processes_started_with_one_routes_file_route_the_same(
    transactional_db, upstream, openrouter, tmp_path
):
    path = tmp_path / "routes.toml"
    path.write_text(FILE.format(bridge=upstream.url, openrouter=openrouter.url))
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "gateway_project.serve"],
            cwd=BASE_DIR,
            env=gateway_environment(
                PORT=str(port),
                WEB_CONCURRENCY="1",
                OPENCLAW_URL=upstream.url,
                GATEWAY_ROUTES_FILE=str(path),
                ROUTES_TEST_KEY="sk-or-v1-x",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for port in ports
    ]
    try:
        for port, process in zip(ports, processes, strict=True):
            wait_until_serving(f"http://127.0.0.1:{port}", process)
        lists = []
        for port in ports:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                lists.append(listed(client))
    finally:
        for process in processes:
            process.terminate()
        outputs = [process.communicate(timeout=60)[0] for process in processes]

    assert lists[0] == lists[1] == ["gpt-5", "meta-llama/llama-3.3-70b-instruct"]
    loaded = [line for output in outputs for line in output.splitlines() if line.startswith(f"{path}:")]
    assert len(loaded) == 2 and any("2 added" in line for line in loaded)
    assert sorted(Upstream.objects.values_list("name", flat=True)) == ["bridge", "openrouter"]
    assert "sk-or-v1-x" not in "".join(outputs)
