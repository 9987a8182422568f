"""Admin for tables that grow without bound (the access log): pages that never read the whole table.

Django's changelist counts every row (twice), lists every distinct value for a field filter and
scans the table for the years, months or days of its date hierarchy. Here each of those reads a
bounded number of rows: counts stop at COUNT_CAP (FILTERED_COUNT_CAP for a filtered list), filter
choices come from the most recent rows, the date hierarchy is derived from the first and last
dates (two index lookups), pages stop where the count does (an OFFSET walks every row it
skips), and a time range is also bounded by id (see `_id_bounds`).
"""

import calendar
import datetime
from collections.abc import Callable
from functools import cached_property

from django.contrib import admin
from django.contrib.admin.utils import build_q_object_from_lookup_parameters
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import EmptyPage, Paginator
from django.db import connections
from django.db.models import F, Max, Min, Model
from django.utils import formats, timezone
from django.utils.text import capfirst

from gateway_project.lib.read_only_admin import ReadOnlyAdmin

COUNT_CAP = 10_000
# A rare value (status 5xx) is spread thin: reaching 10,000 of them reads hundreds of thousands.
FILTERED_COUNT_CAP = 1_000
RECENT_ROWS = 10_000
MAX_CHOICES = 50
# A time range is bounded by id only up to about this many rows: finding its smallest and
# largest id reads every row of the range.
ID_BOUNDS_MAX_ROWS = 300_000


class EstimatedCountPaginator(Paginator):
    """Counts up to COUNT_CAP rows exactly and estimates past that, as healthchecks' PingsPaginator.

    An unfiltered list larger than the cap shows the table's estimated size (PostgreSQL's
    planner statistics, or the id span on SQLite); a filtered one shows "at least
    FILTERED_COUNT_CAP". Pages stop at COUNT_CAP rows (the first 100 pages): a later page
    number is answered with the last of them.
    """

    @cached_property
    def count(self) -> int:
        # SELECT COUNT(*) FROM (SELECT … LIMIT cap + 1): stops reading at the cap.
        filtered = bool(self.object_list.query.where)
        cap = FILTERED_COUNT_CAP if filtered else COUNT_CAP
        counted = self.object_list[: cap + 1].count()
        if counted <= cap:
            self.accuracy = "exact"
            return counted
        if filtered:
            self.accuracy = "at least"
            return cap
        self.accuracy = "about"
        return max(counted, _estimated_rows(self.object_list.model, self.object_list.db))

    accuracy = "exact"

    @cached_property
    def num_pages(self) -> int:
        return min(Paginator.num_pages.func(self), self.max_pages)

    @property
    def max_pages(self) -> int:
        return max(1, COUNT_CAP // self.per_page)

    @property
    def truncated(self) -> bool:
        """More rows than the pages offered."""
        return self.accuracy != "exact" or Paginator.num_pages.func(self) > self.num_pages

    def validate_number(self, number) -> int:
        try:
            return super().validate_number(number)
        except EmptyPage:
            if int(number) > self.num_pages:
                return self.num_pages
            raise


def _estimated_rows(model: type[Model], using: str) -> int:
    connection = connections[using]
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Kept up to date by autovacuum/ANALYZE; -1 before the table was first analysed.
            cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [model._meta.db_table])
        else:
            # SQLite keeps no row estimate. For an append-only log the id span is one; each
            # sub-select is a single lookup at one end of the primary key.
            cursor.execute(f"SELECT COALESCE((SELECT MAX(id) FROM {table}) - (SELECT MIN(id) FROM {table}) + 1, 0)")
        row = cursor.fetchone()
    return max(int(row[0]), 0) if row else 0


