"""manage.py recost: calls of unknown cost whose model is priced later get their cost, added
exactly to months, rollups and model months; run again, it changes nothing."""

import asyncio
import threading
from datetime import UTC, date, datetime
from io import StringIO

import httpx
import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection

from billing import money
from billing.models import ModelMonth, MonthlyUsage
from proxy.models import RequestLog
from tests.test_rollups import hours_rolled_up, log_by_hour, log_by_user, users_rolled_up

NANO = "gpt-5-nano"
# USD per million input, cached input and output tokens, from 2030-11-21.
PRICES = f"model,effective_from,input,cached_input,output\n{NANO},2030-11-21,1,0.5,4\n"


def expected_cost(row: RequestLog) -> int:
    """A row's cost in pico-USD at PRICES, worked out here apart from the gateway."""
    uncached = row.input_tokens - row.cached_input_tokens
    return uncached * 1_000_000 + row.cached_input_tokens * 500_000 + row.output_tokens * 4_000_000


def chat(client: httpx.Client, user_id: str, model: str, text: str = "hi", stream: bool = False) -> None:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]}
    assert client.post("/v1/chat/completions", json=body, headers={"X-User-ID": user_id}).status_code == 200


@pytest.fixture
def november(gateway, upstream, settings):
    """Calls of a model not priced yet, some of which its price (from Nov 21) covers."""
    settings.STREAM_USAGE = "passthrough"  # a stream without include_usage: usage unknown
    with gateway.client() as client:
        with time_machine.travel(datetime(2030, 11, 20, 18, 0, tzinfo=UTC), tick=False):
            chat(client, "ana", NANO)  # the day before the price
            gateway.log_rows()
        with time_machine.travel(datetime(2030, 11, 21, 9, 0, tzinfo=UTC), tick=False):
            chat(client, "ana", NANO)
            chat(client, "ben", NANO, "hello there, how are you")
            gateway.log_rows()
        with time_machine.travel(datetime(2030, 11, 21, 10, 30, tzinfo=UTC), tick=False):
            chat(client, "ben", f"{NANO}-2025-08-07")  # a dated snapshot: priced by the base name
            chat(client, "ana", "mystery-1")  # never priced
            chat(client, "ana", NANO, stream=True)  # usage unknown
            gateway.log_rows()
        with time_machine.travel(datetime(2030, 12, 2, 8, 0, tzinfo=UTC), tick=False):
            chat(client, "ben", NANO)
            gateway.log_rows()
    return gateway


def load_prices(tmp_path) -> str:
    path = tmp_path / "prices.csv"
    path.write_text(PRICES)
    out = StringIO()
    call_command("load_prices", str(path), stdout=out)
    return out.getvalue()


def recost(since: str) -> str:
    out = StringIO()
    call_command("recost", "--since", since, stdout=out)
    return out.getvalue()


def months() -> dict:
    return {
        (m.user_id, m.month): (m.requests, m.cost_pico_usd, m.unknown_cost_requests) for m in MonthlyUsage.objects.all()
    }


def model_months() -> dict:
    return {(m.month, m.model): (m.requests, m.cost_pico_usd, m.unpriced_requests) for m in ModelMonth.objects.all()}


def tables() -> tuple:
    return months(), model_months(), hours_rolled_up(), users_rolled_up()


def test_load_prices_says_how_many_calls_recost_would_cost(november, tmp_path):
    out = load_prices(tmp_path)

    assert (
        "4 calls of unknown cost from 2030-11-21 on can now be costed: run manage.py recost --since 2030-11-21" in out
    )
    assert RequestLog.objects.filter(cost_pico_usd__isnull=False).count() == 0  # it only counts


def test_recost_adds_each_cost_exactly_to_months_rollups_and_model_months(november, tmp_path):
    load_prices(tmp_path)
    months_before, models_before = months(), model_months()

    out = recost("2030-11-20")

    rows = {(r.user_id, r.model, r.created_at.day, r.total_tokens is None): r for r in RequestLog.objects.all()}
    costed = [rows["ana", NANO, 21, False], rows["ben", NANO, 21, False], rows["ben", f"{NANO}-2025-08-07", 21, False]]
    december = rows["ben", NANO, 2, False]
    assert all(r.cost_pico_usd == expected_cost(r) > 0 for r in [*costed, december])
    left = [rows["ana", NANO, 20, False], rows["ana", "mystery-1", 21, False], rows["ana", NANO, 21, True]]
    assert [r.cost_pico_usd for r in left] == [None, None, None]
    ana, ben = costed[0].cost_pico_usd, costed[1].cost_pico_usd + costed[2].cost_pico_usd
    nov, dec = date(2030, 11, 1), date(2030, 12, 1)
    assert months() == {
        ("ana", nov): (4, ana, 3),
        ("ben", nov): (2, ben, 0),
        ("ben", dec): (1, december.cost_pico_usd, 0),
    }
    assert months_before["ana", nov] == (4, 0, 4)
    assert model_months() == {
        **models_before,
        (nov, NANO): (4, costed[0].cost_pico_usd + costed[1].cost_pico_usd, 1),
        (nov, f"{NANO}-2025-08-07"): (1, costed[2].cost_pico_usd, 0),
        (dec, NANO): (1, december.cost_pico_usd, 0),
    }
    assert hours_rolled_up() == log_by_hour()
    assert users_rolled_up() == log_by_user()
    total = sum(r.cost_pico_usd for r in [*costed, december])
    assert out.splitlines() == [
        f"Costed 4 calls from 2030-11-20 on, {money.usd_text(total)} in all:",
        f"  2030-11 {NANO}: 2 calls, {money.usd_text(costed[0].cost_pico_usd + costed[1].cost_pico_usd)}",
        f"  2030-11 {NANO}-2025-08-07: 1 call, {money.usd_text(costed[2].cost_pico_usd)}",
        f"  2030-12 {NANO}: 1 call, {money.usd_text(december.cost_pico_usd)}",
        "Left of unknown cost: 1 call whose usage is unknown; "
        f"2 calls of models without a price on their day ({NANO}: 1, mystery-1: 1).",
    ]


