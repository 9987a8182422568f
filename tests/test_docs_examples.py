"""The operators' pages' example files, used as written: the price lists load, the roster
imports, the Prometheus job parses as the job it says it is."""

import re
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command

from accounts.models import Account
from billing.models import ModelPrice
from tests.servers import BASE_DIR

OPERATORS = BASE_DIR / "docs" / "operators"


def fenced(page: str, language: str) -> str:
    """The page's one block in `language`, its indentation (in a list item) taken away."""
    [block] = re.findall(rf"^( *)```{language}\n(.*?)^\1```", (OPERATORS / page).read_text(), re.M | re.S)
    indent, text = block
    return "".join(line[len(indent) :] + "\n" for line in text.splitlines())


def written(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.django_db
@pytest.mark.parametrize("language", ["json", "csv"])
def test_the_price_lists_load_as_shown(tmp_path, language):
    call_command(
        "load_prices", written(tmp_path, f"prices.{language}", fenced("prices-budgets.md", language)), stdout=StringIO()
    )

    mini = ModelPrice.objects.get(model="gpt-4o-mini")
    assert (mini.input_per_million, mini.cached_input_per_million, mini.output_per_million) == (
        Decimal("0.15"),
        Decimal("0.075"),
        Decimal("0.60"),
    )


@pytest.mark.django_db
def test_the_roster_imports_as_shown(tmp_path):
    roster = written(tmp_path, "roster.csv", fenced("accounts.md", "csv"))

    call_command("import_accounts", roster, stdout=StringIO())

    accounts = {a.user_id: (a.email, a.tier) for a in Account.objects.all()}
    assert accounts == {"alice": ("alice@example.org", "tier1"), "bob": ("bob@example.org", ""), "carol": ("", "")}
    assert len((tmp_path / "roster.keys.csv").read_text().splitlines()) == 1 + 3  # header, a key each


def test_the_prometheus_job_scrapes_metrics_with_the_token():
    [job] = yaml.safe_load(fenced("monitoring.md", "yaml"))["scrape_configs"]

    assert (job["metrics_path"], job["authorization"]["type"]) == ("/metrics", "Bearer")
