"""Bad input to the HTML forms (and the work page's JSON endpoints, which post with the page's CSRF token):
malformed bodies, bodies over MAX_REQUEST_BYTES, posts without a valid CSRF token. Each is answered with the error
page (text/html, the error template, a human title, no stack trace), the form again with its errors, or, from the
work page's endpoints, a problem; never a 5xx; and a refused post writes nothing (every table compared).

The forms are found from the URL map: every POST route outside /api/ must be reached by the walk below, signed
in as its role, on the pages of tests/test_pages.py's `html_urls`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from tests.test_authorization import _snapshot
from tests.test_pages import FIELDS, _posts_for, html_urls, visits  # noqa: F401 - html_urls is a fixture

PROBLEM = "application/problem+json"
FORM = "application/x-www-form-urlencoded"
# The work page's endpoints: JSON in and out, the CSRF token in a header (shell/static/work/task.js).
WORK_JSON = re.compile(r"/work/tasks/(next|\d+/(submit|return|disputes))")
# Posts that take no fields and so are not malformed by any body: logging out, leasing the next task.
NO_FIELDS = {"/logout", "/work/tasks/next"}
# Ids of no row: the walk's pages of missing rows, whose forms answer 404 whatever the body (test_pages.py sends
# them junk); the malformed bodies go to the forms of real rows.
MISSING = re.compile(r".*/(0|999999)(/.*)?")


def _rule(app, path: str) -> str:
    return app.url_map.bind("localhost").match(path, method="POST", return_rule=True)[0].rule


def form_rules(app) -> set[str]:
    """Every POST route outside the JSON API: the forms, and the work page's endpoints."""
    return {r.rule for r in app.url_map.iter_rules() if "POST" in r.methods and not r.rule.startswith("/api/")}


def _held_assignment(client, csrf_token: str) -> int | None:
    resp = client.post("/work/tasks/next", headers={"X-CSRFToken": csrf_token})
    assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
    task = resp.get_json()["task"]
    return task["assignment_id"] if task else None


def form_posts(client, html_urls: dict[str, list[str]]) -> Iterator[tuple[str, str]]:  # noqa: F811
    """Walk the pages signed in as each role; yield (form post URL, the session's CSRF token) for each form post
    the page leads to, while the session is the one the form is for."""
    for url, _, csrf_token in visits(client, html_urls):
        path = url.split("?")[0]
        targets = _posts_for(path)
        if path in ("/signup", "/login"):  # signed out: the walk logged out before them
            targets = [path]
        elif path == "/work/tasks":
            held = _held_assignment(client, csrf_token)
            targets = ["/work/tasks/next", *(f"/work/tasks/{held}/{a}" for a in ("submit", "return", "disputes"))]
        elif path == "/work":
            targets = ["/logout"]
        for target in targets:
            yield target, csrf_token


def _is_error_page(resp) -> bool:
    text = resp.get_data(as_text=True)
    return (resp.mimetype == "text/html" and "Traceback" not in text
            and (f"<h1>{resp.status_code} · " in text  # the error template
                 or 'class="error"' in text or 'role="alert"' in text))  # the form again, with its errors


def _is_problem(resp) -> bool:
    body = resp.get_json(silent=True) if resp.mimetype == PROBLEM else None
    return bool(body) and body["status"] == resp.status_code and bool(body["title"])


def _check(resp, target: str) -> str | None:
    """What is wrong with the answer to a refused or accepted post, or None."""
    if resp.status_code >= 500:
        return f"{resp.status_code}: {resp.get_data(as_text=True)[:300]}"
    if resp.status_code < 400:
        return None
    if WORK_JSON.fullmatch(target):
        return None if _is_problem(resp) else f"not a problem: {resp.mimetype} {resp.get_data(as_text=True)[:200]}"
    return None if _is_error_page(resp) else f"not an error page: {resp.mimetype} {resp.get_data(as_text=True)[:200]}"


