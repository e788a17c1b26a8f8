"""Money: integer minor units (cents) with a currency code, and every rounding rule in one place.

Amounts are `int` cents, never floats: `Money` refuses anything else. Rates (cents per hour) and their products
with times are computed in `Decimal`, exactly, and turned into cents only here:

- every amount we compute (fees, shares) is rounded **half up to the cent** (`round_cents`);
- the one exception is the fair-wage top-up, which Fair Work (Whiting et al., HCOMP 2019) rounds **up**
  (`ceil_cents`): the worker never ends a cent below the target because of rounding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

SECONDS_PER_HOUR = Decimal(3600)
_CURRENCY = re.compile(r"[A-Z]{3}")


def _check_cents(value: object) -> int:
    # bool is an int subclass; Decimal and float are refused so that no fraction of a cent sneaks in.
    if type(value) is not int:
        raise TypeError(f"money amounts are integer cents, not {type(value).__name__}: {value!r}")
    return value


@dataclass(frozen=True, slots=True, order=False)
class Money:
    """An amount in integer minor units of one currency."""

    cents: int
    currency: str = "USD"

    def __post_init__(self) -> None:
        _check_cents(self.cents)
        if not isinstance(self.currency, str) or not _CURRENCY.fullmatch(self.currency):
            raise ValueError(f"currency must be an ISO 4217 code like USD, not {self.currency!r}")

    def _same(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise ValueError(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.cents + other.cents, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.cents - other.cents, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.cents, self.currency)

    def __mul__(self, count: int) -> Money:
        return Money(self.cents * _check_cents(count), self.currency)

    __rmul__ = __mul__

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.cents < other.cents

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.cents <= other.cents

    def as_json(self) -> dict[str, object]:
        return {"cents": self.cents, "currency": self.currency}

    def __str__(self) -> str:
        sign = "-" if self.cents < 0 else ""
        return f"{sign}{abs(self.cents) // 100}.{abs(self.cents) % 100:02d} {self.currency}"


def round_cents(value: Decimal) -> int:
    """Half up to the cent: the rounding of every computed amount (fees, shares)."""
    if not isinstance(value, Decimal):
        raise TypeError("round a Decimal, not a float")
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def ceil_cents(value: Decimal) -> int:
    """Up to the cent: the top-up's rounding, in the worker's favour."""
    if not isinstance(value, Decimal):
        raise TypeError("round a Decimal, not a float")
    return int(value.quantize(Decimal(1), rounding=ROUND_CEILING))


def hourly_rate(cents: int, seconds: Decimal | int) -> Decimal | None:
    """Cents per hour earned by `cents` for `seconds` of work (exact; None for no time)."""
    seconds = Decimal(seconds)
    if seconds <= 0:
        return None
    return Decimal(_check_cents(cents)) * SECONDS_PER_HOUR / seconds


def pay_at_rate(cents_per_hour: int, seconds: Decimal | int) -> Decimal:
    """What `seconds` of work earns at `cents_per_hour` (exact; rounded by the caller's rule)."""
    return Decimal(_check_cents(cents_per_hour)) * Decimal(seconds) / SECONDS_PER_HOUR


def top_up_cents(*, reward_cents: int, target_cents_per_hour: int, seconds: Decimal | int) -> int:
    """The top-up that brings `reward_cents` for `seconds` of work to the target rate: ceil(target × t − reward),
    and nothing when the reward already meets it. Reward 10¢, 60 s, $15.00/h: 25 − 10 = 15¢."""
    return max(0, ceil_cents(pay_at_rate(target_cents_per_hour, seconds) - _check_cents(reward_cents)))


def effective_target(*, target_cents_per_hour: int, floor_cents_per_hour: int, auto_top_up: bool) -> int:
    """The hourly wage a batch's work is topped up to: the requester's target (auto top-up on) or only the floor
    (off); never below the floor, which is not optional."""
    return max(floor_cents_per_hour, target_cents_per_hour if auto_top_up else 0)


def expected_rate(reward_cents: int, *, measured_seconds: Decimal | int | None,
                  estimated_seconds: Decimal | int | None) -> tuple[int, str] | None:
    """What a task of a batch pays per hour, in cents (half up), and on what time: the measured median once there
    is one ("measured"), else the requester's estimate ("estimated"); None with neither. Read from the batch's
    columns alone, so a worker's task shows it at no cost."""
    for seconds, basis in ((measured_seconds, "measured"), (estimated_seconds, "estimated")):
        if seconds is not None and (rate := hourly_rate(reward_cents, seconds)) is not None:
            return round_cents(rate), basis
    return None


def rate_warnings(rate_cents_per_hour: Decimal | int | None, *, target_cents_per_hour: int,
                  floor_cents_per_hour: int) -> list[str]:
    """`below_target` and `below_floor` for a live rate (nothing is known without one)."""
    if rate_cents_per_hour is None:
        return []
    warnings = []
    if rate_cents_per_hour < target_cents_per_hour:
        warnings.append("below_target")
    if rate_cents_per_hour < floor_cents_per_hour:
        warnings.append("below_floor")
    return warnings


# --- fees -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FeeModel:
    """What the platform (ours, or the crowd a batch is burst to) charges the requester on top of pay.

    `rate` applies to every reward and bonus; `large_hit_rate` is added to the reward's rate for HITs with at
    least `large_hit_assignments` assignments; every fee is at least `minimum_cents` when the rate is not zero
    (per assignment, per bonus). All rounded half up to the cent."""

    name: str
    rate: Decimal = Decimal(0)
    large_hit_rate: Decimal = Decimal(0)
    large_hit_assignments: int = 0
    minimum_cents: int = 0

    def reward_fee(self, reward_cents: int, assignments_per_hit: int) -> int:
        rate = self.rate
        if self.large_hit_assignments and assignments_per_hit >= self.large_hit_assignments:
            rate += self.large_hit_rate
        return self._fee(reward_cents, rate)

    def bonus_fee(self, bonus_cents: int) -> int:
        return self._fee(bonus_cents, self.rate)

    def _fee(self, cents: int, rate: Decimal) -> int:
        if rate == 0 or _check_cents(cents) == 0:
            return 0
        return max(self.minimum_cents, round_cents(Decimal(cents) * rate))


def platform_fee(rate: Decimal) -> FeeModel:
    """Our own fee model: one rate (default 0) on rewards and bonuses."""
    if not isinstance(rate, Decimal) or not Decimal(0) <= rate < Decimal(1):
        raise ValueError("the platform fee rate is a Decimal in [0, 1)")
    return FeeModel("platform", rate=rate)
