"""Judging workers after the response (market/quality/evaluation.py): in process, or as coalesced jobs on the queue."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from base.identity import Role
from edge import jobs
from market.catalogue.batches import publish_batch
from tests.conftest import REDIS_URL, make_app
from tests.factories import account, auth, items, project
from workers.models import WorkerStats


def _work(client, token, n: int) -> None:
    for _ in range(n):
        task = client.post("/api/v1/work/next", headers=auth(token)).get_json()
        client.post(f"/api/v1/assignments/{task['assignment_id']}/submit", headers=auth(token),
                    json={"answers": [{"item_id": i["id"], "answer": "pos"} for i in task["items"]]})


@pytest.mark.parametrize("mode", ["inline", "auto"])
def test_in_process_the_worker_is_judged_once_the_response_is_closed(database, session, clock, mode):
    """inline: in the request's thread when the response closes; auto without Redis: by the process's evaluating
    thread, after that."""
    app = make_app({"DATABASE": database, "CLOCK": clock, "REDIS_URL": None, "EVALUATION": mode})
    owner, _ = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock())
    items(session, proj, 3, now=clock())
    publish_batch(session, project_id=proj.id, account=owner, now=clock())
    worker, token = account(session, Role.WORKER, now=clock())
    app.test_client_class = FlaskClient  # one that leaves closing the response to the test
    client = app.test_client()
    task = client.post("/api/v1/work/next", headers=auth(token)).get_json()
    response = client.post(f"/api/v1/assignments/{task['assignment_id']}/submit", headers=auth(token),
                           json={"answers": [{"item_id": i["id"], "answer": "pos"} for i in task["items"]]})
    assert response.status_code == 200
    assert session.get(WorkerStats, (worker.id, proj.id)) is None  # the response is out; nothing judged yet
    response.close()  # the server has sent it
    assert app.extensions["crowdmarket.evaluation_thread"].wait(10)
    session.expire_all()
    assert session.get(WorkerStats, (worker.id, proj.id)).tasks == 1


@pytest.mark.skipif(not REDIS_URL, reason="needs Redis (CROWDMARKET_REDIS_URL); CI's second run sets it")
def test_with_redis_judging_is_a_job_coalesced_per_worker(database, session, clock):
    app = make_app({"DATABASE": database, "CLOCK": clock, "EVALUATION": "auto"})
    owner, _ = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock(), assignments_per_item=1)
    items(session, proj, 6, now=clock())
    publish_batch(session, project_id=proj.id, account=owner, now=clock())
    (first, first_token), (second, second_token) = (account(session, Role.WORKER, now=clock()) for _ in range(2))
    client = app.test_client()
    try:
        _work(client, first_token, 3)
        _work(client, second_token, 1)
        with app.app_context():
            queue = jobs._queue(app)
            assert queue is not None and queue.count == 2  # three submits of one worker: one job
        session.expire_all()
        assert session.scalars(select(WorkerStats)).all() == []
        jobs.work(app, burst=True)
        session.expire_all()
        assert session.get(WorkerStats, (first.id, proj.id)).tasks == 3
        assert session.get(WorkerStats, (second.id, proj.id)).tasks == 1
        _work(client, first_token, 1)  # the job took its marker down: the next submit queues again
        with app.app_context():
            assert jobs._queue(app).count == 1
    finally:
        from tests.conftest import clear_redis

        clear_redis(app)
