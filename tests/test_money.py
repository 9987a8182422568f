"""Money reads the same wherever it is shown: cents always, more digits only where they are
not zero, exact to the pico-dollar the gateway counts in."""

from decimal import Decimal

import pytest

from billing import money


@pytest.mark.parametrize(
    ("pico", "text"),
    [
        (None, "unknown"),
        (0, "$0.00"),
        (money.to_pico("25"), "$25.00"),
        (money.to_pico("0.05"), "$0.05"),
        (money.to_pico("12.5"), "$12.50"),
        (money.to_pico("0.1"), "$0.10"),
        # Sub-cent amounts keep their digits, without trailing zeros.
        (money.to_pico("0.005015"), "$0.005015"),
        (money.to_pico("0.0000925"), "$0.0000925"),
        (money.to_pico("1.2345"), "$1.2345"),
        (money.to_pico("0.00500"), "$0.005"),
        # The full precision stored: one pico-dollar, and a cent and one pico-dollar.
        (1, "$0.000000000001"),
        (money.to_pico("0.01") + 1, "$0.010000000001"),
        (money.to_pico("999999.999999999999"), "$999,999.999999999999"),
        # Large amounts group their thousands.
        (money.to_pico("1234567"), "$1,234,567.00"),
        (money.to_pico("1000"), "$1,000.00"),
        (money.to_pico("999.99"), "$999.99"),
        # Nothing the gateway stores is negative, but a difference may be.
        (-money.to_pico("0.005"), "-$0.005"),
        (-money.to_pico("1234.5"), "-$1,234.50"),
    ],
)
def test_money_reads_the_same_everywhere(pico, text):
    assert money.usd_text(pico) == text


def test_amounts_in_dollars_read_the_same():
    assert money.usd_amount_text(Decimal("0.050000")) == "$0.05"
    assert money.usd_amount_text(Decimal("25")) == "$25.00"
    assert money.usd_amount_text(Decimal("0.150000")) == "$0.15"
    assert money.usd_amount_text(None) == "unknown"


def test_the_text_is_exact():
    for pico in (1, 7, 10**12 - 1, 10**12 + 1, 123_456_789_012_345):
        text = money.usd_text(pico)
        assert money.to_pico(text.replace("$", "").replace(",", "")) == pico


def test_an_amount_being_edited_reads_the_same_without_the_sign():
    assert money.usd_input_text(Decimal("25.000000")) == "25.00"
    assert money.usd_input_text(Decimal("0.005015")) == "0.005015"
    assert money.usd_input_text(Decimal("1234.5")) == "1234.50"
