"""Costing calls of unknown cost once their model has a price (manage.py recost).

A call is written with the prices its worker held then; one of a model priced later, even
for its day, keeps an unknown cost. Recosting gives such a row (known usage, a price in
effect on its day) its cost, and moves that cost exactly where the writer would have put
it: the user's month (cost up, unknown-cost calls down), the user's hour and totals
(billing.rollups) and the model's month.

Rows are costed in batches, each in one transaction; a row is costed only if it still
has no cost (a conditional update), so runs side by side, or a run after another, never
count a row twice. The access-log writer only inserts rows and adds to the counters, so
it runs alongside; the counters are updated in the writer's order (hours, totals, model
months, months, each by key) so neither waits on the other in a cycle.
"""

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from django.db import transaction
from django.db.models import F

from billing import rollups
from billing.call_usage import Usage
from billing.models import HourlyUsage, ModelMonth, MonthlyUsage, UserTotal
from billing.monthly_usage import month_of
from billing.prices import PriceBook

BATCH_ROWS = 500
_COLUMNS = (
    "id",
    "user_id",
    "model",
    "created_at",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "total_tokens",
)


@dataclass(frozen=True, slots=True)
class _Row:
    id: int
    user_id: str
    model: str
    created_at: datetime
    cost: int


@dataclass
class Report:
    # (month, model) → [calls costed, pico-USD added]
    costed: dict[tuple[date, str], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    # Rows left of unknown cost: usage unknown, or (by model) still no price on their day.
    unknown_usage_requests: int = 0
    unpriced: Counter = field(default_factory=Counter)

    @property
    def calls(self) -> int:
        return sum(calls for calls, _ in self.costed.values())

    @property
    def cost(self) -> int:
        return sum(cost for _, cost in self.costed.values())


def costable(since: date, book: PriceBook) -> int:
    """How many rows from `since` on `recost` would give a cost now (writes nothing)."""
    return sum(len(batch) for batch in _batches(since, book, Report()))


def recost(since: date, book: PriceBook) -> Report:
    """Cost the rows of unknown cost from `since` (UTC) on that `book` prices; see the module."""
    report = Report()
    for batch in _batches(since, book, report):
        with transaction.atomic():
            _apply(batch, report)
    return report


def _batches(since: date, book: PriceBook, report: Report) -> Iterator[list[_Row]]:
    """The rows of unknown cost from `since` on that `book` prices, batch by batch; those it
    cannot price are counted in `report`."""
    from proxy.models import RequestLog  # the log is proxy's; billing reads it here only

    unknown = RequestLog.objects.filter(
        created_at__gte=datetime(since.year, since.month, since.day, tzinfo=UTC), cost_pico_usd__isnull=True
    ).order_by("id")
    last = 0
    while True:
        rows = list(unknown.filter(id__gt=last).values_list(*_COLUMNS)[:BATCH_ROWS])
        if not rows:
            return
        last = rows[-1][0]
        batch = []
        for row_id, user_id, model, created_at, *tokens in rows:
            if None in tokens:
                report.unknown_usage_requests += 1
                continue
            cost = book.cost(model, created_at, Usage(*tokens))
            if cost is None:
                report.unpriced[model] += 1
            else:
                batch.append(_Row(row_id, user_id, model, created_at, cost))
        if batch:
            yield batch


def _apply(batch: list[_Row], report: Report) -> None:
    from proxy.models import RequestLog

    hours: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    users: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    models: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    months: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for row in batch:
        # Only if no other run costed it meanwhile (PostgreSQL re-checks the condition once
        # the other run's transaction ends).
        if not RequestLog.objects.filter(id=row.id, cost_pico_usd__isnull=True).update(cost_pico_usd=row.cost):
            continue
        month = month_of(row.created_at.astimezone(UTC))
        for summed in (
            hours[row.user_id, rollups.hour_of(row.created_at)],
            users[(row.user_id,)],
            models[month, row.model],
            months[row.user_id, month],
            report.costed[month, row.model],
        ):
            summed[0] += 1
            summed[1] += row.cost
    _add(HourlyUsage, ("user_id", "hour"), hours, "unknown_cost_requests")
    _add(UserTotal, ("user_id",), users, "unknown_cost_requests")
    _add(ModelMonth, ("month", "model"), models, "unpriced_requests")
    _add(MonthlyUsage, ("user_id", "month"), months, "unknown_cost_requests")


def _add(model, key: tuple[str, ...], sums: dict[tuple, list[int]], unknown: str) -> None:
    """Add each key's cost to its row and take its calls off the row's unknown count."""
    for values, (calls, cost) in sorted(sums.items()):
        model.objects.filter(**dict(zip(key, values, strict=True))).update(
            cost_pico_usd=F("cost_pico_usd") + cost, **{unknown: F(unknown) - calls}
        )
