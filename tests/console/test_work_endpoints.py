"""The work page's JSON endpoints (console/work.py) without a browser: the page session and CSRF header they
need, who they refuse, bad bodies, and that they answer as the worker API does."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from base.identity import Role
from market.catalogue.models import Answer, Assignment, AssignmentStatus
from tests.browser import with_password
from tests.console.work_setup import work_world
from tests.factories import account, auth


def signed_in_client(app, login: str):
    """A test client signed in through the log-in form, and its session's CSRF token (from a page's form)."""
    client = app.test_client()
    html = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    resp = client.post("/login", data={"csrf_token": token, "username": login, "password": "correct horse battery"})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    html = client.get("/").get_data(as_text=True)
    return client, re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def page_client(app, login: str):
    """A worker's signed-in client, and the CSRF token its work page carries."""
    client, _ = signed_in_client(app, login)
    page = client.get("/work/tasks")
    assert page.status_code == 200
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.get_data(as_text=True)).group(1)
    return client, csrf


def answers(session) -> int:
    return session.scalar(select(func.count()).select_from(Answer))


@pytest.fixture
def world(app, session, clock):
    return work_world(app, session, clock)


def test_the_page_is_small_uncached_and_allows_images_by_url_only_here(app, session, clock, world):
    client, _ = page_client(app, world.login)
    resp = client.get("/work/tasks")
    assert resp.headers["Cache-Control"] == "no-store"
    csp = resp.headers["Content-Security-Policy"]
    assert "img-src 'self' data: https:" in csp and "script-src 'self';" in csp
    assert "img-src 'self' data:;" in client.get("/work").headers["Content-Security-Policy"]
    weight = len(resp.data) + sum(len(client.get(f"/static/{p}").data)
                                  for p in ("base.css", "work/task.css", "work/task.js"))
    assert weight < 60_000, weight
    assert 'style="' not in resp.get_data(as_text=True) and "<script>" not in resp.get_data(as_text=True)


def test_next_needs_the_csrf_header_and_a_worker_session(app, session, clock, world):
    client, csrf = page_client(app, world.login)
    refused = client.post("/work/tasks/next")
    assert refused.status_code == 400 and refused.mimetype == "application/problem+json"
    assert "CSRF" in refused.get_json()["detail"]
    assert session.scalar(select(func.count()).select_from(Assignment)) == 0  # nothing leased
    resp = client.post("/work/tasks/next", headers={"X-CSRFToken": csrf})
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    task = body["task"]
    assert len(task["items"]) == 2 and task["reward"] == {"cents": 12, "currency": "USD"}
    assert task["hourly_rate"]["basis"] == "estimated" and task["guidelines"]["version"] == 1
    assert body["expires_in_ms"] == 1000 * (
        session.get(Assignment, task["assignment_id"]).expires_at - clock()).total_seconds()
    assert body["guidelines_changed"] is False
    assert body["progress"] == {"answers_today": 0, "earnings": []}
    # The same task as the API shows it.
    api = app.test_client().get(f"/api/v1/assignments/{task['assignment_id']}", headers=auth(world.worker_token))
    assert api.get_json() == task
    # Not signed in: 401 problem; the page itself sends the browser to log in.
    anonymous = app.test_client()
    assert anonymous.get("/work/tasks").status_code == 302
    token = re.search(r'name="csrf_token" value="([^"]+)"', anonymous.get("/login").get_data(as_text=True)).group(1)
    resp = anonymous.post("/work/tasks/next", headers={"X-CSRFToken": token})
    assert resp.status_code == 401 and resp.mimetype == "application/problem+json"


@pytest.mark.parametrize("role", [Role.REQUESTER, Role.OPS])
def test_requester_and_ops_sessions_are_refused(app, session, clock, world, role):
    other, _ = account(session, role, now=clock())
    client, csrf = signed_in_client(app, with_password(app, session, other))
    assert client.get("/work/tasks").status_code == 403
    headers = {"X-CSRFToken": csrf}
    for path in ("/work/tasks/next", "/work/tasks/1/submit", "/work/tasks/1/return", "/work/tasks/1/disputes"):
        resp = client.post(path, json={}, headers=headers)
        assert resp.status_code == 403 and resp.mimetype == "application/problem+json", (path, resp.get_json())
    assert session.scalar(select(func.count()).select_from(Assignment)) == 0


