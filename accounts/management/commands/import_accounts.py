"""Create or update the accounts of a roster, and issue one key to each new account.

    manage.py import_accounts roster.csv [--keys-out roster.keys.csv] [--dry-run] [--override-tiers]

The roster is UTF-8 CSV with a header line naming its columns: user_id, then email and tier
(either may be left out, any cell of theirs may be empty). In the file, an empty email or tier
means "leave as it is": a new account gets none, an existing one keeps its own. A Stripe
customer's tier is not the file's to change either (unless --override-tiers), so importing an old
roster again never cancels a tier someone bought. The whole file is checked first: a bad file
changes nothing and the message names each bad line. The new keys are written once, to the keys
file, and exist nowhere else in clear.
"""

import csv
import io
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction
from django.db.models.functions import Lower
from django.utils import timezone

from accounts.models import Account, ApiKey, Tier, TierChange

COLUMNS = ("user_id", "email", "tier")
KEY_NAME = "import"
_REPORTED_ERRORS = 20
# Lookups go by chunks: older SQLite builds allow 999 parameters a query.
_CHUNK = 500


@dataclass(frozen=True)
class _Row:
    line: int
    user_id: str
    email: str
    tier: str


@dataclass
class _Plan:
    create: list[_Row] = field(default_factory=list)
    # An existing account, and the fields the file changes: {"email": new, "tier": new}.
    update: list[tuple[Account, dict[str, str]]] = field(default_factory=list)
    unchanged: int = 0
    # A Stripe customer whose tier the file would change, and the file's tier: left as it is.
    kept: list[tuple[Account, str]] = field(default_factory=list)


class Command(BaseCommand):
    help = (
        "Create or update accounts from a CSV roster (header: user_id,email,tier) and write one new key per new "
        "account to a keys file (default: FILE.keys.csv, never overwritten). An empty email or tier leaves an "
        "existing account's own in place; a Stripe customer keeps the tier Stripe gave it, whatever the file "
        "says, unless --override-tiers. Idempotent; a bad line changes nothing and is named."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="the roster, a CSV file")
        parser.add_argument("--keys-out", default="", help="where to write user_id,email,key of the new accounts")
        parser.add_argument("--dry-run", action="store_true", help="check the file and say what would change")
        parser.add_argument(
            "--override-tiers",
            action="store_true",
            help="apply the file's tier to Stripe customers too (their next Stripe event sets it again)",
        )

    def handle(self, *args, file: str, keys_out: str, dry_run: bool, override_tiers: bool, **options) -> None:
        path = Path(file)
        keys_path = Path(keys_out) if keys_out else path.with_name(f"{path.stem}.keys.csv")
        rows, errors = _parse(path, file)
        existing = _existing_accounts(row.user_id for row in rows)
        errors += _email_clashes(rows)
        if errors:
            raise CommandError(_bad_lines(file, errors))
        plan = _plan(rows, existing, override_tiers=override_tiers)
        if plan.create and keys_path.exists():
            raise CommandError(f"{keys_path} exists: give another --keys-out (keys files are never overwritten).")

        updates = [_described(account, changes) for account, changes in plan.update]  # before _apply changes them
        counts = f"{len(plan.create)} created, {len(plan.update)} updated, {plan.unchanged} unchanged"
        if plan.kept:
            kept = f"{len(plan.kept)} tier{'s' * (len(plan.kept) != 1)}"
            counts += f", {kept} of Stripe customers kept (--override-tiers applies the file's)"
        in_file = f"{len(rows)} account{'s' * (len(rows) != 1)} in {file}"
        if dry_run:
            for update in updates:
                self.stdout.write(f"would update {update}")
            for account, tier in plan.kept:
                self.stdout.write(f"would keep {_kept(account, tier)}")
            target = f"the keys would be written to {keys_path}" if plan.create else "no keys file would be written"
            self.stdout.write(f"Dry run, nothing changed. {in_file}: would be {counts}; {target}.")
            return

        temp_path = _open_temp_beside(keys_path) if plan.create else None
        try:
            with transaction.atomic():
                command = "import_accounts --override-tiers" if override_tiers else "import_accounts"
                issued = _apply(plan, reference=f"{command} {file}"[:255])
                if temp_path is not None:
                    _write_keys(temp_path, issued)
        except IntegrityError as error:
            _discard(temp_path)
            raise CommandError(
                f"Accounts changed while {file} was imported ({error}); nothing was imported, run it again."
            ) from None
        except BaseException:
            _discard(temp_path)
            raise
        for update in updates:
            self.stdout.write(f"updated {update}")
        for account, tier in plan.kept:
            self.stdout.write(f"kept {_kept(account, tier)}")
        if temp_path is not None:
            _publish(temp_path, keys_path)
            keys = f"{len(issued)} key{'s' * (len(issued) != 1)}"
            target = f"{keys} written to {keys_path} (shown nowhere else: hand them out, then delete it)"
        else:
            target = "no new accounts, no keys file written"
        self.stdout.write(f"{in_file}: {counts}; {target}.")


