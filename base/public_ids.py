"""The item ids workers see: a keyed permutation of the internal ids.

Internal item ids count up as items are imported, so a worker shown raw ids could tell an item imported apart
from the rest (a gold item among this week's items carries last month's id), and would learn how many items a
requester has. Workers see instead the internal id run through a four-round Feistel network over 52 bits (so
ids stay exact in JavaScript numbers) keyed from the app's secret: one id per item, the same wherever it is shown,
unrelated to import order, reversible only with the key. Nothing is stored; requesters keep the internal ids.
"""

from __future__ import annotations

import hashlib
import hmac

from base.validation import MAX_ID

_HALF = 26
_MASK = (1 << _HALF) - 1
_ROUNDS = 4
LIMIT = 1 << (2 * _HALF)  # public ids are in [0, LIMIT)


class ItemIds:
    def __init__(self, secret: str | bytes) -> None:
        raw = secret.encode() if isinstance(secret, str) else secret
        self._key = hmac.new(raw, b"crowdmarket public item ids", hashlib.sha256).digest()[:32]

    def _f(self, half: int, round_no: int) -> int:
        digest = hashlib.blake2b(half.to_bytes(4, "big") + bytes((round_no,)), key=self._key, digest_size=4).digest()
        return int.from_bytes(digest, "big") & _MASK

    def public(self, item_id: int) -> int:
        """The id a worker sees for an internal item id (0 <= item_id < LIMIT)."""
        left, right = item_id >> _HALF, item_id & _MASK
        for round_no in range(_ROUNDS):
            left, right = right, left ^ self._f(right, round_no)
        return (left << _HALF) | right

    def internal(self, public_id: int) -> int:
        """The internal id behind a public one. Every value in range maps to some number below LIMIT, most of them
        beyond any id the database holds: look items up by `item_id` instead."""
        left, right = public_id >> _HALF, public_id & _MASK
        for round_no in reversed(range(_ROUNDS)):
            left, right = right ^ self._f(left, round_no), left
        return (left << _HALF) | right

    def item_id(self, public_id: int) -> int | None:
        """The internal id behind a public one, or None when no item can have it (beyond the id column's range)."""
        item_id = self.internal(public_id)
        return item_id if 1 <= item_id <= MAX_ID else None