def test_another_workers_assignment_is_not_found(app, session, clock, world):
    client, csrf = page_client(app, world.login)
    other, _ = account(session, Role.WORKER, now=clock())
    other_client, other_csrf = page_client(app, with_password(app, session, other))
    task = other_client.post("/work/tasks/next", headers={"X-CSRFToken": other_csrf}).get_json()["task"]
    body = {"answers": [{"item_id": i["id"], "answer": "pos"} for i in task["items"]], "next": True}
    h = {"X-CSRFToken": csrf}
    for path, payload in ((f"/work/tasks/{task['assignment_id']}/submit", body),
                          (f"/work/tasks/{task['assignment_id']}/return", {}),
                          (f"/work/tasks/{task['assignment_id']}/disputes",
                           {"item_id": task["items"][0]["id"], "note": "mine"})):
        resp = client.post(path, json=payload, headers=h)
        assert resp.status_code == 404 and resp.mimetype == "application/problem+json", path
    assert answers(session) == 0
    assert session.get(Assignment, task["assignment_id"]).status == AssignmentStatus.LEASED


def test_bad_bodies_are_422_problems_and_store_nothing(app, session, clock, world):
    client, csrf = page_client(app, world.login)
    h = {"X-CSRFToken": csrf}
    task = client.post("/work/tasks/next", headers=h).get_json()["task"]
    url = f"/work/tasks/{task['assignment_id']}/submit"
    ids = [i["id"] for i in task["items"]]
    bad = [{"answers": "pos"}, {}, [1, 2], {"answers": [{"item_id": ids[0], "answer": "pos"}]},
           {"answers": [{"item_id": i, "answer": "bogus"} for i in ids]},
           {"answers": [{"item_id": i, "answer": "pos"} for i in ids], "next": "perhaps"}]
    for body in bad:
        resp = client.post(url, json=body, headers=h)
        assert resp.status_code == 422 and resp.mimetype == "application/problem+json", (body, resp.get_json())
        assert resp.get_json()["errors"]
    resp = client.post(url, data="{not json", headers={**h, "Content-Type": "application/json"})
    assert resp.status_code == 422 and resp.mimetype == "application/problem+json"
    resp = client.post(f"/work/tasks/{task['assignment_id']}/disputes", json={"note": ""}, headers=h)
    assert resp.status_code == 422
    assert answers(session) == 0
    assert session.get(Assignment, task["assignment_id"]).status == AssignmentStatus.LEASED


def test_submit_with_next_stores_once_and_leases_the_next_in_one_response(app, session, clock, world):
    client, csrf = page_client(app, world.login)
    h = {"X-CSRFToken": csrf}
    task = client.post("/work/tasks/next", headers=h).get_json()["task"]
    clock.advance(seconds=20)
    body = {"answers": [{"item_id": i["id"], "answer": "pos"} for i in task["items"]],
            "client": {"source": "test"}, "next": True}
    first = client.post(f"/work/tasks/{task['assignment_id']}/submit", json=body, headers=h).get_json()
    assert first["result"]["status"] == "submitted" and first["result"]["duration_ms"] == 20_000
    nxt = first["next"]["task"]
    assert nxt["assignment_id"] != task["assignment_id"]
    assert first["next"]["progress"]["answers_today"] == 2
    assert first["next"]["progress"]["earnings"] == [{"currency": "USD", "pending": 12, "approved": 0}]
    # The same request again (its response was lost): the same result, the held next task, nothing doubled.
    again = client.post(f"/work/tasks/{task['assignment_id']}/submit", json=body, headers=h).get_json()
    assert again["result"] == first["result"] and again["next"]["task"]["assignment_id"] == nxt["assignment_id"]
    assert answers(session) == 2
    # Returning gives the HIT back and brings the next.
    back = client.post(f"/work/tasks/{nxt['assignment_id']}/return", json={"next": True}, headers=h).get_json()
    assert back["result"]["status"] == "returned" and back["next"]["task"]["assignment_id"] != nxt["assignment_id"]
    assert session.get(Assignment, nxt["assignment_id"]).status == AssignmentStatus.RETURNED
    # A definitive refusal: submitting the returned one is a 409 problem.
    late = client.post(f"/work/tasks/{nxt['assignment_id']}/submit", json=body | {
        "answers": [{"item_id": i["id"], "answer": "pos"} for i in nxt["items"]]}, headers=h)
    assert late.status_code == 409 and late.mimetype == "application/problem+json"


def test_no_work_is_a_404_problem_with_the_engines_reason(app, session, clock, world):
    client, csrf = page_client(app, world.login)
    resp = client.post(f"/work/tasks/next?project_id={world.project.id + 1000}", headers={"X-CSRFToken": csrf})
    assert resp.status_code == 404 and resp.mimetype == "application/problem+json"
    h = {"X-CSRFToken": csrf}
    for _ in range(4):  # 8 real items in 2-item HITs, one answer each
        task = client.post("/work/tasks/next", headers=h).get_json()["task"]
        client.post(f"/work/tasks/{task['assignment_id']}/submit", headers=h, json={
            "answers": [{"item_id": i["id"], "answer": "pos"} for i in task["items"]]})
    resp = client.post("/work/tasks/next", headers=h)
    assert resp.status_code == 404 and resp.get_json()["reason"] == "all_assigned"
