"""The quality report: JSON, download with provenance, and the signed web page (in Chromium)."""

from __future__ import annotations

import json

import krippendorff
import numpy as np
import pytest
from sqlalchemy import select

from aggregation import api as aggregation_api
from base.identity import Role
from market.catalogue.batches import publish_batch
from market.catalogue.models import Item, Project
from tests.aggregation.test_runs import GOLD, VOTES, crowd, start  # noqa: F401 - the fixture
from tests.factories import account, auth, items
from workers.models import Account

CLASSES = ["pos", "neg", "neu"]


def get_report(client, proj, token, **query):
    q = "&".join(f"{k}={v}" for k, v in query.items())
    resp = client.get(f"/api/v1/projects/{proj.id}/quality-report?{q}", headers=auth(token))
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


@pytest.fixture
def reported(client, app, crowd, session, clock):  # noqa: F811 - crowd is the imported fixture
    proj, token, workers, by_ext = crowd
    # Two more items in a second batch nobody has answered: coverage must show them below redundancy.
    items(session, proj, 2, now=clock(), prefix="late")
    publish_batch(session, project_id=proj.id, account=session.get(Account, proj.owner_id), now=clock())
    session.get(Project, proj.id).assignments_per_item = 4  # Fleiss' kappa: items with exactly 4 answers
    session.commit()
    _, mv = start(client, app, proj, token, method="mv")
    _, ds = start(client, app, proj, token, method="ds")
    return proj, token, workers, mv, ds


def test_report_by_hand(client, reported, session):
    proj, token, workers, mv, ds = reported
    gold1 = session.scalar(select(Item.id).where(Item.project_id == proj.id, Item.external_id == "it-gold1"))
    report = get_report(client, proj, token, aggregation=mv["id"])
    assert report["project"]["classes"] == CLASSES and report["aggregation"]["id"] == mv["id"]
    assert report["ds_aggregation"]["id"] == ds["id"]  # DS accuracy comes from the latest DS run
    assert report["totals"] == {"answers": 28, "answers_excluded": 7, "items": 9, "items_answered": 7,
                                "gold_items_answered": 2, "workers": 4}
    # Gold misses: both gold items are "pos"; 4 of 8 answers said "neg".
    # gold1 ("pos") drew pos, neg, neg, neg: a majority against the known answer.
    assert report["gold_suspects"] == [{"item_id": gold1, "external_id": "it-gold1",
                                        "known": "pos", "crowd": "neg", "answers": 4, "crowd_share": 0.75,
                                        "known_share": 0.25}]
    gold = report["gold_errors"]
    assert gold["matrix"] == [[4, 4, 0], [0, 0, 0], [0, 0, 0]] and gold["correct"] == 4 and gold["answers"] == 8
    assert gold["misses"] == [{"known": "pos", "given": "neg", "count": 4}]
    by_worker = {w["worker_id"]: w for w in report["workers"]}
    assert [(by_worker[w.id]["gold_correct"], by_worker[w.id]["gold_seen"]) for w in workers[:4]] == \
        [(2, 2), (1, 2), (1, 2), (0, 2)]
    assert workers[4].id not in by_worker  # blocked: excluded
    assert all(w["answers"] == 7 and w["ds_accuracy"] is not None for w in by_worker.values())
    lo, hi = by_worker[workers[0].id]["gold_interval"]
    assert lo < 1 and hi == 1 and by_worker[workers[0].id]["gold_accuracy"] == 1
    # Coverage: the first batch is complete, the second has 2 items with no answers at redundancy 3.
    assert [(c["items"], c["items_below"], c["answers_missing"]) for c in report["coverage"]] == [(5, 0, 0), (2, 2, 6)]
    assert report["guidelines"] == [{"version": 1, "answers": 28, "workers": 4, "current": True,
                                     "created_at": report["guidelines"][0]["created_at"]}]
    assert [(d["label"], d["answers"], d["aggregated"]) for d in report["label_distribution"]] == \
        [("pos", 12, 2), ("neg", 12, 2), ("neu", 4, 1)]


def test_agreement_matches_the_reference_implementations(client, reported):
    from statsmodels.stats.inter_rater import fleiss_kappa

    proj, token, *_ = reported
    agreement = get_report(client, proj, token)["agreement"]
    codes = [[CLASSES.index(v) for v in votes] for votes in VOTES.values()]  # the items to label, gold excluded
    reliability = np.array(codes, dtype=float).T  # raters x units
    assert agreement["krippendorff_alpha"] == pytest.approx(
        krippendorff.alpha(reliability_data=reliability, level_of_measurement="nominal"), abs=1e-6)
    table = np.array([[row.count(k) for k in range(3)] for row in codes])
    assert agreement["fleiss_kappa"] == pytest.approx(fleiss_kappa(table, method="fleiss"), abs=1e-6)
    assert agreement["fleiss_items"] == 5 and agreement["units"] == 5 and agreement["pairable"] == 20
    per = {c["label"]: c for c in agreement["per_category"]}
    neu = (reliability == 2).astype(float)
    assert per["neu"]["alpha"] == pytest.approx(krippendorff.alpha(reliability_data=neu,
                                                                   level_of_measurement="nominal"), abs=1e-6)


