"""The HTML pages: security headers on every one, no inline script or style, and the API reference offline."""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest

from base.identity import Role
from market.catalogue.batches import publish_batch
from payments.books.payouts import create_batch
from platforms import burst as bursts
from platforms import registry
from platforms.jobs import page_path
from qualification.service import create_type
from shell import pages
from tests.browser import PASSWORD, with_password
from tests.factories import SENTIMENT, account, auth, items, project

# Routes outside /api/ that are not HTML pages, and pages that only take a form post; every other one must be
# listed in `html_urls`.
NOT_HTML = {"/openapi.json", "/healthz", "/metrics", "/static/<path:filename>", "/logout", "/work/tasks/next",
            "/work/tasks/<int:assignment_id>/submit", "/work/tasks/<int:assignment_id>/return",
            "/work/tasks/<int:assignment_id>/disputes",
            *(f"/ops/flags/<int:flag_id>/{action}" for action in ("block", "unblock", "dismiss")),
            "/ops/payouts/<int:batch_id>/export.csv", "/ops/payouts/<int:batch_id>/approve",
            "/ops/payouts/<int:batch_id>/paid", "/ops/payouts/<int:batch_id>/lines/<int:line_id>/paid",
            "/ops/payouts/<int:batch_id>/lines/<int:line_id>/failed",
            "/requester/projects/<int:project_id>/batches/<int:batch_id>/approve"}
# The work page shows items' images from anywhere on the web by URL (console/work.py); no other page may.
IMAGES_BY_URL = {"/work/tasks": "'self' data: https:"}
# MTurk's task page (console/external.py) shows the work page too, and hands the HIT back with a form posted to
# MTurk (without our CSRF token: it is not ours to send).
MTURK = "https://www.mturk.com https://workersandbox.mturk.com"
# MTurk's production worker site frames HITs from worker.mturk.com (platforms/mturk.py).
FRAMED_BY = f"'self' https://worker.mturk.com {MTURK}"


@pytest.fixture
def html_urls(app, client, session, clock) -> dict[str, list[str]]:
    """Each HTML route with URLs that exercise it (its error pages too)."""
    owner, token = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock())
    session.commit()
    link = client.get(f"/api/v1/projects/{proj.id}/quality-report/link", headers=auth(token)).get_json()["url"]
    report = link[link.index("/reports/"):]
    html = client.get("/signup").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    signed_in = client.post("/signup", data={"csrf_token": csrf, "username": "pages-worker",
                                             "password": "correct horse battery"})
    assert signed_in.status_code == 302
    qtype = create_type(session, owner=owner, now=clock(), data={
        "name": "Screener", "description": "", "label_schema": SENTIMENT, "passing_score": 50,
        "questions": [{"data": {"text": "good"}, "answer": "pos"}], "test_duration_seconds": 600,
        "retry_delay_seconds": 60, "max_attempts": None, "auto_grant": True})
    session.commit()
    tests = f"/work/qualifications/{qtype.id}"
    fresh = re.search(r'name="csrf_token" value="([^"]+)"', client.get(tests).get_data(as_text=True)).group(1)
    attempt = client.post(tests, data={"csrf_token": fresh}).headers["Location"]
    from workers import flags
    from workers.models import Account, FlagReason

    staff = account(session, Role.OPS, now=clock())[0]
    ops, mine = with_password(app, session, staff), with_password(app, session, owner)
    worker = session.query(Account).filter(Account.username == "pages-worker").one()
    flag = flags.raise_flag(session, worker_id=worker.id, project_id=proj.id, reason=FlagReason.MANUAL, note="n",
                            now=clock())
    payout, _ = create_batch(session, actor_id=staff.id, currency="USD", period_end=clock(), minimum_cents=0,
                             now=clock())
    items(session, proj, 2, now=clock())
    batch, _ = publish_batch(session, project_id=proj.id, account=owner, now=clock())
    burst, _ = bursts.create(session, actor=owner, batch_id=batch.id, platform="mturk", platform_title="MTurk",
                             fees=registry.fees("mturk"), hits=1, split=False, key="pages", now=clock())
    session.commit()
    hit = page_path(app, platform="mturk", batch_id=burst.batch_id)
    mturk = "&hitId=3HIT1&workerId=A1PAGES&turkSubmitTo=https://www.mturk.com"
    # The worker's pages signed in, then the form pages (they send a signed-in worker on to /work: logged out
    # first, by /logout-first, so /work goes last among the signed-in ones); then the ops and requester pages,
    # each signed in as its role ("/log-in-as <name>"), and logged out at the end.
    return {"/": ["/", "/no-such-page"], "/docs": ["/docs"],
            "/reports/quality/<token>": [report, report[:-3] + "abc"], "/work/earnings": ["/work/earnings"],
            "/work/tasks": ["/work/tasks"],
            "/work/qualifications": ["/work/qualifications"],
            "/work/qualifications/<int:type_id>": [tests, "/work/qualifications/0"],
            "/work/qualifications/attempts/<int:attempt_id>": [attempt, "/work/qualifications/attempts/0"],
            "/work": ["/work", "/logout-first"],
            "/signup": ["/signup"], "/login": ["/login"],
            "/work/external/<platform_name>": [f"{hit}&assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE",
                                               f"{hit}&assignmentId=3PAGESASSIGNMENT{mturk}",
                                               "/work/external/mturk?ref=forged"],
            "/ops": [f"/log-in-as {ops}", "/ops"],
            "/ops/flags/<int:flag_id>": [f"/ops/flags/{flag.id}", "/ops/flags/999999"],
            "/ops/workers/<int:worker_id>": [f"/ops/workers/{worker.id}", "/ops/workers/999999"],
            "/ops/payouts": ["/ops/payouts"],
            "/ops/payouts/<int:batch_id>": [f"/ops/payouts/{payout.id}", "/ops/payouts/999999"],
            "/ops/projects": ["/ops/projects"],
            "/ops/projects/<int:project_id>": [f"/ops/projects/{proj.id}", "/ops/projects/999999", "/logout-first"],
            "/requester": [f"/log-in-as {mine}", "/requester"],
            "/requester/projects/<int:project_id>": [f"/requester/projects/{proj.id}", "/requester/projects/999999"],
            "/requester/projects/<int:project_id>/quality": [f"/requester/projects/{proj.id}/quality",
                                                             "/logout-first"]}


