"""The `crowdmarket` command: accounts, tokens, item import."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from base.identity import Role
from market.catalogue.models import Item
from shell.cli import cli
from tests.factories import account, auth, project


@pytest.fixture
def invoke(app):
    runner = app.test_cli_runner()

    def run(*args: str, input: str | None = None):
        return runner.invoke(cli, list(args), obj=lambda: app, input=input)

    return run


def test_users_create_prints_a_working_token_once(invoke, client):
    result = invoke("users", "create", "--role", "requester", "--email", "Carol@Example.com")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token.startswith("cm_") and "\n" not in token
    me = client.get("/api/v1/me", headers=auth(token)).get_json()
    assert (me["role"], me["email"]) == ("requester", "carol@example.com")
    again = invoke("users", "create", "--role", "ops", "--email", "carol@example.com")
    assert again.exit_code == 1 and "exists already" in again.output


def test_tokens_create_and_revoke(invoke, client):
    invoke("users", "create", "--role", "ops", "--email", "dan@example.com")
    token = invoke("tokens", "create", "--email", "dan@example.com", "--name", "laptop").stdout.strip()
    tokens = client.get("/api/v1/tokens", headers=auth(token)).get_json()
    laptop = next(t for t in tokens if t["name"] == "laptop")
    assert invoke("tokens", "revoke", "--email", "dan@example.com", str(laptop["id"])).exit_code == 0
    assert client.get("/api/v1/me", headers=auth(token)).status_code == 401
    assert invoke("tokens", "create", "--email", "nobody@example.com").exit_code == 1


def test_users_set_password_then_log_in_on_the_pages_with_the_email(invoke, client):
    invoke("users", "create", "--role", "ops", "--email", "erin@example.com")
    short = invoke("users", "set-password", "--email", "erin@example.com", "--password-stdin", input="short\n")
    assert short.exit_code == 1 and "at least 10 characters" in short.output
    assert invoke("users", "set-password", "--email", "nobody@example.com", "--password-stdin",
                  input="long enough pass\n").exit_code == 1
    result = invoke("users", "set-password", "--email", "erin@example.com", "--password-stdin",
                    input="long enough pass\n")
    assert result.exit_code == 0 and "log in at /login" in result.output
    html = client.get("/login").get_data(as_text=True)
    csrf = html.split('name="csrf_token" value="')[1].split('"')[0]
    resp = client.post("/login", data={"csrf_token": csrf, "username": "Erin@example.com",
                                       "password": "long enough pass"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/ops"


def test_items_import(invoke, session, clock, tmp_path):
    owner, _ = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock())
    good = tmp_path / "items.jsonl"
    good.write_text("".join(json.dumps({"external_id": f"c{i}", "data": {"i": i}}) + "\n" for i in range(50)))
    result = invoke("items", "import", str(proj.id), str(good), "--quiet")
    assert result.exit_code == 0, result.output
    assert "50 created, 0 skipped" in result.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("external_id,text\nd1,ok\nd2,ok,extra\n")
    result = invoke("items", "import", str(proj.id), str(bad))
    assert result.exit_code == 1 and "line': 3" in result.output
    assert session.scalar(select(func.count()).select_from(Item).where(Item.project_id == proj.id)) == 50
    assert invoke("items", "import", "999999", str(good)).exit_code == 1


def test_ids_beyond_the_id_column_are_usage_errors(invoke, tmp_path):
    """Not a database error: PostgreSQL refused the lookup of an id beyond 32 bits with a traceback."""
    items = tmp_path / "items.jsonl"
    items.write_text('{"external_id": "x", "data": {}}\n')
    invoke("users", "create", "--role", "ops", "--email", "erin@example.com")
    for args in (("items", "import", str(2**31), str(items)), ("tokens", "revoke", "--email", "erin@example.com",
                                                               str(2**40))):
        result = invoke(*args)
        assert result.exit_code == 2 and "not in the range" in result.output, result.output


def test_work_sweep(invoke):
    result = invoke("work", "sweep")
    assert result.exit_code == 0 and "0 lapsed lease(s) tidied." in result.output


def test_jobs_work_runs_a_queued_aggregation_or_says_there_is_no_queue(invoke, app, client, session, clock):
    from aggregation.models import AggregationRun, RunStatus
    from tests.factories import answered_project

    proj, token = answered_project(session, now=clock())
    if not app.config["REDIS_URL"]:
        result = invoke("jobs", "work", "--burst")
        assert result.exit_code == 1 and "no Redis configured" in result.output
        return
    run_id = client.post(f"/api/v1/projects/{proj.id}/aggregations", json={"method": "mv"},
                         headers=auth(token)).get_json()["id"]
    assert session.get(AggregationRun, run_id).status == RunStatus.QUEUED
    result = invoke("jobs", "work", "--burst")
    assert result.exit_code == 0, result.output
    session.expire_all()
    assert session.get(AggregationRun, run_id).status == RunStatus.SUCCEEDED


def test_help_lists_our_commands_only():
    """A plain click group: none of Flask's generic options (--app, --env-file without python-dotenv, --debug) or
    commands (shell, routes), and no app is built to show it."""
    from click.testing import CliRunner

    def no_app():
        raise AssertionError("--help must not build the app")

    result = CliRunner().invoke(cli, ["--help"], obj=no_app)
    assert result.exit_code == 0, result.output
    listed = result.output.split("Commands:", 1)[1].splitlines()
    commands = [line.split()[0] for line in listed if line.startswith("  ") and not line.startswith("   ")]
    assert commands == ["aggregate", "burst", "db", "items", "jobs", "ledger", "payments", "payouts", "platforms",
                        "run", "simulate", "tokens", "users", "work"]
    for generic in ("--app", "--env-file", "--debug", "shell", "routes", "--version"):
        assert generic not in result.output


def test_account_roles_are_the_models():
    from shell.cli import ACCOUNT_ROLES

    assert ACCOUNT_ROLES == (Role.REQUESTER.value, Role.OPS.value)


def test_run_settings_reload_for_development():
    from shell.server import settings

    served = settings(host="127.0.0.1", port=5000, workers=2, threads=4, reload=False)
    assert (served["bind"], served["worker_class"], served["reload"], served["preload_app"]) == (
        "127.0.0.1:5000", "gthread", False, True)
    # --reload: gunicorn restarts the workers on a code change, so each must build the app itself.
    developing = settings(host="0.0.0.0", port=8000, workers=1, threads=2, reload=True)
    assert (developing["reload"], developing["preload_app"]) == (True, False)


def test_run_serves_with_gunicorn(tmp_path):
    """`crowdmarket run` (what `make run` starts) serves the app under gunicorn, not Werkzeug's development
    server and its warning."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CROWDMARKET_DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}",
           "CROWDMARKET_INSTANCE_PATH": str(tmp_path)}
    env.pop("CROWDMARKET_REDIS_URL", None)
    binary = Path(sys.executable).with_name("crowdmarket")
    subprocess.run([binary, "db", "upgrade"], env=env, check=True, capture_output=True)
    log = tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen([binary, "run", "--port", str(port), "--workers", "1"], env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        for _ in range(150):
            try:
                response = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                assert server.poll() is None, log.read_text()
                time.sleep(0.1)
        else:
            raise AssertionError(f"no answer from crowdmarket run:\n{log.read_text()}")
        assert response.status == 200 and response.headers["Server"].startswith("gunicorn"), response.headers
    finally:
        server.terminate()
        server.wait(timeout=30)
    text = log.read_text()
    assert "Booting worker" in text and "development server" not in text and "Werkzeug" not in text