def _bad_lines(file: str, errors: list[tuple[int, str]]) -> str:
    errors = sorted(errors)
    shown = [f"  line {line}, {message}" for line, message in errors[:_REPORTED_ERRORS]]
    more = f"\n  and {len(errors) - len(shown)} more." if len(errors) > len(shown) else ""
    bad = len({line for line, _ in errors})
    return f"{file}: {bad} bad line{'s' * (bad > 1)}, nothing imported:\n" + "\n".join(shown) + more


def _described(account: Account, changes: dict[str, str]) -> str:
    described = f"{account.user_id}: " + ", ".join(
        f"{name} {getattr(account, name) or '-'} -> {new}" for name, new in changes.items()
    )
    return described + (", overriding a tier bought through Stripe" if "tier" in changes and _bought(account) else "")


def _kept(account: Account, tier: str) -> str:
    if account.tier:
        return f"{account.user_id}'s {account.tier} (bought through Stripe); the file says {tier}"
    return f"{account.user_id} without a tier (its Stripe subscription ended or is unpaid); the file says {tier}"


def _bought(account: Account) -> bool:
    """Whether the account's tier is Stripe's: a checkout or subscription event recorded a
    customer for it. Stripe bills that customer for a plan, and its next event sets the tier
    again; a roster is no place to change it, whoever changed it last (an operator's edit in
    the admin after a purchase is as much the customer's tier as Stripe's own)."""
    return bool(account.stripe_customer_id)


def _parse(path: Path, file: str) -> tuple[list[_Row], list[tuple[int, str]]]:
    """The well-formed rows, and (line, message) for every bad one."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise CommandError(f"{file} is not UTF-8 text ({error.reason}): save it as CSV UTF-8.") from None
    except OSError as error:
        raise CommandError(f"{file}: cannot be read ({error.strerror}).") from None
    records = _records(file, text)
    header = next(records, None)
    if header is None:
        raise CommandError(f"{file} is empty: its first line must be the header user_id,email,tier.")
    names = [name.strip().lower() for name in header[1]]
    unknown = [name for name in names if name not in COLUMNS]
    if unknown or "user_id" not in names or len(set(names)) != len(names):
        raise CommandError(
            f"{file}, line {header[0]}: the header must name user_id, and may name email and tier, each once; "
            f"it names {', '.join(repr(name) for name in names)}."
        )

    rows: list[_Row] = []
    errors: list[tuple[int, str]] = []
    first_line_of: dict[str, int] = {}
    first_line_of_email: dict[str, int] = {}
    for line, cells in records:
        if len(cells) != len(names):
            errors.append((line, f"{len(cells)} fields where the header names {len(names)}."))
            continue
        values = dict.fromkeys(COLUMNS, "") | {name: cell.strip() for name, cell in zip(names, cells, strict=True)}
        values["tier"] = values["tier"].lower()
        bad = [f"{name}: {' '.join(message)}" for name, message in _field_errors(values).items()]
        if values["user_id"] in first_line_of:
            bad.append(f"user_id: {values['user_id']} is also on line {first_line_of[values['user_id']]}.")
        address = values["email"].lower()
        if address and address in first_line_of_email:
            bad.append(f"email: {values['email']} is also on line {first_line_of_email[address]} (case is ignored).")
        first_line_of.setdefault(values["user_id"], line)
        if address:
            first_line_of_email.setdefault(address, line)
        if bad:
            errors += [(line, message) for message in bad]
        else:
            rows.append(_Row(line, values["user_id"], values["email"], values["tier"]))
    return rows, errors


def _records(file: str, text: str) -> Iterator[tuple[int, list[str]]]:
    """Each non-blank CSV record with the physical line it starts on (the header is line 1)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    line = 1
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                yield line, cells
            line = reader.line_num + 1
    except csv.Error as error:
        raise CommandError(f"{file}, line {reader.line_num}: not valid CSV ({error}).") from None