def _malformed(target: str, token: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, client.post keyword arguments) for each malformed body, with a valid CSRF token."""
    if WORK_JSON.fullmatch(target):
        h = {"X-CSRFToken": token}
        return [(name, {"headers": h, "data": data, "content_type": "application/json"}) for name, data in [
            ("missing fields", "{}"), ("not JSON", "{"), ("a list", "[]"), ("wrong types", '{"answers": "x", '
             '"next": "maybe", "item_id": [], "note": 5}'), ("unknown fields", '{"zzz": 1, "__proto__": {}}'),
            ("huge value", '{"note": "' + "x" * 500_000 + '", "answers": [' + "1," * 100_000 + "1]}"),
            ("bad encoding", b'{"note": "\xff\xfe"}'), ("deep nesting", "[" * 5000 + "]" * 5000)]]
    return [
        ("missing fields", {"data": {"csrf_token": token}}),
        *((f"wrong types {junk!r}", {"data": {"csrf_token": token, **dict.fromkeys(FIELDS, junk)}})
          for junk in ("-1", "☃\x00 1e309")),
        ("unknown fields", {"data": {"csrf_token": token, "zzz_unknown": "1", "__proto__": "x"}}),
        ("huge values", {"data": {"csrf_token": token, **dict.fromkeys(FIELDS, "9" * 30_000)}}),
        ("bad encoding", {"data": f"csrf_token={token}&note=%ff%fe&reason=\xff".encode("latin-1"),
                          "content_type": FORM}),
        ("repeated fields", {"data": f"csrf_token={token}&note=a&note=b&confirm=1&confirm=0", "content_type": FORM}),
        ("JSON instead of a form", {"data": '{"note": 1}', "content_type": "application/json"}),
        ("broken multipart", {"data": b"--zz\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nx",
                              "content_type": "multipart/form-data; boundary=zz"}),
    ]


def test_the_walk_reaches_every_form_route(app, client, html_urls):  # noqa: F811
    reached = {_rule(app, target) for target, _ in form_posts(client, html_urls)}
    assert reached == form_rules(app)  # a new form: make the walk (tests/test_pages.py `_posts_for`) reach it


def test_malformed_form_bodies_are_refused_plainly_and_write_nothing(client, connection, html_urls):  # noqa: F811
    found: list[str] = []
    statuses: dict[tuple[str, int], int] = {}
    for target, token in form_posts(client, html_urls):
        if target in NO_FIELDS or MISSING.fullmatch(target):
            continue
        before = _snapshot(connection)
        for name, kwargs in _malformed(target, token):
            resp = client.post(target, **kwargs)
            after = _snapshot(connection)
            statuses[target, resp.status_code] = statuses.get((target, resp.status_code), 0) + 1
            if problem := _check(resp, target):
                found.append(f"{target} {name}: {problem}")
            elif resp.status_code >= 400 and after != before:
                found.append(f"{target} {name}: {resp.status_code} but wrote")
            before = after
    assert not found, "\n".join(found)
    refused = sum(n for (_, status), n in statuses.items() if status >= 400)
    # The bodies were malformed: only the forms without fields (start a test, approve a payout) take them.
    assert refused > 0.8 * sum(statuses.values())


def _refused_everywhere(client, connection, html_urls, posts, status: int,  # noqa: F811
                        titles: tuple[str, str]) -> list[str]:
    """Send each form post `posts(target, token)` gives; each must be refused with `status` and a title (the
    page's, the work endpoints' problem's), and write nothing."""
    found, sent = [], 0
    for target, token in form_posts(client, html_urls):
        before = _snapshot(connection)
        title = titles[1] if WORK_JSON.fullmatch(target) else titles[0]
        for name, kwargs in posts(target, token):
            resp = client.post(target, **kwargs)
            sent += 1
            if problem := _check(resp, target) or (resp.status_code != status and f"{resp.status_code}") or (
                    title not in resp.get_data(as_text=True) and f"no {title!r} in the answer"):
                found.append(f"{target} {name}: {problem}")
        if _snapshot(connection) != before:
            found.append(f"{target}: wrote")
    assert sent > 50
    return found


def _too_large(target: str, token: str) -> list[tuple[str, dict[str, Any]]]:
    limit = 1024 * 1024  # MAX_REQUEST_BYTES's default, which the tests' app keeps
    if WORK_JSON.fullmatch(target):
        return [("large JSON", {"headers": {"X-CSRFToken": token}, "content_type": "application/json",
                                "data": '{"note": "' + "x" * limit + '"}'})]
    return [("large form", {"data": {"csrf_token": token, "note": "x" * limit}}),
            ("large multipart", {"data": {"csrf_token": token, "note": "x" * limit}, "content_type":
                                 "multipart/form-data"})]


def test_bodies_over_the_limit_get_a_413_page_and_write_nothing(app, client, connection, html_urls):  # noqa: F811
    assert app.config["MAX_CONTENT_LENGTH"] == 1024 * 1024
    found = _refused_everywhere(client, connection, html_urls, _too_large, 413,
                                ("413 · Request Entity Too Large", '"title":"Request entity too large"'))
    assert not found, "\n".join(found)


def _without_csrf(target: str, token: str) -> list[tuple[str, dict[str, Any]]]:
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    if WORK_JSON.fullmatch(target):
        return [(name, {"headers": headers, "json": {"next": True, "answers": [], "item_id": 1, "note": "n"}})
                for name, headers in [("no token", {}), ("forged token", {"X-CSRFToken": forged}),
                                      ("empty token", {"X-CSRFToken": ""})]]
    fields = {"note": "n", "reason": "r", "reference": "ref", "confirm": "1", "currency": "USD",
              "username": "someone-new", "password": "correct horse battery"}
    return [("no token", {"data": fields}), ("forged token", {"data": {**fields, "csrf_token": forged}}),
            ("empty token", {"data": {**fields, "csrf_token": ""}}),
            ("token in a header only", {"data": fields, "headers": {"X-CSRFToken": "x"}})]


def test_posts_without_a_valid_csrf_token_get_a_400_and_write_nothing(client, connection, html_urls):  # noqa: F811
    found = _refused_everywhere(client, connection, html_urls, _without_csrf, 400,
                                ("400 · Form refused", '"title":"CSRF check failed"'))
    assert not found, "\n".join(found)
