"""Model prices, and what a call costs: its usage at the price in effect at its time.

Providers count cached input inside the input tokens (OpenAI's prompt_tokens include
cached_tokens), so a call costs uncached input * input price + cached * cached price +
output * output price. A call whose usage is unknown, or of a model without a price, has
unknown cost (None), never 0.
"""

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime

from billing import money
from billing.cached import Reloaded
from billing.call_usage import Usage
from gateway_project.lib import table_versions

# The dated snapshot suffixes a price of the base name also covers: -2024-07-18, -0613, -20240718.
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|\d{4})$")


@dataclass(frozen=True, slots=True)
class Price:
    model: str
    effective_from: date
    # pico-dollars per token
    input: int
    cached_input: int
    output: int

    def cost(self, usage: Usage) -> int:
        uncached = usage.input_tokens - usage.cached_input_tokens
        return uncached * self.input + usage.cached_input_tokens * self.cached_input + usage.output_tokens * self.output


class PriceBook:
    def __init__(self, prices: list[Price]) -> None:
        self._by_model: dict[str, list[Price]] = defaultdict(list)
        for price in sorted(prices, key=lambda p: p.effective_from, reverse=True):
            self._by_model[price.model].append(price)

    def price_for(self, model: str, at: datetime) -> Price | None:
        """The price in effect on `at`'s day (UTC) of `model`, or of the name it is a dated
        snapshot of; the longest name with a price in effect wins."""
        day = at.astimezone(UTC).date()
        for name in names_for(model):
            for price in self._by_model.get(name, ()):
                if price.effective_from <= day:
                    return price
        return None

    def cost(self, model: str, at: datetime, usage: Usage | None) -> int | None:
        """pico-dollars, or None when unknown: unknown usage, or no price for a call that used tokens."""
        if usage is None:
            return None
        if not usage.total_tokens and not usage.input_tokens and not usage.output_tokens:
            return 0
        price = self.price_for(model, at)
        return None if price is None else price.cost(usage)


def names_for(model: str) -> list[str]:
    """The model's own name, then the name it is a dated snapshot of, if it is one."""
    snapshot = _SNAPSHOT.search(model)
    return [model, model[: snapshot.start()]] if snapshot and snapshot.start() > 0 else [model]


def read_book() -> PriceBook:
    from billing.models import ModelPrice

    return PriceBook(
        [
            Price(
                row.model,
                row.effective_from,
                money.per_token(row.input_per_million),
                money.per_token(row.cached_input_per_million),
                money.per_token(row.output_per_million),
            )
            for row in ModelPrice.objects.all()
        ]
    )


# Every save or delete of a price bumps this table version (see follow_changes()), and each
# worker reads its prices again at its next check: a new price applies within a second.
TABLE = "prices"
_cache = Reloaded(read_book, "prices", table=TABLE)


def follow_changes() -> None:
    """Have every save and delete of a price through the ORM (admin, shell) reach the workers."""
    from billing.models import ModelPrice

    table_versions.bump_on_change(ModelPrice, TABLE)


def changed() -> None:
    """Tell the workers prices changed, in the transaction of a change the ORM sends no
    signal for (QuerySet.update(), bulk_create())."""
    table_versions.bump(TABLE)


async def book() -> PriceBook:
    return await _cache.get()


def loaded_book() -> PriceBook | None:
    """The book this worker loaded last, without reloading it (None before the first load):
    for work off the request's path that must not wait on the database."""
    return _cache._value
