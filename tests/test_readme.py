"""The README's API walk-through works as written against a real `crowdmarket run` server."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- walkthrough:start -->\n```sh\n(.*?)```\n<!-- walkthrough:end -->", text, re.S)
    assert block, "README walk-through markers missing"
    return block.group(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _server(env: dict[str, str]) -> Iterator[int]:
    """`crowdmarket run` on a free port, on the database `env` names."""
    port = _free_port()
    server = subprocess.Popen([BIN / "crowdmarket", "run", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


def _check(done: subprocess.CompletedProcess) -> None:
    """What every run of the walk-through shows, the first or a later one."""
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout.replace(" ", "")
    assert '"created":7' in out and '"gold":3' in out and '"skipped":7' in out
    assert "unknownlabelkey'maybe'" in out
    # Three gold items fill the short last HIT and the one gold HIT (of 2 items) the batch needs at 8%: the demo
    # can serve gold, and no task is short.
    assert '"hits_available":1,"hits_needed":1' in out and '"items_waiting":0' in out and '"warning":null' in out
    assert '"short_hit":false' in out
    assert '"status":"paused"' in out and '"guideline_version":2' in out
    assert '"reason":"all_assigned"' in out  # ada took every task the project had for her
    export = [row for row in done.stdout.split("answer_id,assignment_id,worker_id", 1)[1].strip().splitlines()[1:]
              if row[:1].isdigit()]
    # The request after the streamed export (the workers' quality page) is served: the export let go of SQLite's
    # write lock. It lists the worker, who has a record from their first task on.
    after = out.split("answer_id,assignment_id,worker_id", 1)[1]
    assert '"next_after":null}' in after and '"judged_answers":' in after and '"leases":' in after
    real = [row for row in export if ",false," in row]
    assert len(real) == 5 and all(",pos," in row and row.endswith(",2") for row in export)
    # The aggregation ran inline and its export lists every item to label with its label.
    assert '"method":"ds"' in out and '"status":"succeeded"' in out
    labels = done.stdout.split("external_id,label,confidence,answers,method\n", 1)[1].splitlines()[:5]
    assert [row.split(",")[:2] for row in labels] == [[f"r{i}", "pos"] for i in range(1, 6)]
    assert all(row.endswith(",ds") for row in labels)
    assert '"krippendorff_alpha"' in out and "/reports/quality/" in out


def test_readme_walkthrough_runs_and_runs_again(tmp_path):
    # The walk-through is written for `make run`'s embedded database; it runs on a scratch one here.
    env = {**os.environ, "CROWDMARKET_DATABASE_URL": f"sqlite:///{tmp_path / 'readme.db'}"}
    env.pop("CROWDMARKET_REDIS_URL", None)
    subprocess.run([BIN / "crowdmarket", "db", "upgrade"], env=env, check=True, capture_output=True)
    # Run it as written, from a directory whose .venv is this one; only the port differs.
    (tmp_path / ".venv").symlink_to(BIN.parent)
    with _server(env) as port:
        script = _walkthrough().replace("http://127.0.0.1:5000", f"http://127.0.0.1:{port}")
        runs = [subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=120) for _ in range(2)]
    for done in runs:
        _check(done)
    # Pasted again into the same database: a new project, the same requester and worker.
    first, second = ([line for line in done.stdout.splitlines() if line.startswith("project ")] for done in runs)
    assert first != second
    assert "exists already" in runs[1].stderr and "exists already" not in runs[0].stderr
