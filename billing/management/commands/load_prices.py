"""Load a model price list (JSON or CSV); loading the same file again changes nothing.

    manage.py load_prices prices.json

JSON: a list of {"model", "effective_from", "input", "cached_input", "output"}; CSV: a
header line with those names, then one price a line. Prices are USD per million tokens
(at most 6 decimals); cached_input may be left out (then it is the input price);
effective_from is the day (UTC) the price applies from. Every entry is checked before
anything is written: a bad file changes nothing and the message names its line.
"""

import csv
import json
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from billing import money, recost
from billing import prices as billing_prices
from billing.models import ModelPrice
from gateway_project.lib.wording import counted

FIELDS = ("model", "effective_from", "input", "cached_input", "output")
MODEL_MAX_LENGTH = ModelPrice._meta.get_field("model").max_length


@dataclass(frozen=True)
class _Entry:
    line: int
    model: str
    effective_from: date
    input: Decimal
    cached_input: Decimal
    output: Decimal


class Command(BaseCommand):
    help = "Load model prices (USD per million tokens) from a JSON or CSV file; idempotent."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="a .json or .csv price list")

    def handle(self, *args, file: str, **options) -> None:
        path = Path(file)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"{file}: cannot be read ({error}).") from None
        raw = _json_entries(file, text) if text.lstrip().startswith("[") else _csv_entries(file, text)
        entries = [_checked(file, line, fields) for line, fields in raw]
        seen: dict[tuple[str, date], int] = {}
        for entry in entries:
            key = (entry.model, entry.effective_from)
            if key in seen:
                raise CommandError(
                    f"{file}, line {entry.line}: {entry.model} from {entry.effective_from} is priced twice "
                    f"(also line {seen[key]})."
                )
            seen[key] = entry.line
        added = changed = 0
        new_days: list[date] = []  # when the prices added or changed take effect
        with transaction.atomic():
            for entry in entries:
                prices = {
                    "input_per_million": entry.input,
                    "cached_input_per_million": entry.cached_input,
                    "output_per_million": entry.output,
                }
                current = ModelPrice.objects.filter(model=entry.model, effective_from=entry.effective_from).first()
                if current is None:
                    ModelPrice.objects.create(model=entry.model, effective_from=entry.effective_from, **prices)
                    added += 1
                    new_days.append(entry.effective_from)
                elif any(getattr(current, name) != value for name, value in prices.items()):
                    ModelPrice.objects.filter(pk=current.pk).update(**prices)
                    changed += 1
                    new_days.append(entry.effective_from)
            if changed:
                billing_prices.changed()  # update() sends no signal; new rows bumped the version already
        unchanged = len(entries) - added - changed
        self.stdout.write(
            f"{counted(len(entries), 'price')} in {file}: {added} added, {changed} changed, {unchanged} unchanged."
        )
        if new_days:
            self.stdout.write(_recostable(min(new_days)))


def _recostable(since: date) -> str:
    """How many calls already written these prices could cost, and how."""
    count = recost.costable(since, billing_prices.read_book())
    if not count:
        return f"No call of unknown cost from {since} on can be costed with these prices."
    return (
        f"{counted(count, 'call')} of unknown cost from {since} on can now be costed: "
        f"run manage.py recost --since {since}"
    )


def _json_entries(file: str, text: str) -> list[tuple[int, dict]]:
    """Each element of the top-level list with the line it starts on."""
    decoder = json.JSONDecoder(parse_float=Decimal)
    position = text.index("[") + 1
    entries = []
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        line = text.count("\n", 0, position) + 1
        if position >= len(text):
            raise CommandError(f"{file}, line {line}: the JSON list is not closed with ].")
        if text[position] == "]":
            break
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise CommandError(f"{file}, line {error.lineno}: not valid JSON ({error.msg}).") from None
        if not isinstance(value, dict):
            raise CommandError(f"{file}, line {line}: each price must be a JSON object with {', '.join(FIELDS)}.")
        entries.append((line, value))
    if text[position + 1 :].strip():
        raise CommandError(f"{file}, line {text.count(chr(10), 0, position) + 1}: text after the closing ].")
    return entries


def _csv_entries(file: str, text: str) -> list[tuple[int, dict]]:
    reader = csv.DictReader(text.splitlines())
    missing = {"model", "effective_from", "input", "output"} - set(reader.fieldnames or ())
    if missing:
        raise CommandError(
            f"{file}, line 1: the header must name {', '.join(FIELDS)} (cached_input may be left out); "
            f"missing: {', '.join(sorted(missing))}."
        )
    return [(reader.line_num, row) for row in reader]


def _checked(file: str, line: int, fields: dict) -> _Entry:
    where = f"{file}, line {line}"
    unknown = set(fields) - set(FIELDS)
    if unknown - {None}:
        raise CommandError(f"{where}: unknown field {', '.join(sorted(map(str, unknown - {None})))}.")
    model = fields.get("model")
    if not isinstance(model, str) or not model.strip() or len(model.strip()) > MODEL_MAX_LENGTH:
        raise CommandError(f"{where}: model must be a model name of 1 to {MODEL_MAX_LENGTH} characters.")
    try:
        effective_from = date.fromisoformat(str(fields.get("effective_from", "")).strip())
    except ValueError:
        raise CommandError(f"{where}: effective_from must be a date, YYYY-MM-DD.") from None
    input_price = _price(where, "input", fields.get("input"))
    cached = fields.get("cached_input")
    cached_price = input_price if cached in (None, "") else _price(where, "cached_input", cached)
    output_price = _price(where, "output", fields.get("output"))
    return _Entry(line, model.strip(), effective_from, input_price, cached_price, output_price)


def _price(where: str, name: str, value: object) -> Decimal:
    try:
        if isinstance(value, bool) or value is None:
            raise InvalidOperation
        price = Decimal(str(value).strip())
        if not price.is_finite() or price < 0 or price >= 10**8:
            raise InvalidOperation
        money.per_token(price)  # at most 6 decimals
    except (InvalidOperation, ValueError):
        raise CommandError(
            f"{where}: {name} must be a price in USD per million tokens, e.g. 0.15 (at most 6 decimals), not {value!r}."
        ) from None
    return price
