"""The workers' pages: sign up, log in, log out over the API's services, CSRF on every form, the page session as a
revocable token, and the same login limits as the API."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import func, select

from base.identity import Role
from edge.limits import SIGNUP_PER_ADDRESS
from edge.ratelimit import LOGIN_PER_PAIR
from tests.browser import audit
from tests.factories import account, auth
from workers.models import Account, ApiToken
from workers.service import hash_token

PASSWORD = "correct horse battery"


def csrf_token(client, url: str = "/login") -> str:
    html = client.get(url).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def name() -> str:
    return f"w{uuid.uuid4().hex[:10]}"


def sign_up(client, username: str, password: str = PASSWORD, **extra):
    return client.post("/signup", data={"csrf_token": csrf_token(client, "/signup"), "username": username,
                                        "password": password, **extra})


def log_in(client, username: str, password: str = PASSWORD, **kwargs):
    return client.post("/login", data={"csrf_token": csrf_token(client), "username": username,
                                       "password": password}, **kwargs)


def accounts(session) -> int:
    return session.scalar(select(func.count()).select_from(Account))


def test_sign_up_signs_in_and_the_work_page_names_the_worker(client, session):
    username = name()
    resp = sign_up(client, username, display_name="Ada")
    assert resp.status_code == 302 and resp.headers["Location"] == "/work"
    page = client.get("/work")
    assert page.status_code == 200 and username in page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"
    worker = session.scalar(select(Account).where(Account.username == username))
    assert worker.role == Role.WORKER and worker.display_name == "Ada"
    [token] = session.scalars(select(ApiToken).where(ApiToken.account_id == worker.id))
    assert token.login and token.name == "web" and token.expires_at is not None  # hashed, expiring, like the API's


def test_form_errors_are_shown_in_the_form(client, session):
    taken = name()
    assert sign_up(client, taken).status_code == 302
    client.post("/logout", data={"csrf_token": csrf_token(client, "/work")})
    resp = sign_up(client, taken.upper())
    assert resp.status_code == 409 and "exists already" in resp.get_data(as_text=True)
    resp = sign_up(client, "x", password="short")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 422 and 'aria-invalid="true"' in html and "10-1024 characters" in html
    resp = log_in(client, taken, "wrong password!")
    assert resp.status_code == 401 and "Unknown username or wrong password." in resp.get_data(as_text=True)
    assert f'value="{taken}"' in resp.get_data(as_text=True)  # the username is kept, the password is not


@pytest.mark.parametrize("token", [None, "forged"])
def test_a_form_post_without_the_right_csrf_token_is_refused_and_writes_nothing(client, session, token):
    before = accounts(session)
    csrf_token(client)  # the session has a CSRF secret: the forged token is checked against it
    data = {"username": name(), "password": PASSWORD, **({"csrf_token": token} if token else {})}
    for url in ("/signup", "/login"):
        resp = client.post(url, data=data)
        assert resp.status_code == 400 and resp.mimetype == "text/html", url
        html = resp.get_data(as_text=True)
        assert "Form refused" in html and "reload the page" in html and "CSRF token" in html, url
    assert accounts(session) == before
    # Log-out too: a cross-site form cannot sign a worker out, nor revoke their token.
    assert sign_up(client, name()).status_code == 302
    assert client.post("/logout", data={"csrf_token": "forged"}).status_code == 400
    assert client.get("/work").status_code == 200


def test_the_json_api_needs_no_csrf_token(client):
    resp = client.post("/api/v1/workers", json={"username": name(), "password": PASSWORD})
    assert resp.status_code == 201


def test_log_out_revokes_the_token_so_a_copied_cookie_is_refused(client, session):
    username = name()
    sign_up(client, username)
    copied = client.get_cookie("crowdmarket_session").value
    assert client.post("/logout", data={"csrf_token": csrf_token(client, "/work")}).headers["Location"] == "/login"
    assert client.get("/work").headers["Location"] == "/login?next=/work"
    other = client.application.test_client()
    other.set_cookie("crowdmarket_session", copied)
    assert other.get("/work").status_code == 302
    worker = session.scalar(select(Account).where(Account.username == username))
    assert all(t.revoked_at is not None for t in session.scalars(select(ApiToken).where(
        ApiToken.account_id == worker.id)))


def test_log_in_starts_a_new_session_and_follows_next_on_this_site_only(client, session):
    username = name()
    sign_up(client, username)
    client.post("/logout", data={"csrf_token": csrf_token(client, "/work")})
    before = csrf_token(client)
    resp = client.post("/login?next=/work", data={"csrf_token": before, "username": username.upper(),
                                                  "password": PASSWORD})
    assert resp.status_code == 302 and resp.headers["Location"] == "/work"
    assert csrf_token(client, "/work") != before  # the session was replaced, its CSRF secret too
    client.post("/logout", data={"csrf_token": csrf_token(client, "/work")})
    for evil in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        resp = client.post(f"/login?next={evil}", data={"csrf_token": csrf_token(client), "username": username,
                                                        "password": PASSWORD})
        assert resp.headers["Location"] == "/work", evil
        client.post("/logout", data={"csrf_token": csrf_token(client, "/work")})


def test_the_work_page_is_for_workers(client, session, clock):
    assert client.get("/work").headers["Location"] == "/login?next=/work"
    # A page session is a login token: a requester's (API-only today) token in a session cookie is refused.
    _, token = account(session, Role.REQUESTER, now=clock())
    with client.session_transaction() as s:
        s["token"] = token
    resp = client.get("/work")
    assert resp.status_code == 403 and resp.mimetype == "text/html"


def test_the_session_cookie_is_httponly_lax_and_secure_over_https(app, session):
    plain = app.test_client()
    sign_up(plain, name())
    cookie = plain.get_cookie("crowdmarket_session")
    assert cookie.http_only and cookie.same_site == "Lax" and not cookie.secure
    secure = app.test_client()
    html = secure.get("/signup", base_url="https://localhost").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    resp = secure.post("/signup", base_url="https://localhost", headers={"Referer": "https://localhost/signup"},
                       data={"csrf_token": token, "username": name(), "password": PASSWORD})
    assert resp.status_code == 302
    [header] = [h for h in resp.headers.getlist("Set-Cookie") if h.startswith("crowdmarket_session=")]
    assert "Secure" in header and "HttpOnly" in header and "SameSite=Lax" in header


def test_page_logins_count_against_the_apis_limits(app, session):
    client = app.test_client()
    username = name()
    assert client.post("/api/v1/workers", json={"username": username, "password": PASSWORD}).status_code == 201
    for i in range(LOGIN_PER_PAIR[0]):  # failures through the API and the page alike
        if i % 2:
            assert log_in(client, username, "wrong password!").status_code == 401
        else:
            wrong = {"username": username, "password": "wrong password!"}
            assert client.post("/api/v1/auth/token", json=wrong).status_code == 401
    locked = log_in(client, username)  # the right password, too late
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) == LOGIN_PER_PAIR[1]
    assert "try again in 15 minutes" in locked.get_data(as_text=True)
    assert client.post("/api/v1/auth/token", json={"username": username, "password": PASSWORD}).status_code == 429


def test_page_sign_ups_count_against_the_apis_limit(app, session):
    client = app.test_client()
    for _ in range(SIGNUP_PER_ADDRESS[0]):
        assert client.post("/api/v1/workers", json={"username": name(), "password": PASSWORD}).status_code == 201
    before = accounts(session)
    resp = sign_up(client, name())
    assert resp.status_code == 429 and "Too many sign-ups" in resp.get_data(as_text=True)
    assert accounts(session) == before


def test_a_page_token_works_as_bearer_and_is_stored_hashed(client, session):
    """The session holds the raw token of an ordinary login token: the database has only its hash."""
    sign_up(client, name())
    with client.session_transaction() as s:
        raw = s["token"]
    assert session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(raw))) is not None
    assert session.scalar(select(func.count()).select_from(ApiToken).where(ApiToken.token_hash == raw)) == 0
    assert client.get("/api/v1/me", headers=auth(raw)).get_json()["role"] == "worker"


# ---- in a real browser ---------------------------------------------------------------------------------------


def test_a_worker_signs_up_logs_out_and_in_again_in_a_browser(browser, live_server, page):
    page, problems = page
    username = name()
    page.goto(live_server + "/signup")
    audit(page, "signup")
    # Keyboard only: the username field has focus, Tab moves on, Enter submits.
    page.wait_for_function("document.activeElement && document.activeElement.id === 'username'")
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(live_server + "/work")
    assert page.locator("#signed-in-as").inner_text() == f"Signed in as {username}"
    assert page.get_by_role("status").inner_text() == "Welcome! Your account is ready."

    [cookie] = [c for c in page.context.cookies() if c["name"] == "crowdmarket_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]  # plain http here
    assert "crowdmarket_session" not in page.evaluate("document.cookie")  # no script reads it
    copied = dict(cookie)

    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(live_server + "/login")
    assert page.get_by_role("status").inner_text() == "You are logged out."
    audit(page, "login")

    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill("wrong password!")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text() == "Unknown username or wrong password."
    assert page.get_by_label("Username").input_value() == username
    assert page.get_by_label("Password").input_value() == ""

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Password").press("Enter")
    page.wait_for_url(live_server + "/work")
    assert page.locator("#signed-in-as").inner_text() == f"Signed in as {username}"
    # Chromium logs the refused login's 401 as a failed resource; nothing else went wrong (CSP included).
    assert problems == ["console error: Failed to load resource: the server responded with a status of 401 "
                        "(UNAUTHORIZED)"]

    # The cookie copied before log-out: its token was revoked, so it no longer signs anyone in.
    thief = browser.new_context()
    try:
        thief.add_cookies([copied])
        stolen = thief.new_page()
        stolen.goto(live_server + "/work")
        assert stolen.url == live_server + "/login?next=/work"
        assert stolen.get_by_role("heading", level=1).inner_text() == "Log in"
    finally:
        thief.close()


def test_a_page_asking_for_a_worker_sends_the_browser_to_log_in_and_back(live_server, page):
    page, problems = page
    username = name()
    page.goto(live_server + "/signup")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    page.get_by_role("button", name="Log out").click()
    page.goto(live_server + "/work")
    page.wait_for_url(live_server + "/login?next=/work")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(live_server + "/work")
    assert problems == []


# ---- requesters and ops staff ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("role", "home"), [(Role.OPS, "/ops"), (Role.REQUESTER, "/requester")])
def test_staff_log_in_with_their_email_once_a_password_is_set(app, client, session, clock, role, home):
    from workers.service import set_password

    staff, _ = account(session, role, now=clock())
    resp = log_in(client, staff.email.upper(), PASSWORD)
    assert resp.status_code == 401  # no password yet: no way in through the pages
    with pytest.raises(Exception, match="too short"):
        set_password(session, account=staff, password="short", password_hash=app.config["PASSWORD_HASH"])
    set_password(session, account=staff, password=PASSWORD, password_hash=app.config["PASSWORD_HASH"])
    resp = log_in(client, staff.email.upper(), PASSWORD)
    assert resp.status_code == 302 and resp.headers["Location"] == home
    [web] = session.scalars(select(ApiToken).where(ApiToken.account_id == staff.id, ApiToken.login.is_(True)))
    # A new password ends the sessions signed in with the old one.
    set_password(session, account=staff, password=PASSWORD + "!", password_hash=app.config["PASSWORD_HASH"])
    assert session.get(ApiToken, web.id) is None
    assert client.get(home).status_code in (302, 404)  # signed out again (the page itself is the ops/requester UI's)