class InlineCode(HTMLParser):
    """Collects what a strict CSP would refuse: inline scripts, <style> elements, style and on* attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names or tag == "style":
            self.found.append(f"<{tag}> element")
        self.found += [f"{name}= on <{tag}>" for name in names if name == "style" or name.startswith("on")]


def directives(policy: str) -> dict[str, str]:
    return {d.split()[0]: " ".join(d.split()[1:]) for d in (part.strip() for part in policy.split(";")) if d}


def visits(client, html_urls: dict[str, list[str]]):
    """GET each URL of `html_urls` in order, signing in and out at its markers ("/log-in-as <name>",
    "/logout-first"); yields (url, response, the session's latest CSRF token)."""
    csrf_token = ""
    for url in (u for urls in html_urls.values() for u in urls):
        if url == "/logout-first":
            client.post("/logout", data={"csrf_token": csrf_token})
            continue
        if url.startswith("/log-in-as "):
            token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True))
            assert client.post("/login", data={"csrf_token": token.group(1), "username": url.split(" ", 1)[1],
                                               "password": PASSWORD}).status_code == 302, url
            continue
        resp = client.get(url)
        if match := re.search(r'name="csrf_token" value="([^"]+)"', resp.get_data(as_text=True)):
            csrf_token = match.group(1)
        yield url, resp, csrf_token


