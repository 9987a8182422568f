"""Which targets a call tries, in which order: names match like prices (exact, the base name
of a dated snapshot, the catch-all), priorities in order, weights share one priority, a pin
goes first, and the default upstream serves what no route names."""

import asyncio
from collections import Counter

import pytest
from django.test import RequestFactory

from accounts import identity
from accounts.models import Account
from billing import plans
from billing.models import Plan
from gateway_project.lib import async_sql, process_state, shared_redis
from proxy import routes
from proxy.models import Route, RouteTarget, Upstream
from tests.personas import trainee

BRIDGE_A, BRIDGE_B, OPENAI, OWN = "bridge-a", "bridge-b", "openai", "acme-bridge"


def upstream(name: str, **fields) -> Upstream:
    return Upstream.objects.create(name=name, base_url=f"http://{name}.test", **fields)


def route(model: str, *targets: tuple) -> Route:
    """targets: (upstream, model to send, priority, weight)."""
    row = Route.objects.create(model=model)
    for name, sent, priority, weight in targets:
        RouteTarget.objects.create(
            route=row, upstream=Upstream.objects.get(name=name), model=sent, priority=priority, weight=weight
        )
    return row


@pytest.fixture
def workshop(db):
    for name in (BRIDGE_A, BRIDGE_B, OPENAI, OWN):
        upstream(name)
    route("*", (BRIDGE_A, "", 1, 3), (BRIDGE_B, "", 1, 1), (OPENAI, "", 2, 1))
    route("gpt-4o", (OPENAI, "", 1, 1), (BRIDGE_A, "gpt-4o-mini", 2, 1))
    route("gpt-4o-mini", (BRIDGE_B, "", 1, 1))


def run(coroutine):
    """Run `coroutine` on a loop of its own, closing that loop's connections after it."""

    async def main():
        try:
            return await coroutine
        finally:
            await shared_redis.close()
            await async_sql.close()

    return asyncio.run(main())


def plan(table: routes.RouteTable, model: str, *, pin: str | None = None, draws=(0.0,), default=None) -> list:
    draws = iter(draws)
    found = table.targets(model, pin=pin, default=default, chance=lambda: next(draws))
    return [(t.upstream.name, t.model) for t in found]


def test_an_exact_name_a_dated_snapshot_and_the_catch_all(workshop):
    table = routes.read_table()

    assert plan(table, "gpt-4o") == [(OPENAI, None), (BRIDGE_A, "gpt-4o-mini")]
    assert plan(table, "gpt-4o-2024-08-06") == [(OPENAI, None), (BRIDGE_A, "gpt-4o-mini")]
    assert plan(table, "gpt-4o-mini") == [(BRIDGE_B, None)]  # its own route, not gpt-4o's
    assert plan(table, "o3") == [(BRIDGE_A, None), (BRIDGE_B, None), (OPENAI, None)]


def test_targets_of_one_priority_share_the_calls_by_weight(workshop):
    table = routes.read_table()

    # Weights 3 and 1: draws below 3/4 put bridge-a first, the rest bridge-b; OpenAI stays last.
    assert plan(table, "o3", draws=[0.74]) == [(BRIDGE_A, None), (BRIDGE_B, None), (OPENAI, None)]
    assert plan(table, "o3", draws=[0.75]) == [(BRIDGE_B, None), (BRIDGE_A, None), (OPENAI, None)]
    firsts = Counter(plan(table, "o3", draws=[i / 100])[0][0] for i in range(100))
    assert firsts == {BRIDGE_A: 75, BRIDGE_B: 25}


def test_a_pinned_upstream_goes_first_with_the_callers_model_then_the_route(workshop):
    table = routes.read_table()

    assert plan(table, "gpt-4o", pin=OWN) == [(OWN, None), (OPENAI, None), (BRIDGE_A, "gpt-4o-mini")]
    # Pinned to an upstream of the route: it is tried once, first.
    assert plan(table, "gpt-4o", pin=OPENAI) == [(OPENAI, None), (BRIDGE_A, "gpt-4o-mini")]
    assert plan(table, "gpt-4o", pin="no-such-upstream") == [(OPENAI, None), (BRIDGE_A, "gpt-4o-mini")]


def test_a_disabled_upstream_is_skipped_and_a_route_left_without_targets_falls_through(workshop):
    Upstream.objects.filter(name__in=[OPENAI, OWN]).update(enabled=False)
    Upstream.objects.filter(name=BRIDGE_B).update(enabled=False)
    table = routes.read_table()

    assert plan(table, "gpt-4o", pin=OWN) == [(BRIDGE_A, "gpt-4o-mini")]
    # gpt-4o-mini's only target is off: the catch-all serves it.
    assert plan(table, "gpt-4o-mini") == [(BRIDGE_A, None)]


