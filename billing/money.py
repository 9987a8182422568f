"""Money is counted in integer pico-dollars (10⁻¹² USD), never floats.

A price has at most six decimals of a dollar per million tokens, so one token costs a whole
number of pico-dollars and every cost, sum and budget is an exact integer, summed exactly by
PostgreSQL and SQLite alike.
"""

from decimal import Decimal

PICO_PER_USD = 10**12
# Prices are per million tokens: a price in USD * 10⁶ is pico-dollars per token.
PICO_PER_TOKEN_PER_USD_PER_MILLION = 10**6


def to_pico(usd: Decimal | str | int) -> int:
    """An amount in USD as pico-dollars; refuses what a pico-dollar cannot hold exactly."""
    pico = Decimal(usd) * PICO_PER_USD
    if pico != pico.to_integral_value():
        raise ValueError(f"{usd} USD has more than 12 decimals")
    return int(pico)


def per_token(usd_per_million: Decimal | str) -> int:
    """A price in USD per million tokens as pico-dollars per token."""
    pico = Decimal(usd_per_million) * PICO_PER_TOKEN_PER_USD_PER_MILLION
    if pico != pico.to_integral_value():
        raise ValueError(f"{usd_per_million} USD per million tokens has more than 6 decimals")
    return int(pico)


def to_usd(pico: int) -> Decimal:
    """Exact: pico-dollars as a Decimal number of dollars."""
    return (Decimal(pico) / PICO_PER_USD).normalize() if pico else Decimal(0)


def usd_text(pico: int | None) -> str:
    """Money for people, one format wherever it is shown: cents always, more digits only where
    they are not zero, exact to the pico-dollar ("$0.00", "$25.00", "$0.005015",
    "$1,234.50"); "unknown" for an unknown amount."""
    if pico is None:
        return "unknown"
    return f"{'-' if pico < 0 else ''}${_digits(abs(pico), grouped=True)}"


def usd_amount_text(usd: Decimal | None) -> str:
    """usd_text for an amount in dollars (a plan's budget, a price per million tokens)."""
    return usd_text(None if usd is None else to_pico(usd))


def usd_input_text(usd: Decimal) -> str:
    """A non-negative amount in dollars as a form shows it for editing: usd_text's digits, without
    "$" or thousands separators ("25.00", not the column's "25.000000")."""
    return _digits(to_pico(usd), grouped=False)


def _digits(pico: int, *, grouped: bool) -> str:
    dollars, fraction = divmod(pico, PICO_PER_USD)
    cents_and_more = f"{fraction:012d}".rstrip("0").ljust(2, "0")
    return f"{dollars:,}.{cents_and_more}" if grouped else f"{dollars}.{cents_and_more}"
