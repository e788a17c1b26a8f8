"""The ops worker page: quality per project and overall (what /api/v1/ops/workers/{id}/quality returns), every
flag linking to its page, blocks in force and past, earnings, balances and payout lines; and the domain queries
behind the blocks and payouts."""

from __future__ import annotations

import datetime as dt
import re

from base.identity import Role
from payments.books import payouts
from payments.models import PayoutLineStatus
from tests import books_support as books
from tests import factories
from tests.console.ops_setup import gold_project, login_token, ops_session, spammer
from tests.factories import auth, in_uow
from workers import flags
from workers.models import FlagReason

PERIOD = dt.datetime(2026, 1, 31, tzinfo=dt.UTC)


def section(html: str, table_id: str) -> str:
    return re.search(rf'<table id="{table_id}">.*?</table>', html, re.S).group(0)


def test_the_worker_page_shows_stats_flags_blocks_earnings_and_payouts(client, session, clock, monkeypatch):
    proj = gold_project(session, clock)
    worker, token, flag = spammer(client, session, clock, monkeypatch, right=1, wrong=4)
    # Money: two approved rewards and a bonus, then a payout batch of what is payable, approved.
    owner, _ = books.requester(session, clock(), cents=10_000)
    paid = books.batch(session, owner, clock(), items=2, hold_cents=2000, title="Paid reviews")
    for n, reward in enumerate((150, 250)):
        books.pay(session, paid, books.assignment(session, paid, worker, clock(), n=n, duration_ms=90_000),
                  reward=reward, fee=0, now=clock())
    books.bonus(session, paid, worker.id, cents=40, fee=0, now=clock())
    session.commit()
    ops = ops_session(client, session, clock)
    # Flags: the quality rules' (open), then one raised by hand and blocked from all work, and an old one lifted.
    manual = flags.raise_flag(session, worker_id=worker.id, project_id=None, reason=FlagReason.MANUAL,
                              note="reported", actor=ops, now=clock())
    flags.block(session, flag_id=manual.id, actor=ops, scope="all", reason="reported by a requester", now=clock())
    session.commit()
    payout, _ = in_uow(payouts.create_batch, session, actor_id=ops.id, currency="USD", period_end=PERIOD,
                       minimum_cents=100, now=clock())

    html = client.get(f"/ops/workers/{worker.id}").get_data(as_text=True)
    assert f"<h1>Worker {worker.username}</h1>" in html
    # Stats: the API's figures, row for row.
    api = client.get(f"/api/v1/ops/workers/{worker.id}/quality",
                     headers=auth(factories.account(session, Role.OPS, now=clock())[1])).get_json()["data"]
    stats = section(html, "stats")
    assert stats.count("<tr>") == len(api) + 1 and "Overall" in stats and "Sentiment of reviews" in stats
    project_row = next(r for r in api if r["project_id"] == proj.id)
    assert project_row["gold_seen"] == 5 and "1 / 5" in stats and "20%" in stats
    # Flags link to their pages; blocks say whether they hold.
    listed = section(html, "flags")
    assert f'href="/ops/flags/{flag.id}"' in listed and f'href="/ops/flags/{manual.id}"' in listed
    assert "MANUAL" in listed and "blocked" in listed
    blocks = section(html, "blocks")
    assert "all work" in blocks and "in force" in blocks and "reported by a requester" in blocks
    # Earnings per day and project, balances and the payout line (held: the worker has unresolved flags).
    earnings = section(html, "earnings")
    assert "Paid reviews" in earnings and "$4.00" in earnings and "$0.40" in earnings
    assert "$4.40 payable" in html
    lines = section(html, "payouts")
    assert f"#{payout.id}" in lines and "$4.40" in lines and "held" in lines and "Held back for review" in lines


def test_blocks_past_and_present_and_payout_lines_newest_first(session, clock):
    worker, _ = factories.account(session, Role.WORKER, now=clock())
    proj = gold_project(session, clock)
    first = flags.raise_flag(session, worker_id=worker.id, project_id=proj.id, reason=FlagReason.MANUAL, note="a",
                             now=clock())
    flags.block(session, flag_id=first.id, actor=None, scope="project", reason="first", now=clock(),
                expires_at=clock() + dt.timedelta(hours=1))
    second = flags.raise_flag(session, worker_id=worker.id, project_id=None, reason=FlagReason.MANUAL, note="b",
                              now=clock())
    flags.block(session, flag_id=second.id, actor=None, scope="all", reason="second", now=clock())
    session.flush()
    assert [b.reason for b in flags.worker_blocks(session, worker_id=worker.id)] == ["second", "first"]
    later = clock() + dt.timedelta(hours=2)  # the first has expired by then
    held = flags.blocks_in_force(session, worker_ids=[worker.id], now=later)
    assert [b.reason for b in held[worker.id]] == ["second"]
    assert flags.blocks_in_force(session, worker_ids=[], now=later) == {}

    owner, _ = books.requester(session, clock(), cents=10_000)
    paid = books.batch(session, owner, clock(), items=2, hold_cents=2000)
    earner, _ = factories.account(session, Role.WORKER, now=clock())
    ops, _ = factories.account(session, Role.OPS, now=clock())
    ids = []
    for n, period in enumerate((PERIOD, PERIOD + dt.timedelta(days=28))):
        books.pay(session, paid, books.assignment(session, paid, earner, clock(), n=n), reward=300, fee=0,
                  now=clock())
        session.commit()
        batch, _ = in_uow(payouts.create_batch, session, actor_id=ops.id, currency="USD", period_end=period,
                          minimum_cents=100, now=clock())
        in_uow(payouts.approve, session, batch_id=batch.id, actor_id=ops.id, now=clock())
        ids.append(batch.id)
    got = payouts.worker_lines(session, worker_id=earner.id)
    assert [b.id for _, b in got] == ids[::-1] and all(line.worker_id == earner.id for line, _ in got)
    assert [line.status for line, _ in got] == [PayoutLineStatus.APPROVED] * 2
    assert payouts.worker_lines(session, worker_id=worker.id) == []


def test_the_worker_page_is_for_ops_and_for_workers_only(client, session, clock):
    ops_session(client, session, clock)
    requester, _ = factories.account(session, Role.REQUESTER, now=clock())
    assert client.get(f"/ops/workers/{requester.id}").status_code == 404  # not a worker: not shown
    assert client.get("/ops/workers/999999").status_code == 404
    worker, _ = factories.account(session, Role.WORKER, now=clock())
    html = client.get(f"/ops/workers/{worker.id}").get_data(as_text=True)
    assert "Never flagged." in html and "Never blocked." in html and "No payouts yet." in html
    other = client.application.test_client()
    login_token(other, session, clock, worker)
    assert other.get(f"/ops/workers/{worker.id}").status_code == 403  # not even their own
