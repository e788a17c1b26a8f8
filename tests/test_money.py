"""The money type and the rounding rules, stated once in base/money.py."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from base.money import (
    Money,
    ceil_cents,
    hourly_rate,
    pay_at_rate,
    platform_fee,
    round_cents,
    top_up_cents,
)
from platforms.mturk import FEES as MTURK


@pytest.mark.parametrize("bad", [1.0, 0.1, Decimal("1"), True, "1", None])
def test_money_refuses_anything_but_integer_cents(bad):
    with pytest.raises(TypeError):
        Money(bad, "USD")


@pytest.mark.parametrize("currency", ["usd", "US", "DOLLAR", "", 840])
def test_money_needs_an_iso_currency_code(currency):
    with pytest.raises(ValueError):
        Money(1, currency)


def test_money_arithmetic_keeps_its_currency():
    assert Money(150, "EUR") + Money(25, "EUR") == Money(175, "EUR")
    assert 3 * Money(7) == Money(21) and -Money(5) == Money(-5)
    assert str(Money(-1205)) == "-12.05 USD"
    with pytest.raises(ValueError):
        Money(1, "USD") + Money(1, "EUR")
    with pytest.raises(TypeError):
        Money(1) * 1.5


def test_rounding_is_half_up_to_the_cent_and_top_ups_round_up():
    assert [round_cents(Decimal(x)) for x in ("0.5", "1.5", "2.5", "2.4999", "-0.5")] == [1, 2, 3, 2, -1]
    assert [ceil_cents(Decimal(x)) for x in ("0.01", "2.0", "2.0001")] == [1, 2, 3]
    with pytest.raises(TypeError):
        round_cents(2.5)


def test_the_hand_computed_top_up():
    # Reward 10c, median 60 s, target $15.00/h: 25c earned at the target, so a 15c top-up.
    assert top_up_cents(reward_cents=10, target_cents_per_hour=1500, seconds=60) == 15
    assert top_up_cents(reward_cents=30, target_cents_per_hour=1500, seconds=60) == 0
    # 1500 x 61 / 3600 = 25.416...: rounded up to 26, so 16.
    assert top_up_cents(reward_cents=10, target_cents_per_hour=1500, seconds=61) == 16
    assert hourly_rate(10, 60) == Decimal(600) and hourly_rate(10, 0) is None
    assert pay_at_rate(800, Decimal("4.5")) == Decimal(1)


@given(reward=st.integers(0, 10_000), target=st.integers(0, 10_000), seconds=st.integers(1, 86_400))
def test_a_top_up_brings_the_rate_to_the_target_and_not_a_cent_more(reward, target, seconds):
    top = top_up_cents(reward_cents=reward, target_cents_per_hour=target, seconds=seconds)
    assert top >= 0
    assert Decimal(reward + top) * 3600 >= Decimal(target) * seconds or top == 0 and reward * 3600 >= target * seconds
    if top > 0:
        assert Decimal(reward + top - 1) * 3600 < Decimal(target) * seconds


@pytest.mark.parametrize(("reward", "assignments", "fee"), [
    (100, 9, 20), (100, 10, 40),  # 20%, then 40% from 10 assignments
    (1, 1, 1), (2, 1, 1), (4, 1, 1), (5, 1, 1), (8, 1, 2),  # $0.01 at least; 0.8 rounds half up to 1, 1.6 to 2
    (1, 10, 1), (3, 10, 1), (4, 10, 2),  # 40% of 3 = 1.2 -> 1; of 4 = 1.6 -> 2
    (0, 5, 0),
])
def test_mturk_reward_fees_at_the_boundaries(reward, assignments, fee):
    assert MTURK.reward_fee(reward, assignments) == fee


def test_mturk_bonus_fees_have_no_large_hit_surcharge_and_the_same_minimum():
    assert [MTURK.bonus_fee(c) for c in (0, 1, 2, 7, 100, 250)] == [0, 1, 1, 1, 20, 50]


def test_the_platform_fee_defaults_to_nothing_and_rounds_half_up():
    assert platform_fee(Decimal(0)).reward_fee(1000, 20) == 0
    five = platform_fee(Decimal("0.05"))
    assert [five.reward_fee(c, 1) for c in (10, 30, 49, 50)] == [1, 2, 2, 3]  # 0.5, 1.5, 2.45, 2.5
    assert five.minimum_cents == 0 and five.bonus_fee(15) == 1
    with pytest.raises(ValueError):
        platform_fee(Decimal("1.5"))
