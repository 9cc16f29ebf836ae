"""Money: integer micro-dollars (1 USD = 1,000,000); the one place that prices and shows it."""

from __future__ import annotations

MICROS_PER_DOLLAR = 1_000_000
MICROS_PER_CENT = 10_000
TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are quoted per million tokens


def cost_micros(tokens: int, price_per_million_micros: int) -> int:
    """Cost of ``tokens`` at a per-million price, rounded up to the next micro-dollar.

    Rounding rule: always up (ceiling), per line item, so a request is never billed less than it
    used; the most a line can be over-billed is one micro-dollar.
    """
    if tokens <= 0 or price_per_million_micros <= 0:
        return 0
    return -(-tokens * price_per_million_micros // TOKENS_PER_PRICE_UNIT)


def unit_cost_micros(units: int, price_per_unit_micros: int) -> int:
    """Cost of ``units`` (seconds of audio, images, ...) at a per-unit price."""
    return max(0, units) * max(0, price_per_unit_micros)


def per_million_cost_micros(units: int, price_per_million_micros: int) -> int:
    """Cost of ``units`` priced per million units (characters for speech), rounded up."""
    return cost_micros(units, price_per_million_micros)


def from_cents(cents: int) -> int:
    return cents * MICROS_PER_CENT


def to_cents(micros: int) -> int:
    """Whole cents for Stripe; amounts we charge are always whole cents, so this must divide."""
    if micros % MICROS_PER_CENT:
        raise ValueError(f"{micros} micro-dollars is not a whole number of cents")
    return micros // MICROS_PER_CENT


def from_dollars(dollars: str | int) -> int:
    """Parse a dollar amount written by a person ("12.50", "3", "0.000125") without floats."""
    text = str(dollars).strip().lstrip("$").replace(",", "")
    negative = text.startswith("-")
    text = text.lstrip("-+")
    whole, _, frac = text.partition(".")
    if not (whole or frac) or not (whole or "0").isdigit() or (frac and not frac.isdigit()):
        raise ValueError(f"not a dollar amount: {dollars!r}")
    if len(frac) > 6:
        raise ValueError(f"more precision than a micro-dollar: {dollars!r}")
    micros = int(whole or "0") * MICROS_PER_DOLLAR + int((frac or "0").ljust(6, "0"))
    return -micros if negative else micros


def format_usd(micros: int, *, places: int = 2) -> str:
    """``$1,234.56``; small prices keep more places (``format_usd(140_000, places=2)`` is $0.14)."""
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    whole, frac = divmod(micros, MICROS_PER_DOLLAR)
    frac_text = f"{frac:06d}"
    shown = frac_text[:places]
    rest = frac_text[places:].rstrip("0")
    return f"{sign}${whole:,}.{shown}{rest}" if places else f"{sign}${whole:,}"


def format_price_per_million(micros: int | None) -> str:
    return "—" if micros is None else format_usd(micros, places=2)


def token_cost_micros(
    *,
    input_tokens: int,
    cached_tokens: int,
    output_tokens: int,
    input_price_micros: int,
    output_price_micros: int,
    cached_input_price_micros: int | None,
) -> int:
    """What a request's tokens cost. Cached input is billed at the cached price where the model has
    one; each of the three lines is rounded up on its own."""
    cached = min(max(cached_tokens, 0), max(input_tokens, 0))
    cached_price = (
        input_price_micros if cached_input_price_micros is None else cached_input_price_micros
    )
    return (
        cost_micros(input_tokens - cached, input_price_micros)
        + cost_micros(cached, cached_price)
        + cost_micros(output_tokens, output_price_micros)
    )
