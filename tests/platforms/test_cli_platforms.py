"""`crowdmarket burst` and `crowdmarket platforms status|sync` against the fake MTurk endpoint: the estimate
with its large-HIT warning and the offered split, the hold and the published HITs, the same command again
publishing nothing twice, and the status saying what is out there and what is in sync."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from platforms.models import PlatformBatch
from tests.platforms.test_burst_mturk_e2e import _world, mturk  # noqa: F401 - the fixture
from tests.test_cli import invoke  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("mturk")


def _email(session, world) -> str:
    from market.catalogue.models import Project
    from workers.models import Account

    return session.get(Account, session.get(Project, world.project_id).owner_id).email


def test_burst_prints_the_estimate_holds_and_publishes_once(invoke, client, session, clock, mturk):  # noqa: F811
    world = _world(client, session, clock, items=3)
    email = _email(session, world)
    refused = invoke("burst", str(world.batch_id), "--platform", "mturk", "--hits", "2", "--email", email,
                  input="n\n")
    assert refused.exit_code == 1 and "Hold this and publish?" in refused.output and mturk.hits == {}
    done = invoke("burst", str(world.batch_id), "--platform", "mturk", "--hits", "2", "--email", email, "--yes")
    assert done.exit_code == 0, done.output
    assert "2 HITs, 4 places + 0 gold = 4 tasks, 2 assignments per Mechanical Turk task; fee 20%" in done.output
    burst_id = session.scalar(select(PlatformBatch.id).where(PlatformBatch.parent_batch_id == world.batch_id))
    assert f"burst {burst_id}: 2 Mechanical Turk tasks published" in done.output and len(mturk.hits) == 2
    again = invoke("burst", str(world.batch_id), "--platform", "mturk", "--hits", "2", "--email", email, "--yes")
    assert again.exit_code == 0 and f"burst {burst_id}:" in again.output and len(mturk.hits) == 2  # nothing twice
    status = invoke("platforms", "status")
    assert status.exit_code == 0
    assert f"burst {burst_id} mturk batch {world.batch_id}: open, 2 tasks (0 ended), 4 of 4 places left" \
        in status.output
    synced = invoke("platforms", "sync")
    assert synced.exit_code == 0 and '"bursts"' in synced.output
    checked = invoke("platforms", "status", "--check")
    assert "mturk: available_balance=" in checked.output and "sandbox=" in checked.output
    assert "prolific: unreachable or not configured" in checked.output  # no token here


def test_a_large_hit_warns_and_the_split_is_offered(invoke, client, session, clock, mturk):  # noqa: F811
    world = _world(client, session, clock, items=2, assignments_per_item=10)
    email = _email(session, world)
    result = invoke("burst", str(world.batch_id), "--platform", "mturk", "--hits", "2", "--email", email,
                 input="y\ny\n")
    assert result.exit_code == 0, result.output
    assert "warning: 10 assignments per Mechanical Turk task" in result.output and "40%" in result.output
    assert "split: 9 assignments per Mechanical Turk task; fee 20%" in result.output
    assert sorted(h.max_assignments for h in mturk.hits.values()) == [2, 9, 9]


def test_a_batch_of_someone_else_is_refused(invoke, client, session, clock):  # noqa: F811
    world = _world(client, session, clock, items=1)
    result = invoke("burst", str(world.batch_id), "--platform", "mturk", "--hits", "1", "--email", "nobody@x.org",
                 "--yes")
    assert result.exit_code != 0 and "nobody@x.org" in result.output
