"""Shared by the payout, project-health and requester page tests: a page session for a factory account, and the
CSRF token of a page."""

from __future__ import annotations

import re

from tests.browser import PASSWORD, with_password


def csrf(client, url: str) -> str:
    html = client.get(url).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def sign_in(client, app, session, account) -> None:
    """Log `account` in through the log-in page, as a browser does."""
    login = with_password(app, session, account)
    resp = client.post("/login", data={"csrf_token": csrf(client, "/login"), "username": login,
                                       "password": PASSWORD})
    assert resp.status_code == 302, resp.get_data(as_text=True)


def form_value(html: str, name: str) -> str:
    return re.search(rf'name="{name}" value="([^"]*)"', html).group(1)


def browser_log_in(page, live_server: str, login: str, target: str) -> None:
    """Log in through the log-in page straight to `target` (ops land on /ops, the flag queue another page serves:
    going there first would only load a page these tests do not check)."""
    page.goto(f"{live_server}/login?next={target}")
    page.get_by_label("Username").fill(login)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/login" not in url)
