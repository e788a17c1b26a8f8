"""Payout providers: who sends the money of an approved payout batch to the workers, and how we learn it arrived.

A provider is chosen per batch (PayoutBatch.provider, a key of PROVIDERS). `submit` is called once, when ops
approve the batch (the money has moved payable -> paid out in the books); it may return external references per
line (a provider that pays at once), or None when confirmation comes later. How it comes is the provider's
`confirmation`:
- "manual": ops pay from the CSV export (their bank, PayPal mass pay, ...) and mark lines (or the whole batch)
  paid with the transfer's reference, or failed (the payout is reversed and the money is payable again);
- a real provider would say "webhook" or "poll", and its webhook or poller calls the same mark_paid /
  mark_failed services (payments/books/payouts.py) with the provider's references.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from payments.models import PayoutBatch, PayoutLine


class PayoutProvider(Protocol):
    name: str
    confirmation: str  # "manual" (ops mark paid), "webhook", "poll"

    def submit(self, batch: PayoutBatch, lines: Sequence[PayoutLine]) -> dict[int, str] | None:
        """Send the approved lines; external references by line id if they are paid already, else None."""
        ...


class ManualProvider:
    """Ops pay by hand from the batch's CSV export, then mark it paid with their transfer reference."""

    name = "manual"
    confirmation = "manual"

    def submit(self, batch: PayoutBatch, lines: Sequence[PayoutLine]) -> dict[int, str] | None:
        return None


PROVIDERS: dict[str, PayoutProvider] = {"manual": ManualProvider()}