def test_every_html_route_sends_the_security_headers_and_no_inline_code(app, client, html_urls):
    routes = {rule.rule for rule in app.url_map.iter_rules() if not rule.rule.startswith("/api/")}
    assert routes == set(html_urls) | NOT_HTML  # a new page: add it to html_urls
    for url, resp, _ in visits(client, html_urls):
        external = url.startswith("/work/external/") and resp.status_code == 200
        assert resp.mimetype == "text/html" and resp.status_code in (200, 404), url
        policy = directives(resp.headers["Content-Security-Policy"])
        assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'", url
        # Framed only by this site and MTurk's worker sites (the work page is an ExternalQuestion target).
        assert policy["frame-ancestors"] == FRAMED_BY and policy["base-uri"] == "'none'", url
        assert policy["form-action"] == (f"'self' {MTURK}" if external else "'self'"), url
        assert "unsafe" not in resp.headers["Content-Security-Policy"], url
        # Nothing from other hosts.
        images = IMAGES_BY_URL.get("/work/tasks" if external else url)
        assert policy["img-src"] == (images or "'self' data:"), url
        assert all("http" not in value for name, value in policy.items()
                   if name not in ("frame-ancestors", "form-action") and (name != "img-src" or not images)), url
        assert resp.headers["X-Content-Type-Options"] == "nosniff", url
        assert resp.headers["Referrer-Policy"] == "same-origin", url
        html = resp.get_data(as_text=True)
        parser = InlineCode()
        parser.feed(html)
        assert parser.found == [], url
        if 'method="post"' in html:  # every form carries its CSRF token, but the one that posts to MTurk
            to_mturk = html.count('method="post" action="https://')
            assert html.count('method="post"') - to_mturk == html.count('name="csrf_token"'), url
    assert client.get("/work").status_code == 302  # it was visited signed in, then logged out


def test_other_responses_are_not_sniffed_or_framed_either_and_get_no_page_policy(client):
    for url in ("/healthz", "/openapi.json", "/api/v1/nope", "/static/base.css", "/api/v1/workers"):
        resp = client.get(url) if url != "/api/v1/workers" else client.post(url, json={})
        assert resp.mimetype != "text/html", url
        assert resp.headers["X-Content-Type-Options"] == "nosniff", url
        assert directives(resp.headers["Content-Security-Policy"]) == {"default-src": "'none'",
                                                                       "frame-ancestors": "'none'"}, url
        assert "Referrer-Policy" not in resp.headers, url


def test_redoc_is_the_published_bundle_with_its_licences():
    folder = Path(pages.__file__).parent / "static" / Path(pages.REDOC).parent
    bundle = (folder / Path(pages.REDOC).name).read_text()
    # The one change to the published file (see shell/pages.py): the logo no longer comes from a CDN.
    assert bundle.count('src:"data:,"') == 1
    published = bundle.replace('src:"data:,"', 'src:"https://cdn.redoc.ly/redoc/logo-mini.svg"')
    assert hashlib.sha256(published.encode()).hexdigest() == \
        "dcaf76612bc4a3fbcc923a8966dee2f6146a5f32e5ce1b6f02dd60cbbf89500b"  # redoc@2.5.4 bundles/
    assert "MIT License" in (folder / "LICENSE").read_text()
    assert 'Version: "2.5.4"' in (folder / "redoc.standalone.js.LICENSE.txt").read_text()


def test_the_pages_work_offline_in_a_browser_under_their_policy(live_server, page):
    page, problems = page
    page.goto(live_server + "/")
    assert page.locator("body").evaluate("b => getComputedStyle(b).maxWidth") == "832px"  # base.css: 52rem
    page.get_by_role("link", name="API reference").click()
    # ReDoc renders the spec from this server alone: the title, the operations, and search (a blob: worker).
    page.get_by_role("heading", name="crowdmarket (v1)").wait_for()
    assert page.get_by_role("heading", name="Create a project").count() == 1
    page.get_by_placeholder("Search...").fill("aggregation")
    page.locator("[data-role='search:results'] li").first.wait_for()
    assert problems == []
    page.goto(live_server + "/no-such-page")  # an error page, styled like the others
    assert page.get_by_role("heading").inner_text() == "404 · Not Found"
    assert page.locator("body").evaluate("b => getComputedStyle(b).maxWidth") == "832px"
    assert problems == ["console error: Failed to load resource: the server responded with a status of 404 (NOT FOUND)"]


def test_money_and_time_filters_never_use_floats():
    import datetime as dt

    from base.money import Money
    from shell.pages import money, when

    assert money(123) == "$1.23" and money(-5) == "−$0.05" and money(123456789) == "$1,234,567.89"
    assert money({"cents": 250, "currency": "GBP"}) == "£2.50" and money(Money(7, "CHF")) == "0.07 CHF"
    assert money(None) == "–"
    assert when(dt.datetime(2026, 12, 1, 17, 5, tzinfo=dt.timezone(dt.timedelta(hours=1)))) == "2026-12-01 16:05 UTC"


