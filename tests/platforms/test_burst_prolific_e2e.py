"""A burst to Prolific from end to end, through real HTTP to the fake of Prolific's API on 127.0.0.1: the API
makes the burst, the job publishes one study of `redundancy` places opening our page, a participant works through
several tasks in one session and is sent back with the study's completion code, the requester's approvals reach
Prolific on the sync, and a cancel stops the study and gives the unused places back."""

from __future__ import annotations

import html
import json
import re

from sqlalchemy import func, select

from base.identity import Role
from market.catalogue.batches import publish_batch
from market.catalogue.models import HitSlot, SlotState
from platforms.jobs import publish_now, sync_now
from platforms.models import PlatformAssignment, PlatformBatch, PlatformSubmission
from platforms.prolific import STUDY_URL_PARAMETERS
from tests import factories
from tests.factories import auth, in_uow

BASE = "https://crowd.example.test"
PID = "60ffe5c8371090c7041d43f8"
SESSION = "61aa00b1c2d3e4f5a6b7c8d9"


def task_of(page: str) -> tuple[str, int, list[int]]:
    """The work token, our assignment id and the items' (public) ids in a work page."""
    token = re.search(r'data-work-token="([^"]+)"', page).group(1)
    first = json.loads(html.unescape(re.search(r'data-first="([^"]+)"', page).group(1)))
    return token, first["task"]["assignment_id"], [i["id"] for i in first["task"]["items"]]


def test_a_participant_works_a_prolific_session_and_our_reviews_reach_prolific(app, client, session, clock,
                                                                               fake_prolific):
    fake = fake_prolific
    app.config.update(PROLIFIC_API_URL=fake.url, PROLIFIC_TOKEN=fake.token, PUBLIC_BASE_URL=BASE)
    app.extensions["crowdmarket.platform_sleep"] = lambda s: None
    owner, token = factories.account(session, Role.REQUESTER, now=clock())
    proj = factories.project(session, owner, now=clock(), reward_cents=10, estimated_seconds=40, items_per_hit=1,
                             assignments_per_item=2)
    factories.items(session, proj, 3, now=clock())
    batch, _ = in_uow(publish_batch, session, project_id=proj.id, account=owner, now=clock())

    made = client.post(f"/api/v1/projects/{proj.id}/batches/{batch.id}/bursts", headers=auth(token),
                       json={"platform": "prolific", "hits": 3})
    assert made.status_code == 202, made.get_json()
    burst_id = made.get_json()["id"]
    with app.app_context():
        publish_now(burst_id)  # with Redis the request only queued it; a published burst is left alone
    burst = session.get(PlatformBatch, burst_id)
    session.refresh(burst)
    assert (burst.status.value, burst.slots, burst.redundancy) == ("open", 6, 2)

    # One study: 2 places (the redundancy), each participant doing 3 tasks of 40 s: 2 minutes, for at least
    # $8.00/h (27c) and at least the tasks' rewards (30c); its URL is our page with Prolific's placeholders.
    (study,) = fake.studies.values()
    assert (study["status"], study["total_available_places"], study["reward"]) == ("ACTIVE", 2, 30)
    assert study["estimated_completion_time"] == 2 and study["internal_name"] == f"crowdmarket-burst-{burst_id}"
    assert study["completion_codes"][0]["code"] == burst.completion_code
    url = study["external_study_url"]
    assert url.startswith(f"{BASE}/work/external/prolific?ref=") and url.endswith(f"&{STUDY_URL_PARAMETERS}")
    page = (url.removeprefix(BASE).replace("{{%PROLIFIC_PID%}}", PID).replace("{{%STUDY_ID%}}", study["id"])
            .replace("{{%SESSION_ID%}}", SESSION))

    done: list[int] = []
    for _ in range(3):  # each HIT once: then the session has nothing left for this participant
        shown = client.get(page)
        assert shown.status_code == 200, shown.get_data(as_text=True)
        work_token, assignment_id, items = task_of(shown.get_data(as_text=True))
        assert assignment_id not in done
        submitted = app.test_client().post(f"/work/tasks/{assignment_id}/submit", headers={"X-Work-Token": work_token},
                                           json={"answers": [{"item_id": i, "answer": "pos"} for i in items],
                                                 "next": True})
        assert submitted.status_code == 200, submitted.get_json()
        done.append(assignment_id)
    final = client.get(page)
    body = final.get_data(as_text=True)
    assert final.status_code == 200 and "All done" in body
    assert 'action="https://app.prolific.com/submissions/complete"' in body and 'method="get"' in body
    assert f'name="cc" value="{burst.completion_code}"' in body
    session.expire_all()
    assert list(session.scalars(select(PlatformAssignment.seq).where(PlatformAssignment.external_id == SESSION)
                                .order_by(PlatformAssignment.seq))) == [0, 1, 2]

    fake.add_submission(study["id"], PID, session_id=SESSION)
    for assignment_id in done:
        approved = client.post(f"/api/v1/projects/{proj.id}/assignments/{assignment_id}/approve", json={},
                               headers=auth(token))
        assert approved.status_code == 200, approved.get_json()
    with app.app_context():
        synced = sync_now()
    assert fake.submissions[SESSION]["status"] == "APPROVED", synced
    transitions = f"/api/v1/submissions/{SESSION}/transition/"
    assert [r.body for r in fake.sent_to("POST", transitions)] == [{"action": "APPROVE"}]
    with app.app_context():
        sync_now()
    assert len(fake.sent_to("POST", transitions)) == 1  # mirrored once
    session.expire_all()
    assert session.scalar(select(PlatformSubmission.mirrored).where(PlatformSubmission.external_id == SESSION)) \
        == "approved"

    cancelled = client.post(f"/api/v1/bursts/{burst_id}/cancel", headers=auth(token))
    assert cancelled.status_code == 202
    with app.app_context():
        sync_now()  # with Redis the cancel only queued it
    stops = fake.sent_to("POST", f"/api/v1/studies/{study['id']}/transition/")
    assert [r.body["action"] for r in stops] == ["PUBLISH", "STOP"]
    assert study["status"] == "AWAITING REVIEW"  # what a STOPped study shows on Prolific
    followed = client.get(f"/api/v1/bursts/{burst_id}", headers=auth(token)).get_json()
    assert (followed["status"], followed["places_left"], followed["mirrored"], followed["problems"]) == (
        "closed", 0, 1, 0)
    assert followed["platform_tasks"][0]["ended_at"] is not None
    # The 3 places no one took are the batch's again.
    session.expire_all()
    assert session.scalar(select(func.count(HitSlot.id)).where(HitSlot.batch_id == batch.id,
                                                               HitSlot.state == SlotState.FREE)) == 3