def test_an_upstream_whose_key_cannot_be_decrypted_is_skipped_not_every_call_failed(workshop, caplog):
    from django.db import connection

    Upstream.objects.filter(name=OPENAI).update(auth="api_key", api_key="sk-operator-key")
    Upstream.objects.filter(name=BRIDGE_A).update(auth="api_key", api_key="sk-other-key")
    with connection.cursor() as cursor:  # a key sealed under a key the gateway no longer has
        cursor.execute("UPDATE proxy_upstream SET api_key = %s WHERE name = %s", ["gAAAAABnot-a-token", OPENAI])

    table = routes.read_table()

    assert plan(table, "gpt-4o") == [(BRIDGE_A, "gpt-4o-mini")]
    assert table.upstreams[BRIDGE_A].api_key == "sk-other-key"
    assert table.upstreams[BRIDGE_B].api_key is None
    [line] = [r.getMessage() for r in caplog.records if r.name == "proxy.routes"]
    assert line.startswith("upstream openai: its API key cannot be decrypted")
    assert "gAAAA" not in line


def test_an_upstream_read_and_saved_again_keeps_its_empty_key(workshop):
    row = Upstream.objects.get(name=BRIDGE_A)
    row.retries = 0
    row.save()  # once failed: an empty key read back as None was written as NULL

    assert Upstream.objects.get(name=BRIDGE_A).api_key == ""


def test_a_model_no_route_names_goes_to_the_default_upstream_or_nowhere(db):
    upstream(OPENAI)
    route("gpt-4o", (OPENAI, "", 1, 1))
    table = routes.read_table()
    default = routes.Upstream("default", "http://bridge.test", "caller", None, (), 5, 60, 60, 60, 0)

    assert plan(table, "o3", default=default) == [("default", None)]
    assert plan(table, "o3", default=None) == []
    assert plan(table, "gpt-4o", default=default) == [(OPENAI, None)]


def test_with_only_openclaw_url_every_model_goes_to_the_default_upstream(transactional_db, settings):
    settings.OPENCLAW_URL = "http://bridge.test"
    process_state.reset()

    targets = run(routes.targets_for("gpt-4o"))

    assert targets == [routes.Target(routes.default_upstream())]
    assert targets[0].upstream.base_url == "http://bridge.test" and targets[0].upstream.retries == 0
    settings.OPENCLAW_URL = None
    process_state.reset()
    assert run(routes.targets_for("gpt-4o")) == []


def test_a_targets_continuation_reaches_the_table_and_a_pin_on_it_stays_one_target(workshop):
    RouteTarget.objects.filter(upstream__name=BRIDGE_A, model="gpt-4o-mini").update(continuation="prefill")
    table = routes.read_table()

    assert [t.continuation for t in table.targets("gpt-4o", pin=None, default=None, chance=lambda: 0)] == [
        "",
        "prefill",
    ]
    pinned = table.targets("gpt-4o", pin=OPENAI, default=None, chance=lambda: 0)
    assert [(t.upstream.name, t.continuation) for t in pinned] == [(OPENAI, ""), (BRIDGE_A, "prefill")]


def test_a_streams_idle_timeout_is_the_upstreams_own_else_the_setting_within_upstream_timeout(db, settings):
    settings.UPSTREAM_TIMEOUT, settings.STREAM_IDLE_TIMEOUT = 60.0, 30.0
    assert routes.upstream_of(Upstream(name="u", base_url="http://u.test", idle_timeout=5)).stream_idle == 5
    assert routes.upstream_of(Upstream(name="u", base_url="http://u.test")).stream_idle == 30
    settings.UPSTREAM_TIMEOUT = 10.0
    assert routes.upstream_of(Upstream(name="u", base_url="http://u.test")).stream_idle == 10
    settings.OPENCLAW_URL = "http://bridge.test"
    assert routes.default_upstream().stream_idle == 10


def test_targets_for_uses_the_injected_chance_and_the_upstreams_settings(transactional_db, settings, monkeypatch):
    settings.OPENCLAW_URL = None
    settings.UPSTREAM_TIMEOUT = 45.0
    upstream(BRIDGE_A, connect_timeout=2, retries=3)
    upstream(BRIDGE_B)
    route("*", (BRIDGE_A, "", 1, 1), (BRIDGE_B, "", 1, 1))
    process_state.reset()
    monkeypatch.setattr(routes, "chance", lambda: 0.99)

    first, second = run(routes.targets_for("any-model"))

    assert (first.upstream.name, second.upstream.name) == (BRIDGE_B, BRIDGE_A)
    assert (second.upstream.connect_timeout, second.upstream.first_byte_timeout, second.upstream.retries) == (2, 45, 3)


def test_the_pin_reaches_the_view_through_the_caller_and_the_plan(transactional_db):
    Account.objects.create(user_id="acme", pinned_upstream=OWN)
    Plan.objects.update_or_create(tier="tier3", defaults={"pinned_upstream": OPENAI})
    process_state.reset()
    request = RequestFactory().post("/v1/chat/completions", headers={"X-User-ID": "acme"})

    async def both():
        return await identity.identify(request), await plans.limits_for("tier3")

    caller, limits = run(both())

    assert (caller.pin, limits.pin) == (OWN, OPENAI)


def test_a_key_holders_pin_comes_with_their_key(transactional_db):
    account, raw_key = trainee("acme")
    Account.objects.filter(pk=account.pk).update(pinned_upstream=OWN)
    process_state.reset()
    request = RequestFactory().post("/v1/chat/completions", headers={"X-Gateway-Key": raw_key})

    caller = run(identity.identify_by_key(request))

    assert (caller.user_id, caller.pin) == ("acme", OWN)