@pytest.mark.parametrize("part", ["docs", 0, 1, 2], ids=["docs", "workers", "ops", "requesters"])
def test_every_page_passes_the_accessibility_audit_in_a_browser(html_urls, page, live_server, part):
    """axe-core on every HTML route of the app, their error pages too, signed in as whoever may see them: no
    serious or critical violation (tests/browser.py). In parts, so that test workers share the walk: one per
    role's stretch of it (each after the first starts at its sign-in), and the API reference alone (ReDoc's page
    is the largest the audit reads)."""
    from tests.browser import describe, log_in, violations

    page, problems = page
    walk = [u for urls in html_urls.values() for u in urls]
    starts = [0, *(i for i, u in enumerate(walk) if u.startswith("/log-in-as "))]
    assert len(starts) == 3, "a role's stretch was added to the walk: add a part"
    if part == "docs":
        walk = ["/docs"]
    else:
        walk = [u for u in walk[starts[part]:starts[part + 1] if part + 1 < len(starts) else None] if u != "/docs"]
    if part == 0:
        log_in(page, live_server, "pages-worker", PASSWORD)
    found: dict[str, str] = {}
    for url in walk:
        if url == "/logout-first":
            page.goto(live_server + "/login")  # any page with the header's log-out button
            if page.get_by_role("button", name="Log out").count():
                page.get_by_role("button", name="Log out").click()
                page.wait_for_url("**/login")
            continue
        if url.startswith("/log-in-as "):
            log_in(page, live_server, url.split(" ", 1)[1], PASSWORD)
            continue
        page.goto(live_server + url)
        if page.url.startswith(live_server + "/login?next="):
            found[url] = "sent to log in: the sweep was not signed in as the page's role"
        elif bad := violations(page):
            found[url] = describe(bad)
    assert not found, "\n".join(f"{url}:\n{text}" for url, text in found.items())
    assert not [p for p in problems if "request to another host" in p or "page error" in p]


JUNK = ["", " ", "-1", "0", "1e309", "NaN", "9" * 40, "x" * 5000, "2026-13-45T99:99", "\x00", "☃", "[]", "{}",
        "../../etc/passwd", "<script>alert(1)</script>"]
FIELDS = ["note", "reason", "scope", "expires_at", "reference", "currency", "period_end", "minimum_cents",
          "idempotency_key", "confirm", "state", "project_id", "worker_id", "before", "after", "limit", "q0", "q1",
          "answer", "answers", "next", "line_id"]


def _posts_for(url: str) -> list[str]:
    """The form-post routes of a page, by its URL (ids taken from it)."""
    if m := re.fullmatch(r"/ops/flags/(\d+)", url):
        return [f"/ops/flags/{m[1]}/{a}" for a in ("block", "unblock", "dismiss")]
    if m := re.fullmatch(r"/ops/payouts/(\d+)", url):
        return [f"/ops/payouts/{m[1]}/{a}" for a in ("approve", "paid", "lines/1/paid", "lines/1/failed")]
    if url == "/ops/payouts":
        return [url]
    if m := re.fullmatch(r"/requester/projects/(\d+)", url):
        return [f"/requester/projects/{m[1]}/batches/{b}/approve" for b in (1, 999999)]
    if re.fullmatch(r"/work/qualifications/(attempts/)?\d+", url):
        return [url]
    return []


def test_no_page_or_form_answers_junk_with_a_500(html_urls, client):
    """Every page with junk in its query string, and every form post with junk in every field (a valid CSRF token,
    signed in as the form's role): a 4xx or a page, never a server error."""
    for url, _, csrf_token in visits(client, html_urls):
        for junk in JUNK:
            sep = "&" if "?" in url else "?"
            resp = client.get(url + sep + "&".join(f"{f}={quote(junk)}" for f in FIELDS))
            assert resp.status_code < 500, (url, junk)
        for target in _posts_for(url.split("?")[0]):
            for junk in JUNK:
                resp = client.post(target, data={"csrf_token": csrf_token, **dict.fromkeys(FIELDS, junk)})
                assert resp.status_code < 500, (target, junk, resp.get_data(as_text=True)[:300])
