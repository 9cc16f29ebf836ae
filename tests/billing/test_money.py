from __future__ import annotations

import pytest

from billing import money


def test_it_rounds_token_costs_up_to_the_next_micro_dollar():
    def cost(tokens: int, price: int) -> int:
        return money.request_cost(input_tokens=tokens, input_price_micros=price)

    assert cost(1, 140_000) == 1  # 0.14 micro-dollars rounds up to 1
    assert cost(1_000_000, 140_000) == 140_000
    assert cost(3, 333_333) == 1
    assert cost(0, 140_000) == 0


def test_it_prices_units_once_with_the_batch_factor():
    # 3 images at $0.04: $0.12; half price for a batch line.
    assert money.request_cost(units=3, unit_price_micros=40_000) == 120_000
    assert money.request_cost(units=3, unit_price_micros=40_000, price_factor_percent=50) == 60_000
    # 7 characters at $15 per million: 105 micro-dollars; half of it is 52.5, rounded up once.
    per_million = {"units_per_price": 1_000_000, "unit_price_micros": 15_000_000}
    assert money.request_cost(units=7, **per_million) == 105
    assert money.request_cost(units=7, price_factor_percent=50, **per_million) == 53


def test_it_bills_cached_input_at_the_cached_price():
    cost = money.request_cost(
        input_tokens=1_000_000,
        cached_tokens=500_000,
        output_tokens=0,
        input_price_micros=2_000_000,
        output_price_micros=8_000_000,
        cached_input_price_micros=500_000,
    )
    assert cost == 1_000_000 + 250_000


@pytest.mark.parametrize(
    ("text", "micros"),
    [("12.50", 12_500_000), ("$3", 3_000_000), ("0.000125", 125), ("1,000.01", 1_000_010_000)],
)
def test_it_parses_dollar_amounts_without_floats(text, micros):
    assert money.from_dollars(text) == micros


@pytest.mark.parametrize("text", ["abc", "1.0000001", "", "1.2.3"])
def test_it_refuses_amounts_that_are_not_dollars(text):
    with pytest.raises(ValueError):
        money.from_dollars(text)


def test_it_converts_cents_both_ways_and_refuses_fractions_of_a_cent():
    assert money.from_cents(1050) == 10_500_000
    assert money.to_cents(10_500_000) == 1050
    with pytest.raises(ValueError):
        money.to_cents(10_500_001)


def test_it_formats_amounts_for_people():
    assert money.format_usd(1_234_560_000) == "$1,234.56"
    assert money.format_usd(140_000) == "$0.14"
    assert money.format_usd(125) == "$0.000125"
    assert money.format_usd(-2_500_000) == "-$2.50"


def test_a_request_is_priced_as_one_exact_amount_rounded_up_once():
    # 1 input token at $0.40/M and 1 output token at $1.60/M: 0.4 + 1.6 = 2 micro-dollars
    # exactly (rounding each line up would have charged 1 + 2 = 3).
    assert (
        money.request_cost(
            input_tokens=1,
            output_tokens=1,
            input_price_micros=400_000,
            output_price_micros=1_600_000,
        )
        == 2
    )
    # Any fraction left rounds up: we never under-charge.
    assert money.request_cost(input_tokens=1, input_price_micros=400_001) == 1
    assert money.request_cost(input_tokens=0, output_tokens=0, input_price_micros=5) == 0


def test_a_batch_line_costs_its_price_factor_rounded_up():
    # 3 tokens at 1 micro-dollar each, half price: 1.5, charged as 2 (never as 1).
    assert (
        money.request_cost(input_tokens=3, input_price_micros=1_000_000, price_factor_percent=50)
        == 2
    )
    assert money.request_cost(unit_cost_micros=3, price_factor_percent=50) == 2
    assert money.request_cost(unit_cost_micros=300) == 300


def test_cached_tokens_never_exceed_input_and_take_the_cached_price():
    cost = money.request_cost(
        input_tokens=10,
        cached_tokens=50,
        input_price_micros=1_000_000,
        cached_input_price_micros=100_000,
    )
    assert cost == 1  # ten cached tokens at 0.1: 1 micro-dollar, not ten at the full price


def test_a_request_is_rounded_once_not_per_part():
    cost = money.request_cost(
        input_tokens=7,
        cached_tokens=3,
        output_tokens=11,
        input_price_micros=333_333,
        output_price_micros=777_777,
        cached_input_price_micros=111_111,
    )
    # 4 * 0.333333 + 3 * 0.111111 + 11 * 0.777777 = 10.222212, rounded up once.
    assert cost == 11