class RecentValuesFilter(admin.SimpleListFilter):
    """Choices are the values found in the most recent RECENT_ROWS rows (and the one selected):
    Django's field filter would read every row for SELECT DISTINCT."""

    field_name: str

    def lookups(self, request, model_admin) -> list[tuple[str, str]]:
        model = model_admin.model
        values = list(
            model.objects.filter(pk__gt=_recent_floor(request, model))
            .exclude(**{self.field_name: ""})
            .order_by(self.field_name)
            .values_list(self.field_name, flat=True)
            .distinct()[:MAX_CHOICES]
        )
        selected = self.value()
        if selected and selected not in values:
            values.append(selected)
        return [(value, value) for value in values]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        return queryset.filter(**{self.field_name: self.value()})


def _recent_floor(request, model: type[Model]) -> int:
    """The id RECENT_ROWS rows back from the newest (0 in a smaller table), read once per request.

    Read as a number first: inside the values query as a sub-select, the planner cannot see
    its value and plans for a third of the table (a parallel scan, ~100 ms at 10 M rows).
    """
    cache = request.__dict__.setdefault("_recent_floors", {})
    if model not in cache:
        ids = list(model.objects.order_by("-pk").values_list("pk", flat=True)[RECENT_ROWS : RECENT_ROWS + 1])
        cache[model] = ids[0] if ids else 0
    return cache[model]


def _id_bounds(rows, field: str) -> dict:
    """Extra conditions on the id implied by `rows` (a time range), for lists ordered by id.

    Newest first, the primary key is walked down from the newest row, discarding every row
    newer than the range (and, past the range, every older row while the count looks for more).
    The bounds are the smallest and largest id of the rows in the range themselves, so they
    hold however ids and times interleave; they cost a read of the range, so a range that
    looks larger than ID_BOUNDS_MAX_ROWS is left alone.
    """
    first = rows.order_by(field).values_list("pk", flat=True).first()
    if first is None:
        return {"pk__in": []}  # nothing in the range: no query at all
    last = rows.order_by(f"-{field}").values_list("pk", flat=True).first()
    # Ids grow with time, roughly: their span only estimates the range's size.
    if abs(last - first) > ID_BOUNDS_MAX_ROWS:
        return {}
    # "+ 0" keeps MIN/MAX from walking the primary key: they aggregate the range's rows, found
    # through the time index.
    bounds = rows.aggregate(low=Min(F("pk") + 0), high=Max(F("pk") + 0))
    return {"pk__gte": bounds["low"], "pk__lte": bounds["high"]}


class BoundedChangeList(ChangeList):
    def get_filters(self, request):
        specs, has_filters, remaining, duplicates, active = super().get_filters(request)
        # The time range asked for, by a date filter of `id_follows` or the date hierarchy
        # (which Django turns into field__gte and field__lt).
        field = getattr(self.model_admin, "id_follows", None)
        self.time_range = []
        if field:
            for spec in specs:
                if getattr(spec, "field_path", None) == field and spec.used_parameters:
                    self.time_range.append(build_q_object_from_lookup_parameters(spec.used_parameters))
            dated = {key: value for key, value in remaining.items() if key.startswith(f"{field}__")}
            if dated:
                self.time_range.append(build_q_object_from_lookup_parameters(dated))
        return specs, has_filters, remaining, duplicates, active

    def get_queryset(self, request, exclude_parameters=None):
        queryset = super().get_queryset(request, exclude_parameters)
        if self.time_range:
            rows = self.root_queryset.order_by()
            for condition in self.time_range:
                rows = rows.filter(condition)
            queryset = queryset.filter(**_id_bounds(rows, self.model_admin.id_follows))
        return queryset

    def get_results(self, request):
        super().get_results(request)
        # A page number past the last page offered was answered with that page.
        self.page_num = min(self.page_num, self.paginator.num_pages)
        self.pages_hint = self.multi_page and self.paginator.truncated and self.page_num == self.paginator.num_pages

    def bounded_date_hierarchy(self) -> dict:
        """The context of admin/date_hierarchy.html, from the first and last dates of the table
        (not of the filtered list): periods are calendar ranges, and one may hold no rows."""
        field = self.date_hierarchy
        year, month, day = (self.params.get(f"{field}__{part}") for part in ("year", "month", "day"))

        def link(filters: dict) -> str:
            return self.get_query_string(filters, [f"{field}__"])

        if year and month and day:
            return _one_day(link, field, year, month, day)
        first, last = _first_and_last(self.root_queryset, field)
        if first is None or last is None:
            return {"show": False}
        if not year and first.year == last.year:
            year = first.year
            if first.month == last.month:
                month = first.month
        if year and month:
            return _days_of_month(link, field, int(year), int(month), first, last)
        if year:
            return _months_of_year(link, field, int(year), first, last)
        return _years(link, field, first, last)


