"""The routing page's three routes files (docs/routes/), loaded as written, their base URLs pointed
at upstreams on loopback: each loads, loads again without a change, and routes as documented."""

import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from accounts.models import Account
from proxy import routes
from tests.servers import BASE_DIR, ServerThread
from tests.test_models_list import ListingUpstream

DOCS = BASE_DIR / "docs" / "routes"
BASE_URL = re.compile(r'^\[upstreams\.([\w-]+)\]\nbase_url = "[^"]+"', re.MULTILINE)


@pytest.fixture
def loopback():
    """One listing upstream per name, started on first use."""
    started: dict[str, tuple[ListingUpstream, ServerThread]] = {}

    def url(name: str) -> str:
        if name not in started:
            app = ListingUpstream(f"{name}-model")
            started[name] = app, ServerThread(app)
        return started[name][1].url

    yield url
    for _, server in started.values():
        server.stop()


def load(tmp_path: Path, name: str, loopback) -> tuple[str, str]:
    text = (DOCS / name).read_text()
    text = BASE_URL.sub(lambda m: f'[upstreams.{m[1]}]\nbase_url = "{loopback(m[1])}"', text)
    path = tmp_path / name
    path.write_text(text)
    outputs = []
    for _ in range(2):
        out = StringIO()
        call_command("load_routes", str(path), stdout=out)
        outputs.append(out.getvalue())
    return outputs[0], outputs[1]


def plan(gateway, model: str, pin: str | None = None) -> list[tuple[str, str | None]]:
    return [(t.upstream.name, t.model) for t in gateway.server.call(routes.targets_for(model, pin=pin))]


def listed(gateway) -> list[str]:
    with gateway.client() as client:
        response = client.get("/v1/models", headers={"X-User-ID": "ana"})
    return [entry["id"] for entry in response.json()["data"]]


def test_two_bridges_share_the_workshop_with_openai_as_fallback(gateway, upstream, loopback, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-proj-operator")
    first, again = load(tmp_path, "workshop-bridges.toml", loopback)
    monkeypatch.setattr(routes, "chance", lambda: 0.5)  # weights 2:1, a draw under 2/3: bridge-a first
    favoured = plan(gateway, "gpt-5-mini")
    monkeypatch.setattr(routes, "chance", lambda: 0.9)

    assert "3 upstreams, 1 route, 0 pins: upstreams 3 added" in first and "nothing changed" in again
    assert favoured == [("bridge-a", None), ("bridge-b", None), ("openai", None)]
    assert plan(gateway, "gpt-5-mini") == [("bridge-b", None), ("bridge-a", None), ("openai", None)]
    assert listed(gateway) == ["bridge-a-model", "bridge-b-model", "openai-model"]


def test_openrouter_serves_the_models_the_bridge_does_not(gateway, upstream, loopback, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-operator")
    first, again = load(tmp_path, "openrouter.toml", loopback)

    assert "2 upstreams, 4 routes, 0 pins" in first and "nothing changed" in again
    assert plan(gateway, "gpt-5-2025-08-07") == [("bridge", None), ("openrouter", "openai/gpt-5")]
    assert plan(gateway, "claude-sonnet") == [("openrouter", "anthropic/claude-sonnet-4")]
    assert plan(gateway, "meta-llama/llama-3.3-70b-instruct") == [("openrouter", None)]
    assert listed(gateway) == ["claude-sonnet", "gpt-5", "gpt-5-mini", "openrouter-model"]


def test_a_customers_own_bridge_serves_its_calls_first(gateway, upstream, loopback, tmp_path):
    Account.objects.create(user_id="acme")
    first, again = load(tmp_path, "customer-bridge.toml", loopback)

    assert "2 upstreams, 1 route, 1 pin" in first and "pins 1 changed" in first and "nothing changed" in again
    assert Account.objects.get(user_id="acme").pinned_upstream == "acme-bridge"
    assert plan(gateway, "gpt-5", pin="acme-bridge") == [("acme-bridge", None), ("bridge", None)]
    assert plan(gateway, "gpt-5") == [("bridge", None)]