def test_running_it_again_changes_nothing(november, tmp_path):
    load_prices(tmp_path)
    recost("2030-11-20")
    after_first = tables()
    costs = list(RequestLog.objects.order_by("id").values_list("cost_pico_usd", flat=True))

    out = recost("2030-11-20")

    assert tables() == after_first
    assert list(RequestLog.objects.order_by("id").values_list("cost_pico_usd", flat=True)) == costs
    assert out.splitlines()[0] == "No call of unknown cost from 2030-11-20 on could be costed: nothing changed."


def test_calls_before_since_are_left_alone(november, tmp_path):
    load_prices(tmp_path)

    out = recost("2030-12-01")

    costed = RequestLog.objects.filter(cost_pico_usd__isnull=False)
    assert [(r.user_id, r.created_at.date()) for r in costed] == [("ben", date(2030, 12, 2))]
    assert out.splitlines()[0].startswith("Costed 1 call from 2030-12-01 on")
    assert months()["ben", date(2030, 11, 1)][2] == 2


def test_without_a_new_price_nothing_changes(november):
    before = tables()

    out = recost("2030-11-01")

    assert tables() == before
    assert out.splitlines() == [
        "No call of unknown cost from 2030-11-01 on could be costed: nothing changed.",
        "Left of unknown cost: 1 call whose usage is unknown; "
        f"6 calls of models without a price on their day ({NANO}: 4, {NANO}-2025-08-07: 1, mystery-1: 1).",
    ]


def test_a_bad_day_is_refused():
    with pytest.raises(CommandError, match=r"--since must be a day, YYYY-MM-DD, not '21/11/2030'"):
        recost("21/11/2030")


def in_thread(target, *args) -> threading.Thread:
    def run():
        try:
            target(*args)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_two_runs_at_once_cost_each_call_once(november, tmp_path):
    load_prices(tmp_path)
    outputs: list[str] = []

    threads = [in_thread(lambda: outputs.append(recost("2030-11-20"))) for _ in range(2)]
    for thread in threads:
        thread.join(30)

    costed = sum(int(out.split()[1]) for out in outputs if out.startswith("Costed"))
    assert costed == 4
    costs = RequestLog.objects.filter(cost_pico_usd__isnull=False).values_list("cost_pico_usd", flat=True)
    assert sum(m[1] for m in months().values()) == sum(costs)
    assert hours_rolled_up() == log_by_hour()
    assert users_rolled_up() == log_by_user()


def test_it_runs_alongside_the_access_log_writer(gateway, upstream, tmp_path, settings):
    settings.RATE_LIMIT_PER_MINUTE = 10_000

    async def burst(count: int) -> None:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            bodies = [
                {"model": (NANO, "mystery-1")[n % 2], "messages": [{"role": "user", "content": "x"}]}
                for n in range(count)
            ]
            await asyncio.gather(
                *(
                    client.post("/v1/chat/completions", json=b, headers={"X-User-ID": f"u{n % 3}"})
                    for n, b in enumerate(bodies)
                )
            )

    asyncio.run(burst(200))
    gateway.log_rows()
    (tmp_path / "prices.csv").write_text(PRICES.replace("2030-11-21", "2020-01-01"))
    call_command("load_prices", str(tmp_path / "prices.csv"), stdout=StringIO())

    writer = in_thread(lambda: asyncio.run(burst(60)))
    out = recost("2020-01-01")
    writer.join(60)
    gateway.log_rows()
    recost("2020-01-01")  # whatever the workers wrote with the prices they held before

    rows = list(RequestLog.objects.all())
    # The 100 written before the price, and any the workers wrote meanwhile with the prices they held.
    assert out.startswith("Costed ") and int(out.split()[1]) >= 100
    assert len(rows) == 260
    assert all(r.cost_pico_usd == expected_cost(r) for r in rows if r.model == NANO)
    by_user = {}
    for row in rows:
        cost, unknown = by_user.get(row.user_id, (0, 0))
        by_user[row.user_id] = (cost + (row.cost_pico_usd or 0), unknown + (row.cost_pico_usd is None))
    assert {user: (cost, unknown) for (user, _), (_, cost, unknown) in months().items()} == by_user
    assert hours_rolled_up() == log_by_hour()
    assert users_rolled_up() == log_by_user()