# The date hierarchy at each level: `link` makes the URL of a period's list.
_Link = Callable[[dict], str]


def _one_day(link: _Link, field: str, year: str, month: str, day: str) -> dict:
    date = datetime.date(int(year), int(month), int(day))
    return {
        "show": True,
        "back": {"link": link({f"{field}__year": year, f"{field}__month": month}), "title": _month(date)},
        "choices": [{"title": capfirst(formats.date_format(date, "MONTH_DAY_FORMAT"))}],
    }


def _days_of_month(
    link: _Link, field: str, year: int, month: int, first: datetime.datetime, last: datetime.datetime
) -> dict:
    days = range(1, calendar.monthrange(year, month)[1] + 1)
    return {
        "show": True,
        "back": {"link": link({f"{field}__year": year}), "title": str(year)},
        "choices": [
            {
                "link": link({f"{field}__year": year, f"{field}__month": month, f"{field}__day": number}),
                "title": capfirst(formats.date_format(datetime.date(year, month, number), "MONTH_DAY_FORMAT")),
            }
            for number in days
            if first.date() <= datetime.date(year, month, number) <= last.date()
        ],
    }


def _months_of_year(link: _Link, field: str, year: int, first: datetime.datetime, last: datetime.datetime) -> dict:
    return {
        "show": True,
        "back": {"link": link({}), "title": "All dates"},
        "choices": [
            {
                "link": link({f"{field}__year": year, f"{field}__month": number}),
                "title": _month(datetime.date(year, number, 1)),
            }
            for number in range(1, 13)
            if (first.year, first.month) <= (year, number) <= (last.year, last.month)
        ],
    }


def _years(link: _Link, field: str, first: datetime.datetime, last: datetime.datetime) -> dict:
    return {
        "show": True,
        "back": None,
        "choices": [
            {"link": link({f"{field}__year": str(number)}), "title": str(number)}
            for number in range(first.year, last.year + 1)
        ],
    }


def _month(date: datetime.date) -> str:
    return capfirst(formats.date_format(date, "YEAR_MONTH_FORMAT"))


def _first_and_last(queryset, field: str) -> tuple[datetime.datetime | None, datetime.datetime | None]:
    # Two queries, not MIN and MAX in one: SQLite answers a lone MIN or MAX from the index
    # but scans the table for both together.
    first = queryset.order_by(field).values_list(field, flat=True).first()
    last = queryset.order_by(f"-{field}").values_list(field, flat=True).first()
    return (timezone.localtime(first) if first else None, timezone.localtime(last) if last else None)


class LargeTableAdmin(ReadOnlyAdmin):
    """Read-only admin over a table too large to count or scan on each page view.

    Its changelist template uses `cl.bounded_date_hierarchy` instead of Django's date
    hierarchy tag, and shows `pages_hint` under the last page offered of a longer list.
    `id_follows`: a date field whose order the ids follow (roughly), so a range of it is
    also bounded by id.
    """

    id_follows: str | None = None
    pages_hint = "Only the first pages are listed: narrow the list with a filter or a search to reach the rest."

    change_list_template = "admin/large_table_change_list.html"
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    # Facets would count every choice of every filter over the table.
    show_facets = admin.ShowFacets.NEVER

    def get_changelist(self, request, **kwargs):
        return BoundedChangeList
