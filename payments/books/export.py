"""The books as a Beancount file, for audit by an independent tool (`bean-check`).

Signs: a Beancount amount is the ledger's amount negated. The ledger keeps balances from the account holder's
side (a requester's available money is positive); Beancount keeps them from the platform's (money it holds for
others is a credit, negative). So what we owe reads as a negative liability, what we earned as negative income,
and money received or paid out as assets, as in any set of books:

  requester:R:available:CUR  -> Liabilities:Requesters:R<R>:Available   (negative: owed to the requester)
  requester:R:escrow:CUR     -> Liabilities:Requesters:R<R>:Escrow      (negative: held for their batches)
  worker:W:payable:CUR       -> Liabilities:Workers:W<W>:Payable        (negative: earned, owed to the worker)
  worker:W:paid_out:CUR      -> Assets:Paid:Workers:W<W>                (negative: money that left to the worker)
  fees:platform:CUR          -> Income:Fees:Platform                    (negative: our fees earned)
  fees:<p>:CUR               -> Income:Fees:<P>                         (fees of another crowd)
  external:<p>:CUR           -> Assets:Paid:External:<P>                (negative: paid to another crowd)
  funding:external:CUR       -> Assets:Funding:External                 (positive: money received from outside)

Assets = -(Liabilities + Income): the platform holds exactly what it owes plus what it earned. Amounts are cents
written as units with two decimals. One `open` per account (dated at the first transaction), one transaction per
ledger transaction (its entries as postings), and one `balance` per account the day after the last transaction,
equal to the account's stored balance: bean-check confirms independently that every transaction balances and that
the stored balances equal the sums of their entries.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from payments.models import AccountKind, LedgerAccount, LedgerEntry, LedgerTransaction


def _component(text: str) -> str:
    """A Beancount account name component: a capital letter or digit first, then letters, digits, dashes."""
    cleaned = re.sub(r"[^A-Za-z0-9-]", "-", text or "X").strip("-") or "X"
    return cleaned[0].upper() + cleaned[1:]


def account_name(kind: AccountKind, owner_id: int | None, platform: str | None) -> str:
    """The Beancount name of a ledger account (see the module docstring)."""
    if kind == AccountKind.REQUESTER_AVAILABLE:
        return f"Liabilities:Requesters:R{owner_id}:Available"
    if kind == AccountKind.REQUESTER_ESCROW:
        return f"Liabilities:Requesters:R{owner_id}:Escrow"
    if kind == AccountKind.WORKER_PAYABLE:
        return f"Liabilities:Workers:W{owner_id}:Payable"
    if kind == AccountKind.WORKER_PAID_OUT:
        return f"Assets:Paid:Workers:W{owner_id}"
    if kind == AccountKind.PLATFORM_FEES:
        return f"Income:Fees:{_component(platform or 'platform')}"
    if kind == AccountKind.PLATFORM_FUNDING:
        return "Assets:Funding:External"
    return f"Assets:Paid:External:{_component(platform or 'external')}"


def _units(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def beancount_lines(session: Session, *, chunk: int = 5000) -> Iterator[str]:
    """The Beancount file, in pieces (streams the transactions in id order, `chunk` at a time)."""
    accounts = {aid: (account_name(kind, owner, platform), currency, int(bal)) for aid, kind, owner, platform,
                currency, bal in session.execute(select(LedgerAccount.id, LedgerAccount.kind,
                                                        LedgerAccount.owner_id, LedgerAccount.platform,
                                                        LedgerAccount.currency, LedgerAccount.balance)
                                                 .order_by(LedgerAccount.id))}
    first, last = session.execute(select(func.min(LedgerTransaction.created_at),
                                         func.max(LedgerTransaction.created_at))).one()
    first_day = _day(first) if first is not None else dt.date(2000, 1, 1)
    last_day = _day(last) if last is not None else first_day
    yield "; crowdmarket ledger export. Amounts are the ledger's negated (see payments/books/export.py).\n"
    yield 'option "title" "crowdmarket books"\n'
    currencies = sorted({c for _, c, _ in accounts.values()})
    if currencies:
        yield f'option "operating_currency" "{currencies[0]}"\n'
    yield "\n"
    names: dict[str, set[str]] = {}
    for name, currency, _ in accounts.values():
        names.setdefault(name, set()).add(currency)
    yield "".join(f"{first_day.isoformat()} open {name} {','.join(sorted(cur))}\n"
                  for name, cur in sorted(names.items()))
    after = 0
    while True:
        txns = session.execute(select(LedgerTransaction.id, LedgerTransaction.idempotency_key,
                                      LedgerTransaction.kind, LedgerTransaction.currency,
                                      LedgerTransaction.reason, LedgerTransaction.reverses_id,
                                      LedgerTransaction.created_at)
                               .where(LedgerTransaction.id > after).order_by(LedgerTransaction.id).limit(chunk)).all()
        if not txns:
            break
        after = txns[-1].id
        legs: dict[int, list[tuple[int, int]]] = {t.id: [] for t in txns}
        for tid, aid, amount in session.execute(
                select(LedgerEntry.transaction_id, LedgerEntry.account_id, LedgerEntry.amount)
                .where(LedgerEntry.transaction_id.between(txns[0].id, after)).order_by(LedgerEntry.id)):
            if tid in legs:
                legs[tid].append((aid, int(amount)))
        out = []
        for t in txns:
            out.append(f"\n{_day(t.created_at).isoformat()} * {_quote(t.kind.value)} "
                       f"{_quote(t.reason or t.idempotency_key)}\n"
                       f"  ledger_id: {_quote(str(t.id))}\n  key: {_quote(t.idempotency_key)}\n")
            if t.reverses_id is not None:
                out.append(f"  reverses: {_quote(str(t.reverses_id))}\n")
            for aid, amount in legs[t.id]:
                name, currency, _ = accounts[aid]
                out.append(f"  {name}  {_units(-amount)} {currency}\n")
        yield "".join(out)
    check_day = (last_day + dt.timedelta(days=1)).isoformat()
    yield "\n" + "".join(f"{check_day} balance {name}  {_units(-bal)} {currency}\n"
                         for name, currency, bal in sorted(accounts.values()))


def _day(when: dt.datetime) -> dt.date:
    return when.astimezone(dt.UTC).date() if when.tzinfo else when.date()
