"""The app shell: health, OpenAPI, problem+json errors, request size limits."""

from __future__ import annotations

from base.db import Database
from base.identity import Role
from tests.conftest import make_app
from tests.factories import account, auth, project_payload


def test_healthz_reports_database_and_redis(client, redis_url):
    resp = client.get("/healthz")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["database"] == "ok"
    assert body["status"] == "ok"
    assert body["redis"] == ("ok" if redis_url else "not configured")


def test_healthz_is_503_when_database_is_down(tmp_path, clock):
    broken = Database.from_url(f"sqlite:///{tmp_path}/missing/dir/db.sqlite")
    app = make_app({"DATABASE": broken, "CLOCK": clock, "REDIS_URL": None})
    resp = app.test_client().get("/healthz")
    assert resp.status_code == 503
    assert resp.get_json()["status"] == "down"
    assert resp.get_json()["database"].startswith("error")


def test_healthz_is_degraded_when_redis_is_unreachable(database, clock):
    app = make_app({"DATABASE": database, "CLOCK": clock, "REDIS_URL": "redis://127.0.0.1:1/0"})
    resp = app.test_client().get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json()["status"] == "degraded"
    assert resp.get_json()["redis"].startswith("error")


def test_openapi_is_generated_from_the_schemas(client):
    spec = client.get("/openapi.json").get_json()
    assert spec["info"]["title"] == "crowdmarket"
    assert "/api/v1/projects/{project_id}/batches" in spec["paths"]
    create = spec["paths"]["/api/v1/projects"]["post"]
    assert create["summary"].startswith("Create a project")
    schema = spec["components"]["schemas"]["ProjectCreate"]
    assert "reward_cents" in schema["required"] and "label_schema" in schema["required"]
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    (param,) = spec["paths"]["/api/v1/projects/{project_id}"]["parameters"]
    assert param["schema"] == {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
    assert client.get("/docs").status_code == 200


def test_unknown_api_route_is_problem_json(client):
    resp = client.get("/api/v1/nope")
    assert resp.status_code == 404
    assert resp.mimetype == "application/problem+json"
    assert resp.get_json()["status"] == 404


def test_wrong_method_is_problem_json(client):
    resp = client.delete("/api/v1/projects")
    assert resp.status_code == 405
    assert resp.mimetype == "application/problem+json"


def test_html_pages_get_html_errors(client):
    resp = client.get("/no-such-page")
    assert resp.status_code == 404
    assert resp.mimetype == "text/html"


def test_oversized_json_body_is_413_problem(database, clock, session):
    app = make_app({"DATABASE": database, "CLOCK": clock, "REDIS_URL": None, "MAX_REQUEST_BYTES": 2000})
    _, token = account(session, Role.REQUESTER, now=clock())
    body = project_payload(description="x" * 5000)
    resp = app.test_client().post("/api/v1/projects", json=body, headers=auth(token))
    assert resp.status_code == 413
    assert resp.mimetype == "application/problem+json"
    assert "2000" in resp.get_json()["detail"]


def test_unexpected_errors_are_500_problem_json_without_internals(database):
    app = make_app({"DATABASE": database})

    @app.get("/api/v1/boom")
    def boom():
        raise RuntimeError("secret internals")

    resp = app.test_client().get("/api/v1/boom")
    assert resp.status_code == 500
    assert resp.mimetype == "application/problem+json"
    assert "secret" not in resp.get_data(as_text=True)


def test_problem_bodies_end_with_a_newline_like_json_responses(database, session, clock):
    app = make_app({"DATABASE": database, "CLOCK": clock})  # it adds a route: an app of its own

    @app.get("/api/v1/boom")
    def boom():
        raise RuntimeError("boom")

    client = app.test_client()

    _, token = account(session, Role.REQUESTER, now=clock())
    assert client.get("/healthz").get_data().endswith(b"}\n")  # Flask's JSON responses
    responses = {
        "route": client.get("/api/v1/nope"),
        "method": client.delete("/api/v1/projects"),
        "domain error": client.get("/api/v1/me"),  # no token: 401
        "webargs": client.post("/api/v1/projects", json={"title": ""}, headers=auth(token)),
        "not json": client.post("/api/v1/projects", data="x", content_type="text/plain", headers=auth(token)),
        "unexpected": client.get("/api/v1/boom"),
    }
    for source, resp in responses.items():
        assert resp.mimetype == "application/problem+json", source
        assert resp.get_data().endswith(b"}\n") and resp.get_json()["status"] == resp.status_code, source


def test_index_page_links_the_docs(client):
    resp = client.get("/")
    assert resp.status_code == 200
    assert b"/docs" in resp.data


def test_session_cookies_are_signed_and_read_back(database):
    """The cookie session (for the coming UIs' CSRF tokens) with its serializer built once: what one response
    sets, the next request reads; a tampered cookie reads as an empty session."""
    from flask import session

    app = make_app({"DATABASE": database})

    @app.get("/ui/remember")  # a GET: a post outside the API needs a CSRF token (tests/workers/test_views.py)
    def remember():
        session["who"] = "worker-7"
        return {}

    @app.get("/ui/recall")
    def recall():
        return {"who": session.get("who")}

    http = app.test_client()
    http.get("/ui/remember")
    assert http.get("/ui/recall").get_json() == {"who": "worker-7"}
    assert http.get("/ui/recall").get_json() == {"who": "worker-7"}  # the cached serializer verifies it again
    cookie = http.get_cookie("crowdmarket_session")
    http.set_cookie("crowdmarket_session", cookie.value[:-2] + ("AA" if not cookie.value.endswith("AA") else "BB"))
    assert http.get("/ui/recall").get_json() == {"who": None}
