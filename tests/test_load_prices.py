"""manage.py load_prices: a price list in, idempotently; a bad file changes nothing and names its line."""

from datetime import date
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from billing.models import ModelPrice

pytestmark = pytest.mark.django_db

JSON = """[
  {"model": "gpt-4o-mini", "effective_from": "2026-11-01", "input": "0.15", "cached_input": "0.075", "output": "0.60"},
  {"model": "text-embedding-3-small", "effective_from": "2026-11-01", "input": 0.02, "output": 0}
]
"""
CSV = """model,effective_from,input,cached_input,output
gpt-4o,2026-11-01,2.50,1.25,10.00
o1,2026-11-01,15,,60
"""


def load(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    out = StringIO()
    call_command("load_prices", str(path), stdout=out)
    return out.getvalue()


def prices() -> list[tuple]:
    return list(
        ModelPrice.objects.order_by("model").values_list(
            "model", "effective_from", "input_per_million", "cached_input_per_million", "output_per_million"
        )
    )


def test_it_loads_json_and_loading_it_again_changes_nothing(tmp_path):
    first = load(tmp_path, "prices.json", JSON)
    loaded = prices()
    again = load(tmp_path, "prices.json", JSON)

    assert "2 added, 0 changed, 0 unchanged" in first
    assert "0 added, 0 changed, 2 unchanged" in again
    assert (
        prices()
        == loaded
        == [
            ("gpt-4o-mini", date(2026, 11, 1), Decimal("0.15"), Decimal("0.075"), Decimal("0.60")),
            # No cached price given: the input price.
            ("text-embedding-3-small", date(2026, 11, 1), Decimal("0.02"), Decimal("0.02"), Decimal("0")),
        ]
    )


def test_it_loads_csv_and_updates_a_price_of_the_same_day(tmp_path):
    load(tmp_path, "prices.csv", CSV)
    out = load(tmp_path, "prices.csv", CSV.replace("2.50,1.25", "2.00,1.00"))

    assert "0 added, 1 changed, 1 unchanged" in out
    assert prices()[0] == ("gpt-4o", date(2026, 11, 1), Decimal("2"), Decimal("1"), Decimal("10"))
    assert prices()[1][3] == Decimal("15")  # o1's cached price defaults to its input price


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.json", JSON.replace('"0.60"', '"cheap"'), "line 2: output must be a price"),
        ("bad.json", JSON.replace("0.02", "-1"), "line 3: input must be a price"),
        (
            "bad.json",
            JSON.replace('"2026-11-01", "input": 0.02', '"01/11/2026", "input": 0.02'),
            "line 3: effective_from",
        ),
        ("bad.json", JSON.replace("0.15", "0.0000001"), "line 2: input must be a price"),
        ("bad.json", JSON.replace("}\n]", "}"), "line 4: the JSON list is not closed"),
        ("bad.csv", CSV + "o1-mini,2026-13-01,1,1,1\n", "line 4: effective_from"),
        ("bad.csv", CSV + "o1,2026-11-01,15,,60\n", "line 4: o1 from 2026-11-01 is priced twice (also line 3)"),
        ("bad.csv", "name,input\nx,1\n", "line 1: the header must name"),
    ],
)
def test_a_bad_file_changes_nothing_and_names_its_line(tmp_path, name, text, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(tmp_path, name, text)

    assert prices() == []