def test_download_has_the_provenance_of_every_label(client, reported):
    proj, token, workers, mv, _ = reported
    resp = client.get(f"/api/v1/projects/{proj.id}/quality-report/download?aggregation={mv['id']}",
                      headers=auth(token))
    assert resp.status_code == 200 and "attachment" in resp.headers["Content-Disposition"]
    body = json.loads(resp.get_data(as_text=True))
    assert body["totals"]["answers"] == 28 and len(body["labels"]) == 7
    labels = {r["external_id"]: r for r in body["labels"]}
    assert labels["it2"]["label"] == "neu" and labels["it2"]["confidence"] == 1.0 and not labels["it2"]["is_gold"]
    assert labels["it-gold1"]["is_gold"]
    first = labels["it0"]["answers"]
    assert [a["worker_id"] for a in first] == [w.id for w in workers[:4]]
    assert [a["value"] for a in first] == VOTES["it0"]
    assert all(a["guideline_version"] == 1 and a["submitted_at"].endswith("+00:00") and a["duration_ms"] == 4000
               for a in first)
    assert sorted(a["value"] for a in labels["it-gold0"]["answers"]) == sorted(GOLD["it-gold0"])


def test_report_access(client, reported, session, clock):
    proj, token, *_ = reported
    _, other = account(session, Role.REQUESTER, now=clock())
    _, worker = account(session, Role.WORKER, now=clock())
    url = f"/api/v1/projects/{proj.id}/quality-report"
    assert client.get(url, headers=auth(other)).status_code == 404
    assert client.get(url, headers=auth(worker)).status_code == 403
    assert client.get(f"{url}/download", headers=auth(other)).status_code == 404
    assert client.get(f"{url}/link", headers=auth(other)).status_code == 404
    resp = client.get(f"{url}?aggregation=999999", headers=auth(token))
    assert resp.status_code == 404 and resp.mimetype == "application/problem+json"


def test_report_link_is_signed_expires_and_follows_access(client, reported, session, monkeypatch):
    proj, token, *_ = reported
    link = client.get(f"/api/v1/projects/{proj.id}/quality-report/link", headers=auth(token))
    assert link.status_code == 200
    url = link.get_json()["url"]
    page = client.get(url)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert page.headers["Cache-Control"] == "no-store" and "Quality report" in page.get_data(as_text=True)
    assert client.get(url[:-3] + "abc").status_code == 404  # tampered
    monkeypatch.setattr(aggregation_api, "REPORT_LINK_SECONDS", -1)
    assert client.get(url).status_code == 410  # expired
    monkeypatch.undo()
    session.get(Account, proj.owner_id).is_active = False  # the account lost access: so does its link
    session.commit()
    assert client.get(url).status_code == 404


def test_report_page_in_a_browser(client, reported, live_server, page):
    proj, token, workers, mv, _ = reported
    page, problems = page
    report = get_report(client, proj, token)
    url = client.get(f"/api/v1/projects/{proj.id}/quality-report/link?aggregation={mv['id']}",
                      headers=auth(token)).get_json()["url"]
    page.goto(live_server + url[url.index("/reports/"):])
    page.wait_for_load_state("load")
    assert page.title() == "Quality report: Sentiment of reviews · crowdmarket"
    assert page.locator("#alpha").inner_text() == f"{report['agreement']['krippendorff_alpha']:.3f}"
    assert page.locator("#workers tbody tr").count() == 4
    assert page.locator("#gold-suspects tbody td").all_inner_texts()[:3] == ["it-gold1", "pos", "neg"]
    assert page.locator("#gold-errors td.miss").all_inner_texts() == ["4"]
    assert page.locator("#run").inner_text().startswith(f"From aggregation {mv['id']} (mv)")
    # Item counts: `totals.items` and a batch's `items` are dict keys, not the dict's method.
    assert page.locator("#totals .card").nth(1).inner_text().split() == ["items", "answered", "7", "of", "9"]
    rows = page.locator("#coverage tbody tr")
    assert [rows.nth(i).locator("td").nth(1).inner_text() for i in range(2)] == ["5", "2"]
    assert rows.nth(1).locator("td").nth(3).inner_text() == "2"
    assert page.locator("#distribution tbody tr").first.locator("td").all_inner_texts()[:2] == ["pos", "12"]
    assert [t.strip() for t in page.locator("#guidelines tbody td").first.all_inner_texts()] == ["v1 (current)"]
    # The page's stylesheets (static files under its CSP) applied, and nothing was refused or failed.
    assert page.locator("#totals .card b").first.evaluate("b => getComputedStyle(b).display") == "block"
    assert page.locator("body").evaluate("b => getComputedStyle(b).maxWidth") == "1152px"  # 72rem
    assert problems == []
