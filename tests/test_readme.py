"""The README's API walk-through works as written against a real `crowdmarket run` server."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
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


def test_readme_walkthrough(tmp_path):
    port = _free_port()
    # The walk-through is written for `make run`'s embedded database; it runs on a scratch one here.
    env = {**os.environ, "CROWDMARKET_DATABASE_URL": f"sqlite:///{tmp_path / 'readme.db'}"}
    env.pop("CROWDMARKET_REDIS_URL", None)
    subprocess.run([BIN / "crowdmarket", "db", "upgrade"], env=env, check=True, capture_output=True)
    server = subprocess.Popen([BIN / "crowdmarket", "run", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        # Run it as written, from a directory whose .venv is this one; only the port differs.
        (tmp_path / ".venv").symlink_to(BIN.parent)
        script = _walkthrough().replace("http://127.0.0.1:5000", f"http://127.0.0.1:{port}")
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout.replace(" ", "")
    assert '"created":5' in out and '"gold":1' in out and '"skipped":5' in out
    assert "unknownlabelkey'maybe'" in out
    assert '"status":"paused"' in out and '"guideline_version":2' in out
    export = [row for row in done.stdout.split("answer_id,assignment_id,worker_id", 1)[1].strip().splitlines()[1:]
              if row[:1].isdigit()]
    # The request after the streamed export is served (the export let go of SQLite's write lock), and it lists
    # the worker, who has a record from their first task on (no gold met yet).
    assert '"judged_answers":' in out and '"gold_seen":0' in out and '"tasks":1' in out
    assert len(export) == 2 and all(",pos," in row and row.endswith(",2") for row in export)
    # The aggregation ran inline and its export lists the answered item with its label.
    assert '"method":"ds"' in out and '"status":"succeeded"' in out
    labels = done.stdout.split("external_id,label,confidence,answers,method\n", 1)[1].splitlines()
    assert labels[0].split(",")[1] == "pos" and labels[0].endswith(",ds")
    assert '"krippendorff_alpha"' in out and "/reports/quality/" in out