def _field_errors(values: dict[str, str]) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for name in ("user_id", "email"):
        if name == "user_id" or values[name]:
            try:
                Account._meta.get_field(name).run_validators(values[name])
            except ValidationError as error:
                errors[name] = [*error.messages, f"(not {values[name]!r})"]
    if values["user_id"] == "":
        errors["user_id"] = ["must not be empty."]
    if values["tier"] and values["tier"] not in Tier.values:
        errors["tier"] = [f"must be {', '.join(Tier.values)} or empty, not {values['tier']!r}."]
    return errors


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _existing_accounts(user_ids: Iterable[str]) -> dict[str, Account]:
    existing: dict[str, Account] = {}
    for chunk in _chunks(list(user_ids)):
        existing |= {account.user_id: account for account in Account.objects.filter(user_id__in=chunk)}
    return existing


def _email_clashes(rows: list[_Row]) -> list[tuple[int, str]]:
    """An email of the file that an account keeps after the import, and is not the line's account.

    An account named in the file with another email gives its own up: emails may move between
    the file's accounts."""
    row_of_address = {row.email.lower(): row for row in rows if row.email}
    by_user_id = {row.user_id: row for row in rows}
    errors = []
    for chunk in _chunks(list(row_of_address)):
        holders = (
            Account.objects.exclude(email="")
            .annotate(address=Lower("email"))
            .filter(address__in=chunk)
            .values_list("user_id", "address")
        )
        for user_id, address in holders:
            row = row_of_address[address]
            own = by_user_id.get(user_id)
            gives_it_up = own is not None and own.email and own.email.lower() != address
            if user_id != row.user_id and not gives_it_up:
                errors.append((row.line, f"email: {row.email} is the email of account {user_id} (case is ignored)."))
    return errors


def _plan(rows: list[_Row], existing: dict[str, Account], *, override_tiers: bool) -> _Plan:
    plan = _Plan()
    for row in rows:
        account = existing.get(row.user_id)
        if account is None:
            plan.create.append(row)
            continue
        given = {"email": row.email, "tier": row.tier}
        changes = {name: new for name, new in given.items() if new and getattr(account, name) != new}
        if "tier" in changes and _bought(account) and not override_tiers:
            plan.kept.append((account, changes.pop("tier")))
        if changes:
            plan.update.append((account, changes))
        else:
            plan.unchanged += 1
    return plan


def _apply(plan: _Plan, *, reference: str) -> list[tuple[Account, str]]:
    """Make the changes of `plan`; the new accounts with the plaintext of their new key."""
    now = timezone.now()
    moving = [account.pk for account, changes in plan.update if "email" in changes]
    # The email constraint is checked statement by statement: clear the old emails first, so two
    # accounts of the file may swap theirs.
    Account.objects.filter(pk__in=moving).update(email="")
    for account, changes in plan.update:
        if "email" in changes:
            Account.objects.filter(pk=account.pk).update(email=changes["email"], updated_at=now)
        if "tier" in changes:
            account.set_tier(changes["tier"], source=TierChange.Source.COMMAND, reference=reference)
    created = Account.objects.bulk_create(
        Account(user_id=row.user_id, email=row.email, tier=row.tier) for row in plan.create
    )
    # Nobody else sees these accounts before the commit: their first tier is recorded as the admin
    # records it for an account it creates, without set_tier's row lock.
    TierChange.objects.bulk_create(
        TierChange(account=account, new_tier=account.tier, source=TierChange.Source.COMMAND, reference=reference)
        for account in created
        if account.tier
    )
    return list(zip(created, ApiKey.objects.issue_each(created, name=KEY_NAME), strict=True))


def _open_temp_beside(keys_path: Path) -> Path:
    """An empty file, mode 0600, in the keys file's folder: renamed into place after the commit."""
    try:
        fd, name = tempfile.mkstemp(dir=keys_path.parent, prefix=f".{keys_path.name}.", suffix=".tmp")
    except OSError as error:
        raise CommandError(f"Cannot write the keys file {keys_path} ({error.strerror}); nothing imported.") from None
    os.close(fd)
    return Path(name)


def _write_keys(temp_path: Path, issued: list[tuple[Account, str]]) -> None:
    with temp_path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["user_id", "email", "key"])
        writer.writerows([account.user_id, account.email, raw_key] for account, raw_key in issued)
        stream.flush()
        os.fsync(stream.fileno())


def _publish(temp_path: Path, keys_path: Path) -> None:
    # A hard link, unlike a rename, refuses to replace a keys file that appeared meanwhile.
    try:
        os.link(temp_path, keys_path)
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links
        if not keys_path.exists():
            temp_path.replace(keys_path)
            return
    else:
        temp_path.unlink()
        return
    raise CommandError(
        f"The accounts were imported, but {keys_path} appeared meanwhile: the new keys are in {temp_path}."
    )


def _discard(temp_path: Path | None) -> None:
    if temp_path is not None:
        temp_path.unlink(missing_ok=True)
