"""Fee boundaries (base/money.py): MTurk's 9 vs 10 assignments, its $0.01 minimum, bonus fees, and our platform
rate rounded half up; and the expected hourly rate a task shows."""

from __future__ import annotations

from decimal import Decimal

import pytest

from base.money import effective_target, expected_rate, platform_fee, rate_warnings
from platforms.mturk import FEES as MTURK


def test_mturk_adds_20_percent_from_10_assignments_per_hit():
    assert MTURK.reward_fee(100, 9) == 20
    assert MTURK.reward_fee(100, 10) == 40
    assert MTURK.reward_fee(100, 1) == 20 and MTURK.reward_fee(100, 50) == 40


@pytest.mark.parametrize(("reward", "nine", "ten"), [
    (1, 1, 1),  # 0.2c and 0.4c: the $0.01 minimum
    (4, 1, 2),  # 0.8c -> 1c (also the minimum); 1.6c -> 2c
    (5, 1, 2),  # exactly 1c; exactly 2c
    (3, 1, 1),  # 0.6c -> 1c; 1.2c -> 1c
    (13, 3, 5),  # 2.6c -> 3c; 5.2c -> 5c
])
def test_mturk_minimum_fee_of_one_cent(reward, nine, ten):
    assert (MTURK.reward_fee(reward, 9), MTURK.reward_fee(reward, 10)) == (nine, ten)


def test_mturk_bonus_fee_is_20_percent_with_the_minimum_and_no_large_hit_surcharge():
    assert MTURK.bonus_fee(15) == 3
    assert MTURK.bonus_fee(2) == 1  # 0.4c: at least a cent
    assert MTURK.bonus_fee(0) == 0 and MTURK.reward_fee(0, 10) == 0  # nothing paid, no fee
    assert MTURK.bonus_fee(1000) == 200


def test_platform_rate_rounds_half_up_and_has_no_minimum():
    fee = platform_fee(Decimal("0.05"))
    assert fee.reward_fee(10, 1) == 1  # 0.5c: half up (banker's rounding would say 0)
    assert fee.reward_fee(50, 1) == 3  # 2.5c -> 3c (banker's: 2c)
    assert fee.reward_fee(30, 1) == 2  # 1.5c -> 2c
    assert fee.reward_fee(9, 20) == 0  # 0.45c -> 0: no minimum, no large-HIT surcharge
    assert fee.bonus_fee(70) == 4  # 3.5c -> 4c
    assert platform_fee(Decimal(0)).reward_fee(1_000_000, 10) == 0  # the default: no fee
    for bad in (Decimal(1), Decimal("-0.01")):
        with pytest.raises(ValueError):
            platform_fee(bad)


def test_expected_rate_prefers_the_measured_time():
    assert expected_rate(10, measured_seconds=None, estimated_seconds=40) == (900, "estimated")
    assert expected_rate(10, measured_seconds=Decimal("48.000"), estimated_seconds=40) == (750, "measured")
    assert expected_rate(10, measured_seconds=None, estimated_seconds=None) is None
    assert expected_rate(1, measured_seconds=Decimal("7"), estimated_seconds=None) == (514, "measured")  # 514.29


def test_the_floor_is_never_optional():
    assert effective_target(target_cents_per_hour=1500, floor_cents_per_hour=800, auto_top_up=True) == 1500
    assert effective_target(target_cents_per_hour=1500, floor_cents_per_hour=800, auto_top_up=False) == 800
    assert effective_target(target_cents_per_hour=500, floor_cents_per_hour=800, auto_top_up=True) == 800
    assert rate_warnings(700, target_cents_per_hour=1500, floor_cents_per_hour=800) == ["below_target", "below_floor"]
    assert rate_warnings(800, target_cents_per_hour=800, floor_cents_per_hour=800) == []
