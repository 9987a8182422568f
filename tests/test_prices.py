"""Prices and cost, as pure logic: matching a model to its price, exact integer money."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from billing import money
from billing.call_usage import NO_USAGE, Usage
from billing.prices import Price, PriceBook

NOV_20 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def price(model: str, since: date = date(2026, 1, 1), *, input="1", cached="0.5", output="2") -> Price:
    return Price(model, since, money.per_token(input), money.per_token(cached), money.per_token(output))


def test_a_call_costs_uncached_input_cached_input_and_output_at_their_prices():
    book = PriceBook([price("gpt-4o-mini", input="0.15", cached="0.075", output="0.60")])

    cost = book.cost(
        "gpt-4o-mini", NOV_20, Usage(input_tokens=1000, cached_input_tokens=400, output_tokens=50, total_tokens=1050)
    )

    # 600 * 0.15 + 400 * 0.075 + 50 * 0.60 USD per million tokens, exactly.
    assert money.to_usd(cost) == Decimal("0.00015")
    assert cost == 150_000_000


def test_dated_snapshots_take_their_base_models_price_and_an_exact_price_wins():
    book = PriceBook(
        [price("gpt-4o-mini", input="0.15"), price("gpt-4o", input="2.5"), price("gpt-4-0613", input="30")]
    )

    assert book.price_for("gpt-4o-mini-2024-07-18", NOV_20).model == "gpt-4o-mini"
    assert book.price_for("gpt-4o-2024-08-06", NOV_20).model == "gpt-4o"
    assert book.price_for("gpt-4-0613", NOV_20).model == "gpt-4-0613"
    assert book.price_for("gpt-3.5-turbo-0125", NOV_20) is None


def test_a_prefix_never_prices_a_different_model():
    book = PriceBook([price("gpt-4o")])

    assert book.price_for("gpt-4o-mini", NOV_20) is None
    assert book.price_for("gpt-4o-mini-search-preview", NOV_20) is None


def test_the_price_in_effect_is_the_latest_one_dated_on_or_before_the_call():
    book = PriceBook([price("m", date(2026, 11, 1), input="1"), price("m", date(2026, 11, 21), input="3")])

    assert book.price_for("m", datetime(2026, 11, 20, 23, 59, tzinfo=UTC)).input == money.per_token("1")
    assert book.price_for("m", datetime(2026, 11, 21, 0, 0, tzinfo=UTC)).input == money.per_token("3")
    assert book.price_for("m", datetime(2026, 10, 31, tzinfo=UTC)) is None


def test_unknown_usage_or_a_missing_price_is_unknown_cost_and_nothing_used_costs_nothing():
    book = PriceBook([price("m")])

    assert book.cost("m", NOV_20, None) is None
    assert book.cost("unpriced", NOV_20, Usage(1, 0, 1, 2)) is None
    assert book.cost("unpriced", NOV_20, NO_USAGE) == 0


@pytest.mark.parametrize("value", ["0.0000001", "1e-7"])
def test_prices_finer_than_a_millionth_of_a_dollar_per_million_are_refused(value):
    with pytest.raises(ValueError):
        money.per_token(value)


def test_money_prints_exactly():
    assert money.usd_text(None) == "unknown"
    assert money.usd_text(0) == "$0.00"
    assert money.usd_text(money.to_pico("12.5")) == "$12.50"
    assert money.usd_text(19_000_000) == "$0.000019"
