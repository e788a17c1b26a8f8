"""What every browser test does on each page it reaches: an accessibility audit (axe-core through
axe-playwright-python: no serious or critical violation) and a screenshot kept as a test artifact
(tests/artifacts/, ignored by git)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ARTIFACTS = Path(os.environ.get("CROWDMARKET_TEST_ARTIFACTS", Path(__file__).parent / "artifacts"))
SEVERE = ("serious", "critical")


def _axe() -> Any:
    from axe_playwright_python.sync_playwright import Axe

    return Axe()


def violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    results = _axe().run(page)
    return [v for v in results.response["violations"] if v.get("impact") in SEVERE]


def describe(found: list[dict[str, Any]]) -> str:
    return "\n".join(f"{v['impact']} {v['id']}: {v['help']} at "
                     f"{', '.join(' '.join(n['target']) for n in v['nodes'][:3])}" for v in found)


def audit(page: Any, name: str) -> None:
    """Screenshot the page as `name`, then fail on any serious or critical accessibility violation."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"), full_page=True)
    found = violations(page)
    assert not found, f"{name}: accessibility violations\n{describe(found)}"

PASSWORD = "correct horse battery"


def with_password(app: Any, session: Any, account: Any, password: str = PASSWORD) -> str:
    """Give a factory account (any role) a password, so a browser can log in as it; returns its login name."""
    from workers.service import set_password

    set_password(session, account=account, password=password, password_hash=app.config["PASSWORD_HASH"])
    session.commit()
    return account.username or account.email


def log_in(page: Any, live_server: str, login: str, password: str = PASSWORD) -> None:
    """Log in through the log-in page and wait for the role's landing page."""
    page.goto(live_server + "/login")
    page.get_by_label("Username").fill(login)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/login" not in url)


def watched(page: Any, live_server: str) -> list[str]:
    """What goes wrong on `page`, recorded as it happens: console errors and warnings (CSP violations among
    them), uncaught script errors, and requests to other hosts (aborted: pages must work offline)."""
    problems: list[str] = []
    local = urlsplit(live_server).netloc

    def route(r) -> None:
        url = urlsplit(r.request.url)
        if url.scheme in ("data", "blob") or url.netloc == local:
            r.continue_()
        else:
            problems.append(f"request to another host: {r.request.url}")
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    return problems
