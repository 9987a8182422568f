"""manage.py import_accounts: a workshop roster in, one key per new account out, once."""

import stat
from io import StringIO
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from accounts.models import Account, ApiKey, TierChange, hash_key
from billing import stripe_events
from tests.personas import trainee

pytestmark = pytest.mark.django_db

HEADER = "user_id,email,tier"
TIERS = ("", "tier1", "tier2", "tier3")


def roster_lines(count: int = 500) -> list[str]:
    """The header and `count` trainees: trainee-001 is on line 2, trainee-316 on line 317."""
    return [HEADER] + [f"trainee-{n:03},trainee-{n:03}@workshop.example,{TIERS[n % 4]}" for n in range(1, count + 1)]


def write(tmp_path: Path, lines: list[str], name: str = "roster.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(path: Path, *args: str) -> str:
    out = StringIO()
    call_command("import_accounts", str(path), *args, stdout=out, stderr=out)
    return out.getvalue()


def read_keys(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text(encoding="utf-8").splitlines()]


def database() -> dict[str, list[tuple]]:
    """Everything an import may touch, to compare before and after."""
    return {
        "accounts": list(Account.objects.order_by("id").values_list()),
        "keys": list(ApiKey.objects.order_by("id").values_list()),
        "tier changes": list(TierChange.objects.order_by("id").values_list()),
    }


def test_it_creates_500_accounts_each_with_one_working_key(tmp_path, django_assert_max_num_queries):
    roster = write(tmp_path, roster_lines())

    # One insert per key, and a handful of queries for everything else: no lookup per line.
    with django_assert_max_num_queries(500 + 20):
        out = run(roster)

    assert "500 accounts in" in out and "500 created, 0 updated, 0 unchanged" in out
    keys_path = tmp_path / "roster.keys.csv"
    assert f"500 keys written to {keys_path}" in out
    assert stat.S_IMODE(keys_path.stat().st_mode) == 0o600
    header, *rows = read_keys(keys_path)
    assert header == ["user_id", "email", "key"] and len(rows) == 500
    assert [user_id for user_id, _, _ in rows] == [f"trainee-{n:03}" for n in range(1, 501)]
    for user_id, email, raw_key in rows:
        key = ApiKey.objects.active().select_related("account").get(key_hash=hash_key(raw_key))
        assert (key.account.user_id, key.account.email, key.name) == (user_id, email, "import")
        assert raw_key not in out
    assert Account.objects.count() == 500 and ApiKey.objects.count() == 500
    assert Account.objects.get(user_id="trainee-002").tier == "tier2"
    assert Account.objects.get(user_id="trainee-004").tier == ""
    changes = TierChange.objects.filter(source=TierChange.Source.COMMAND, old_tier="")
    assert changes.count() == 375
    assert (
        changes.filter(reference=f"import_accounts {roster}", account__user_id="trainee-003").get().new_tier == "tier3"
    )
    assert list(tmp_path.glob(".*.tmp")) == []


def test_a_second_run_changes_nothing(tmp_path):
    roster = write(tmp_path, roster_lines())
    run(roster)
    first_keys = (tmp_path / "roster.keys.csv").read_bytes()
    before = database()

    # The keys file of the first run is where the second would write: nothing to write, no refusal.
    out = run(roster)

    assert "0 created, 0 updated, 500 unchanged" in out and "no keys file written" in out
    assert database() == before
    assert (tmp_path / "roster.keys.csv").read_bytes() == first_keys
    run(roster, "--keys-out", str(tmp_path / "again.csv"))
    assert not (tmp_path / "again.csv").exists()


BAD_LINES = [
    pytest.param("trainee-316,not-an-email,tier1", "email: Enter a valid email address.", id="a bad email"),
    pytest.param(
        "trainee-316,trainee-316@workshop.example,gold",
        "tier: must be tier1, tier2, tier3 or empty, not 'gold'",
        id="an unknown tier",
    ),
    pytest.param("not valid!,trainee-316@workshop.example,", "user_id: 1-128 characters", id="a bad user id"),
    pytest.param(",trainee-316@workshop.example,", "user_id: must not be empty", id="an empty user id"),
    pytest.param("trainee-001,other@workshop.example,", "user_id: trainee-001 is also on line 2", id="a user id twice"),
    pytest.param(
        "trainee-316,TRAINEE-001@Workshop.Example,",
        "email: TRAINEE-001@Workshop.Example is also on line 2 (case is ignored)",
        id="an email twice",
    ),
    pytest.param(
        "trainee-316,Carol@Example.ORG,",
        "email: Carol@Example.ORG is the email of account carol (case is ignored)",
        id="another account's email",
    ),
    pytest.param(
        "trainee-316,trainee-316@workshop.example,tier1,x", "4 fields where the header names 3", id="a field too many"
    ),
]


@pytest.mark.parametrize("bad_line, message", BAD_LINES)
def test_a_bad_line_changes_nothing_and_is_named(tmp_path, bad_line, message):
    carol, _ = trainee("carol", tier="tier1")
    carol.email = "carol@example.org"
    carol.save()
    lines = roster_lines()
    lines[2] = "carol,,tier3"  # a change the bad line must not let through
    lines[316] = bad_line
    roster = write(tmp_path, lines)
    before = database()

    with pytest.raises(CommandError) as refusal:
        run(roster)

    assert "1 bad line, nothing imported" in str(refusal.value)
    assert f"line 317, {message}" in str(refusal.value)
    assert database() == before
    assert list(tmp_path.iterdir()) == [roster]


def test_every_bad_line_is_named_after_blank_lines_and_a_bom(tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_bytes(
        "\ufeffuser_id,email,tier\n\nann,ann@example.org,tier9\n,,\nbob,bob@,\n\ncy,cy@example.org,\n".encode()
    )

    with pytest.raises(CommandError) as refusal:
        run(roster)

    message = str(refusal.value)
    assert "2 bad lines" in message
    assert "line 3, tier: must be tier1, tier2, tier3 or empty, not 'tier9'" in message
    assert "line 5, email: Enter a valid email address." in message
    assert not Account.objects.exists()


def test_columns_go_by_their_header_name_and_may_be_left_out(tmp_path):
    roster = write(tmp_path, ["\ufeffTier , USER_ID", "tier2,dana", ",erin"])

    run(roster)

    assert list(Account.objects.values_list("user_id", "email", "tier")) == [("dana", "", "tier2"), ("erin", "", "")]


@pytest.mark.parametrize("header", ["user_id,email,tier,notes", "email,tier", "user_id,email,email", "user_id,email,"])
def test_it_refuses_a_header_it_does_not_understand(tmp_path, header):
    roster = write(tmp_path, [header, "dana,dana@example.org,tier1"])

    with pytest.raises(CommandError, match="line 1: the header must name user_id"):
        run(roster)

    assert not Account.objects.exists()


def test_it_refuses_to_overwrite_a_keys_file(tmp_path):
    roster = write(tmp_path, roster_lines(3))
    keys_path = tmp_path / "handed-out.csv"
    keys_path.write_text("precious")

    with pytest.raises(CommandError, match=f"{keys_path} exists"):
        run(roster, "--keys-out", str(keys_path))

    assert keys_path.read_text() == "precious"
    assert not Account.objects.exists()


def test_an_update_changes_only_what_the_file_says_and_records_the_tier_change(tmp_path):
    dana, dana_key = trainee("dana", tier="tier1")
    erin, _ = trainee("erin", tier="tier3")
    roster = write(tmp_path, [HEADER, "dana,Dana@Example.org,tier2", "erin,,"])

    out = run(roster)

    assert "updated dana: email - -> Dana@Example.org, tier tier1 -> tier2" in out
    assert "0 created, 1 updated, 1 unchanged" in out and "no keys file written" in out
    dana.refresh_from_db()
    assert (dana.email, dana.tier) == ("Dana@Example.org", "tier2")
    change = TierChange.objects.get(account=dana)
    assert (change.old_tier, change.new_tier, change.source) == ("tier1", "tier2", TierChange.Source.COMMAND)
    # An empty tier in the file does not cancel erin's.
    assert Account.objects.get(user_id="erin").tier == "tier3"
    assert not TierChange.objects.filter(account=erin).exists()
    # No new key for an account that had one.
    assert list(ApiKey.objects.filter(account=dana).values_list("key_hash", flat=True)) == [hash_key(dana_key)]
    assert not (tmp_path / "roster.keys.csv").exists()


def test_accounts_of_the_file_may_swap_their_emails_or_change_their_case(tmp_path):
    Account.objects.create(user_id="fay", email="fay@example.org")
    Account.objects.create(user_id="gus", email="gus@example.org")
    Account.objects.create(user_id="hal", email="hal@example.org")
    roster = write(tmp_path, [HEADER, "fay,gus@example.org,", "gus,FAY@example.org,", "hal,HAL@example.org,"])

    run(roster)

    assert dict(Account.objects.values_list("user_id", "email")) == {
        "fay": "gus@example.org",
        "gus": "FAY@example.org",
        "hal": "HAL@example.org",
    }


def test_a_dry_run_says_what_would_change_and_changes_nothing(tmp_path):
    trainee("dana", tier="tier1")
    roster = write(tmp_path, [HEADER, "dana,,tier2", "erin,erin@example.org,"])
    before = database()

    out = run(roster, "--dry-run")

    assert "would update dana: tier tier1 -> tier2" in out
    assert "would be 1 created, 1 updated, 0 unchanged" in out
    assert f"the keys would be written to {tmp_path / 'roster.keys.csv'}" in out
    assert database() == before
    assert list(tmp_path.iterdir()) == [roster]


def test_keys_are_never_stored_in_clear(tmp_path):
    roster = write(tmp_path, roster_lines(20))
    run(roster)

    raw_keys = [raw_key for _, _, raw_key in read_keys(tmp_path / "roster.keys.csv")[1:]]
    stored = str(database())
    assert raw_keys and not [raw_key for raw_key in raw_keys if raw_key in stored or raw_key[3:] in stored]


def test_a_failure_while_applying_leaves_no_accounts_and_no_keys_file(tmp_path, monkeypatch):
    def issue_then_fail(accounts, name=""):
        assert Account.objects.count() == 20  # the accounts are made, then their keys fail
        raise OSError("disk full")

    monkeypatch.setattr(ApiKey.objects, "issue_each", issue_then_fail)
    roster = write(tmp_path, roster_lines(20))

    with pytest.raises(OSError, match="disk full"):
        run(roster)

    assert database() == {"accounts": [], "keys": [], "tier changes": []}
    assert list(tmp_path.iterdir()) == [roster]


def test_an_email_is_unique_whatever_its_case_in_the_model_too():
    Account.objects.create(user_id="hal", email="a@x.org")

    with pytest.raises(ValidationError, match="Another account has this email"):
        Account(user_id="ivy", email="A@x.org").full_clean()


def test_keys_are_kept_when_a_keys_file_appears_during_the_import(tmp_path, monkeypatch):
    keys_path = tmp_path / "roster.keys.csv"
    issue_each = ApiKey.objects.issue_each

    def issue_while_someone_writes_the_keys_file(accounts, name=""):
        keys_path.write_text("someone else's")
        return issue_each(accounts, name=name)

    monkeypatch.setattr(ApiKey.objects, "issue_each", issue_while_someone_writes_the_keys_file)
    roster = write(tmp_path, roster_lines(3))

    with pytest.raises(CommandError, match="appeared meanwhile: the new keys are in") as refusal:
        run(roster)

    assert keys_path.read_text() == "someone else's"
    (kept,) = tmp_path.glob(".roster.keys.csv.*.tmp")
    assert str(kept) in str(refusal.value)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert len(read_keys(kept)) == 4 and Account.objects.count() == 3


def buy_through_stripe(user_id: str, tier: str) -> None:
    """The customer completes a Stripe Checkout for `tier`, as the webhook applies it."""
    checkout = {"client_reference_id": user_id, "customer": f"cus_{user_id}", "payment_status": "paid"}
    event = {
        "id": f"evt_checkout_{user_id}",
        "type": "checkout.session.completed",
        "created": 1_800_000_000,
        "data": {"object": checkout | {"metadata": {"tier": tier}}},
    }
    assert stripe_events.apply(event) == "applied"


def tier_history(user_id: str) -> list[tuple[str, str, str]]:
    changes = TierChange.objects.filter(account__user_id=user_id).order_by("id")
    return list(changes.values_list("old_tier", "new_tier", "source"))


@pytest.fixture
def roster_then_a_purchase(tmp_path) -> Path:
    """alice and bob imported at tier1, then alice buys tier3 through Stripe; returns the roster."""
    roster = write(tmp_path, [HEADER, "alice,alice@workshop.example,tier1", "bob,bob@workshop.example,tier1"])
    run(roster)
    buy_through_stripe("alice", "tier3")
    return roster


def test_importing_the_roster_again_keeps_a_tier_bought_through_stripe(tmp_path, roster_then_a_purchase):
    out = run(roster_then_a_purchase)

    assert "kept alice's tier3 (bought through Stripe); the file says tier1" in out
    assert "0 created, 0 updated, 2 unchanged, 1 tier of Stripe customers kept (--override-tiers" in out
    assert Account.objects.get(user_id="alice").tier == "tier3"
    assert tier_history("alice") == [("", "tier1", "command"), ("tier1", "tier3", "stripe")]
    # The rest of the file still applies, to alice's other fields and to everyone else's tier.
    newer = write(tmp_path, [HEADER, "alice,alice@example.org,tier1", "bob,,tier2"], name="newer.csv")
    out = run(newer)
    assert "updated alice: email alice@workshop.example -> alice@example.org\n" in out
    assert "updated bob: tier tier1 -> tier2" in out and "kept alice's tier3" in out
    assert dict(Account.objects.values_list("user_id", "tier")) == {"alice": "tier3", "bob": "tier2"}
    assert Account.objects.get(user_id="alice").email == "alice@example.org"


def test_a_dry_run_shows_the_tier_it_would_keep(roster_then_a_purchase):
    before = database()

    out = run(roster_then_a_purchase, "--dry-run")

    assert "would keep alice's tier3 (bought through Stripe); the file says tier1" in out
    assert "would be 0 created, 0 updated, 2 unchanged, 1 tier of Stripe customers kept" in out
    assert database() == before


def test_a_stripe_customer_whose_subscription_ended_keeps_having_no_tier(tmp_path, roster_then_a_purchase):
    Account.objects.get(user_id="alice").set_tier("", source=TierChange.Source.STRIPE, reference="evt_deleted")

    out = run(roster_then_a_purchase)

    assert "kept alice without a tier (its Stripe subscription ended or is unpaid); the file says tier1" in out
    assert Account.objects.get(user_id="alice").tier == ""


def test_override_tiers_applies_the_files_tier_to_a_stripe_customer_and_records_it(roster_then_a_purchase):
    out = run(roster_then_a_purchase, "--override-tiers")

    assert "updated alice: tier tier3 -> tier1, overriding a tier bought through Stripe" in out
    assert "0 created, 1 updated, 1 unchanged; no new accounts" in out and "kept" not in out
    assert Account.objects.get(user_id="alice").tier == "tier1"
    assert tier_history("alice")[-1] == ("tier3", "tier1", "command")
    reference = TierChange.objects.filter(account__user_id="alice").latest("id").reference
    assert reference == f"import_accounts --override-tiers {roster_then_a_purchase}"


def test_one_new_account_is_counted_in_the_singular(tmp_path):
    out = run(write(tmp_path, [HEADER, "dana,dana@example.org,tier1"]))

    assert f"1 account in {tmp_path / 'roster.csv'}: 1 created" in out
    assert f"1 key written to {tmp_path / 'roster.keys.csv'}" in out
