"""GET /v1/models: relayed as before with only OPENCLAW_URL; with routes, the routed names and
what the catch-all's upstream lists (asked with its own credential), merged in OpenAI's shape."""

import json

import pytest

from proxy.models import Route, RouteTarget, Upstream
from tests.servers import ServerThread, closed_port_url

KEY = "sk-or-v1-operator-key-never-logged"
CALLER_KEY = "sk-caller-own-key"


class ListingUpstream:
    """An OpenAI-compatible upstream that lists `models` and records what it was sent."""

    def __init__(self, *models: str) -> None:
        self.models = models
        self.seen: list[dict[str, str]] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        self.seen.append({k.decode().lower(): v.decode() for k, v in scope["headers"]} | {":path": scope["path"]})
        data = [{"id": m, "object": "model", "created": 1, "owned_by": "openrouter"} for m in self.models]
        body = json.dumps({"object": "list", "data": data}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def openrouter():
    app = ListingUpstream("meta-llama/llama-3.3-70b-instruct", "openai/gpt-5")
    server = ServerThread(app)
    app.url = server.url
    yield app
    server.stop()


def routed(catch_all_url: str | None, **catch_all) -> None:
    bridge = Upstream.objects.create(name="bridge", base_url="http://bridge.test")
    RouteTarget.objects.create(route=Route.objects.create(model="gpt-5"), upstream=bridge)
    if catch_all_url:
        openrouter = Upstream.objects.create(
            name="openrouter",
            base_url=catch_all_url,
            auth="api_key",
            api_key=KEY,
            headers={"X-Title": "workshop"},
            **catch_all,
        )
        RouteTarget.objects.create(route=Route.objects.create(model="*"), upstream=openrouter)


def models(client, **headers) -> tuple[int, list[str]]:
    response = client.get("/v1/models", headers={"X-User-ID": "ana", "Authorization": f"Bearer {CALLER_KEY}"})
    body = response.json()
    return response.status_code, [entry["id"] for entry in body.get("data", [])]


def test_with_only_openclaw_url_the_list_is_relayed_as_before(gateway, upstream):
    with gateway.client() as client:
        status, names = models(client)
        rows = gateway.log_rows()

    assert status == 200 and "stub-mini" in names
    assert [(seen.method, seen.path) for seen in upstream.seen] == [("GET", "/v1/models")]
    assert [(row.endpoint, row.status, row.upstream) for row in rows] == [("/v1/models", 200, "default")]


def test_routed_names_come_first_then_what_the_catch_all_upstream_lists(gateway, upstream, openrouter, process_log):
    routed(openrouter.url)
    with gateway.client() as client:
        response = client.get("/v1/models", headers={"X-User-ID": "ana", "Authorization": f"Bearer {CALLER_KEY}"})
        rows = gateway.log_rows()

    body = response.json()
    assert response.status_code == 200 and body["object"] == "list"
    assert [entry["id"] for entry in body["data"]] == ["gpt-5", "meta-llama/llama-3.3-70b-instruct", "openai/gpt-5"]
    assert body["data"][0] == {"id": "gpt-5", "object": "model", "created": 0, "owned_by": "organized-gateway"}
    # Asked with the operator's key and its headers, never the caller's credential.
    (asked,) = openrouter.seen
    assert (asked[":path"], asked["authorization"], asked["x-title"]) == ("/v1/models", f"Bearer {KEY}", "workshop")
    assert upstream.seen == []  # the default upstream is not asked: the catch-all serves every other model
    assert [(row.status, row.model) for row in rows] == [(200, "")]
    logged = "\n".join(record.getMessage() for record in process_log.records)
    assert KEY not in logged and CALLER_KEY not in logged


def test_without_a_catch_all_the_default_upstream_lists_with_the_callers_credential(gateway, upstream):
    routed(None)
    with gateway.client() as client:
        status, names = models(client)

    assert status == 200
    assert names[0] == "gpt-5" and "stub-mini" in names
    assert upstream.last.headers["authorization"] == f"Bearer {CALLER_KEY}"


def test_an_upstream_that_cannot_be_asked_is_left_out_and_logged_without_its_key(gateway, upstream, process_log):
    routed(closed_port_url(), connect_timeout=1)
    with gateway.client() as client:
        status, names = models(client)

    assert (status, names) == (200, ["gpt-5"])
    warnings = [r.getMessage() for r in process_log.records if "models list" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("models list: upstream openrouter left out (Connect")
    assert KEY not in "\n".join(r.getMessage() for r in process_log.records)
