"""The HTML pages: security headers on every one, no inline script or style, and the API reference offline."""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from base.identity import Role
from shell import pages
from tests.factories import account, auth, project

# Routes outside /api/ that are not HTML pages, and pages that only take a form post; every other one must be
# listed in `html_urls`.
NOT_HTML = {"/openapi.json", "/healthz", "/static/<path:filename>", "/logout", "/work/tasks/next",
            "/work/tasks/<int:assignment_id>/submit", "/work/tasks/<int:assignment_id>/return",
            "/work/tasks/<int:assignment_id>/disputes"}
# The work page shows items' images from anywhere on the web by URL (console/work.py); no other page may.
IMAGES_BY_URL = {"/work/tasks": "'self' data: https:"}
FRAMED_BY = "'self' https://www.mturk.com https://workersandbox.mturk.com"


@pytest.fixture
def html_urls(client, session, clock) -> dict[str, list[str]]:
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
    # /work signed in, then the form pages (they send a signed-in worker on to /work: logged out first).
    return {"/": ["/", "/no-such-page"], "/docs": ["/docs"],
            "/reports/quality/<token>": [report, report[:-3] + "abc"], "/work/tasks": ["/work/tasks"],
            "/work": ["/work", "/logout-first"],
            "/signup": ["/signup"], "/login": ["/login"]}


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


def test_every_html_route_sends_the_security_headers_and_no_inline_code(app, client, html_urls):
    routes = {rule.rule for rule in app.url_map.iter_rules() if not rule.rule.startswith("/api/")}
    assert routes == set(html_urls) | NOT_HTML  # a new page: add it to html_urls
    csrf_token = ""
    for url in (u for urls in html_urls.values() for u in urls):
        if url == "/logout-first":
            client.post("/logout", data={"csrf_token": csrf_token})
            continue
        resp = client.get(url)
        assert resp.mimetype == "text/html" and resp.status_code in (200, 404), url
        policy = directives(resp.headers["Content-Security-Policy"])
        assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'", url
        # Framed only by this site and MTurk's worker sites (the work page is an ExternalQuestion target).
        assert policy["frame-ancestors"] == FRAMED_BY and policy["base-uri"] == "'none'", url
        assert policy["form-action"] == "'self'", url
        assert "unsafe" not in resp.headers["Content-Security-Policy"], url
        # Nothing from other hosts.
        images = IMAGES_BY_URL.get(url)
        assert policy["img-src"] == (images or "'self' data:"), url
        assert all("http" not in value for name, value in policy.items()
                   if name != "frame-ancestors" and (name != "img-src" or not images)), url
        assert resp.headers["X-Content-Type-Options"] == "nosniff", url
        assert resp.headers["Referrer-Policy"] == "same-origin", url
        html = resp.get_data(as_text=True)
        parser = InlineCode()
        parser.feed(html)
        assert parser.found == [], url
        if 'method="post"' in html:  # every form carries its CSRF token
            assert html.count('method="post"') == html.count('name="csrf_token"'), url
        if match := re.search(r'name="csrf_token" value="([^"]+)"', html):
            csrf_token = match.group(1)
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
