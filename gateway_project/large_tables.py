"""Admin for tables that grow without bound (the access log): pages that never read the whole table.

Django's changelist counts every row (twice), lists every distinct value for a field filter and
scans the table for the years, months or days of its date hierarchy. Here each of those reads a
bounded number of rows: counts stop at COUNT_CAP, filter choices come from the most recent rows,
and the date hierarchy is derived from the first and last dates (two index lookups).
"""

import calendar
import datetime
from functools import cached_property

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Model, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import formats, timezone
from django.utils.text import capfirst

from gateway_project.admin_base import ReadOnlyAdmin

COUNT_CAP = 10_000
RECENT_ROWS = 10_000
MAX_CHOICES = 50


class EstimatedCountPaginator(Paginator):
    """Counts up to COUNT_CAP rows exactly and estimates past that, as healthchecks' PingsPaginator.

    An unfiltered list larger than the cap shows the table's estimated size (PostgreSQL's
    planner statistics, or the id span on SQLite); a filtered one shows "more than COUNT_CAP".
    """

    @cached_property
    def count(self) -> int:
        # SELECT COUNT(*) FROM (SELECT … LIMIT cap + 1): stops reading at the cap.
        counted = self.object_list[: COUNT_CAP + 1].count()
        if counted <= COUNT_CAP:
            self.accuracy = "exact"
            return counted
        if self.object_list.query.where:
            self.accuracy = "at least"
            return COUNT_CAP
        self.accuracy = "about"
        return max(counted, _estimated_rows(self.object_list.model, self.object_list.db))

    accuracy = "exact"


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
        floor = Subquery(model.objects.order_by("-pk").values("pk")[RECENT_ROWS : RECENT_ROWS + 1])
        values = list(
            model.objects.filter(pk__gt=Coalesce(floor, Value(0)))
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


class BoundedChangeList(ChangeList):
    def bounded_date_hierarchy(self) -> dict:
        """The context of admin/date_hierarchy.html, from the first and last dates of the table
        (not of the filtered list): periods are calendar ranges, and one may hold no rows."""
        field = self.date_hierarchy
        year, month, day = (self.params.get(f"{field}__{part}") for part in ("year", "month", "day"))

        def link(filters: dict) -> str:
            return self.get_query_string(filters, [f"{field}__"])

        if year and month and day:
            date = datetime.date(int(year), int(month), int(day))
            return {
                "show": True,
                "back": {"link": link({f"{field}__year": year, f"{field}__month": month}), "title": _month(date)},
                "choices": [{"title": capfirst(formats.date_format(date, "MONTH_DAY_FORMAT"))}],
            }
        first, last = _first_and_last(self.root_queryset, field)
        if first is None or last is None:
            return {"show": False}
        if not year and first.year == last.year:
            year = first.year
            if first.month == last.month:
                month = first.month
        if year and month:
            year, month = int(year), int(month)
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
        if year:
            year = int(year)
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
    hierarchy tag.
    """

    change_list_template = "admin/large_table_change_list.html"
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    # Facets would count every choice of every filter over the table.
    show_facets = admin.ShowFacets.NEVER

    def get_changelist(self, request, **kwargs):
        return BoundedChangeList
