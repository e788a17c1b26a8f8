"""The secret key: generated on first start into the instance folder (0600, one key however many processes start at
once), never a published one outside tests, and what rotating it does to a worker holding a task."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from base.identity import Role
from shell.app import create_app
from shell.config import PUBLISHED_SECRET_KEYS, SECRET_KEY_FILE, ConfigError, instance_secret_key
from tests.conftest import make_app
from tests.factories import account, auth, items, project

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def plain_app(database, monkeypatch):
    """Build an app as `make run` or gunicorn does: no key configured, not TESTING, `instance` its folder."""
    monkeypatch.delenv("CROWDMARKET_SECRET_KEY", raising=False)

    def build(instance: Path, **overrides):
        monkeypatch.setenv("CROWDMARKET_INSTANCE_PATH", str(instance))
        return create_app({"DATABASE": database, "REDIS_URL": None, **overrides})

    return build


def test_the_first_start_generates_a_private_key_that_later_starts_reuse(plain_app, tmp_path):
    first = plain_app(tmp_path / "instance")
    key_file = tmp_path / "instance" / SECRET_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = first.config["SECRET_KEY"]
    assert key == key_file.read_text().strip() and len(key) >= 48 and key not in PUBLISHED_SECRET_KEYS
    assert plain_app(tmp_path / "instance").config["SECRET_KEY"] == key
    assert plain_app(tmp_path / "elsewhere").config["SECRET_KEY"] != key


def test_processes_starting_at_once_agree_on_one_key(tmp_path):
    folder, starts = tmp_path / "instance", 16
    barrier, keys = threading.Barrier(starts), []

    def start() -> None:
        barrier.wait()
        keys.append(instance_secret_key(folder))

    threads = [threading.Thread(target=start) for _ in range(starts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(keys) == starts and len(set(keys)) == 1
    assert sorted(p.name for p in folder.iterdir()) == [SECRET_KEY_FILE]  # no temporary file left behind


def test_wsgi_under_gunicorn_gets_the_generated_key_not_a_published_one(tmp_path):
    """wsgi.py as a gunicorn worker imports it, with no key configured: the instance folder's generated key."""
    env = {**os.environ, "CROWDMARKET_INSTANCE_PATH": str(tmp_path), "CROWDMARKET_DATABASE_URL":
           f"sqlite:///{tmp_path / 'db.sqlite'}", "PYTHONPATH": str(ROOT)}
    env.pop("CROWDMARKET_SECRET_KEY", None)
    env.pop("CROWDMARKET_REDIS_URL", None)
    done = subprocess.run([sys.executable, "-c", "import wsgi; print(wsgi.app.config['SECRET_KEY'])"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == (tmp_path / SECRET_KEY_FILE).read_text().strip()
    assert done.stdout.strip() not in PUBLISHED_SECRET_KEYS


@pytest.mark.parametrize("key", sorted(PUBLISHED_SECRET_KEYS) + ["short"])
def test_a_published_or_short_key_is_refused_outside_tests(plain_app, database, tmp_path, key):
    with pytest.raises(ConfigError, match="CROWDMARKET_SECRET_KEY"):
        plain_app(tmp_path, SECRET_KEY=key)
    with pytest.raises(ConfigError, match="CROWDMARKET_SECRET_KEY"):
        plain_app(tmp_path, SECRET_KEY=key, ENV="production")
    assert make_app({"DATABASE": database, "SECRET_KEY": key}).config["SECRET_KEY"] == key  # tests may


def test_production_and_tests_must_name_their_key(plain_app, tmp_path):
    with pytest.raises(ConfigError, match="production"):
        plain_app(tmp_path, ENV="production")
    with pytest.raises(ConfigError, match="tests pass their own"):
        plain_app(tmp_path, TESTING=True)
    assert not (tmp_path / SECRET_KEY_FILE).exists()


def test_a_key_file_others_can_read_or_without_a_key_is_refused(plain_app, tmp_path):
    (tmp_path / SECRET_KEY_FILE).write_text("k" * 64)
    os.chmod(tmp_path / SECRET_KEY_FILE, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        plain_app(tmp_path)
    (tmp_path / SECRET_KEY_FILE).write_text("")
    os.chmod(tmp_path / SECRET_KEY_FILE, 0o600)
    with pytest.raises(ConfigError, match="delete it"):
        plain_app(tmp_path)


def test_rotating_the_key_a_worker_holding_a_task_refetches_it_and_submits(database, session, clock):
    """What the README says of rotation: public item ids change, so a submit with the ids from before is refused
    (422, nothing stored) and the task fetched again shows the new ids, which submit; the lease is unchanged."""
    owner, _ = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock(), items_per_hit=2)
    items(session, proj, 2, now=clock())
    from market.catalogue.batches import publish_batch

    publish_batch(session, project_id=proj.id, account=owner, now=clock())
    _, token = account(session, Role.WORKER, now=clock())
    before = make_app({"DATABASE": database, "CLOCK": clock, "SECRET_KEY": "before rotation " * 3}).test_client()
    after = make_app({"DATABASE": database, "CLOCK": clock, "SECRET_KEY": "after rotation " * 3}).test_client()
    task = before.post("/api/v1/work/next", headers=auth(token)).get_json()
    stale = {"answers": [{"item_id": i["id"], "answer": "pos"} for i in task["items"]]}
    refused = after.post(f"/api/v1/assignments/{task['assignment_id']}/submit", json=stale, headers=auth(token))
    assert refused.status_code == 422 and "not an item of this assignment" in str(refused.get_json()["errors"])
    again = after.get(f"/api/v1/assignments/{task['assignment_id']}", headers=auth(token)).get_json()
    assert {i["id"] for i in again["items"]}.isdisjoint(i["id"] for i in task["items"])
    assert again["expires_at"] == task["expires_at"]
    fresh = {"answers": [{"item_id": i["id"], "answer": "pos"} for i in again["items"]]}
    done = after.post(f"/api/v1/assignments/{task['assignment_id']}/submit", json=fresh, headers=auth(token))
    assert done.status_code == 200

