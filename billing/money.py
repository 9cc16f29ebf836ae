"""Money: integer micro-dollars (1 USD = 1,000,000); the one place that prices and shows it."""

from __future__ import annotations

MICROS_PER_DOLLAR = 1_000_000
MICROS_PER_CENT = 10_000
TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are quoted per million tokens


def round_up(numerator: int, denominator: int) -> int:
    """The one rounding rule for money: an exact amount ``numerator / denominator`` micro-dollars,
    with any fraction of a micro-dollar rounded UP. We never under-charge: the most a price can be
    over by is one micro-dollar, and every price in the platform goes through here once."""
    if numerator <= 0:
        return 0
    return -(-numerator // denominator)


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


def request_cost(
    *,
    input_tokens: int = 0,
    cached_tokens: int = 0,
    output_tokens: int = 0,
    input_price_micros: int | None = 0,
    output_price_micros: int | None = 0,
    cached_input_price_micros: int | None = None,
    units: int | None = None,
    unit_price_micros: int | None = 0,
    units_per_price: int = 1,
    unit_cost_micros: int | None = None,
    price_factor_percent: int = 100,
) -> int:
    """What one request costs, in micro-dollars: the one price computation (a live request's
    charge, a batch line's charge and the balance reservation at admission all come from here).

    - Token-priced: input, cached input and output tokens at the model's per-million prices;
      cached input at the cached price where the model has one (else the input price), and never
      more cached tokens than input tokens.
    - Unit-priced (seconds, images; characters are priced per million, ``units_per_price``):
      ``units`` at ``unit_price_micros``; the token arguments are then ignored.
    - ``unit_cost_micros``: a cost this function already priced (a reservation re-scaled).
    - ``price_factor_percent`` scales the whole price (batch lines: ``BATCH_PRICE_PERCENT``).

    The exact amount is one fraction, rounded once with ``round_up`` (any fraction of a
    micro-dollar rounds up: we never under-charge)."""
    factor = max(0, price_factor_percent)
    if unit_cost_micros is not None:
        return round_up(max(0, unit_cost_micros) * factor, 100)
    if units is not None:
        exact_units = max(0, units) * max(0, unit_price_micros or 0)
        return round_up(exact_units * factor, max(1, units_per_price) * 100)
    input_tokens = max(0, input_tokens)
    cached = min(max(cached_tokens, 0), input_tokens)
    input_price = max(0, input_price_micros or 0)
    cached_price = input_price if cached_input_price_micros is None else cached_input_price_micros
    exact = (
        (input_tokens - cached) * input_price
        + cached * max(0, cached_price)
        + max(0, output_tokens) * max(0, output_price_micros or 0)
    )
    return round_up(exact * factor, TOKENS_PER_PRICE_UNIT * 100)
