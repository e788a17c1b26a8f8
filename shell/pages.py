"""The HTML shell: the index, the API reference (ReDoc, served from our own static files so it works offline),
and the security headers: the pages' policy on HTML, a locked-down one on everything else (JSON, static files)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, Flask, Response, render_template, url_for

from base.money import Money
from edge.csp import POLICY, allow_framing_by, content_security_policy  # noqa: F401 - the pages' names
from platforms.registry import FRAME_ORIGINS

allow_framing_by(FRAME_ORIGINS)  # before any page's policy is built

# A pinned copy of ReDoc's standalone bundle (the npm package redoc@2.5.4) with its licences beside it; the
# version is in the path, so browsers never keep an old copy after an upgrade. One change, checked by
# tests/test_pages.py: the menu footer's logo came from the vendor's CDN on every view and is `data:,` now (it
# fails to load and ReDoc hides it).
REDOC = "redoc-2.5.4/redoc.standalone.js"

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # Nothing of a URL leaves the site (report links carry their signed token in it); our own form posts keep
    # their Referer, which Flask-WTF's CSRF check requires over HTTPS (no-referrer would refuse every one).
    "Referrer-Policy": "same-origin",
}
# Everything that is not a page (the JSON API, static files): never sniffed as HTML, never run or framed as one.
OTHER_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; "
                                                                                 "frame-ancestors 'none'"}

blp = Blueprint("pages", __name__)


CSP = content_security_policy()
# ReDoc inserts two kinds of <style> element, allowed by their hashes: empty ones whose rules it adds through
# the CSSOM (which CSP does not restrict), and perfect-scrollbar's stylesheet. Its search runs in a worker built
# from a blob: URL.
DOCS_CSP = content_security_policy(
    style_src="'self' 'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=' "
              "'sha256-QMIg+bpjm3JdElJ388KYke01izlUW0UoNOeKjpMxdgc='",
    worker_src="blob:")


@blp.get("/")
def index() -> str:
    """The front page: links to the API reference and health."""
    return render_template("index.html")


@blp.get("/docs")
def docs() -> Response:
    """The API reference: ReDoc rendering /openapi.json."""
    html = render_template("docs.html", redoc=REDOC, spec_url=url_for("api-docs.openapi_json"))
    return Response(html, mimetype="text/html", headers={"Content-Security-Policy": DOCS_CSP})


def _security_headers(response: Response) -> Response:
    if response.mimetype != "text/html":
        for name, value in OTHER_HEADERS.items():
            response.headers.setdefault(name, value)
        return response
    response.headers.setdefault("Content-Security-Policy", CSP)
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


SYMBOLS = {"USD": "$", "GBP": "£", "EUR": "€"}


def money(value: int | dict[str, Any] | Money | None, currency: str = "USD") -> str:
    """`{{ cents|money }}`, `{{ {"cents", "currency"}|money }}` or a Money: "$1.23", "1.23 CHF"; never a float."""
    if value is None:
        return "–"
    if isinstance(value, Money):
        value, currency = value.cents, value.currency
    elif isinstance(value, dict):
        value, currency = value["cents"], value["currency"]
    sign = "−" if value < 0 else ""
    amount = f"{abs(value) // 100:,}.{abs(value) % 100:02d}"
    symbol = SYMBOLS.get(currency)
    return f"{sign}{symbol}{amount}" if symbol else f"{sign}{amount} {currency}"


def when(value: dt.datetime | None) -> str:
    """`{{ moment|when }}`: "2026-12-01 16:55 UTC" (pages state times in UTC, as the API does)."""
    if value is None:
        return "–"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def install(app: Flask) -> None:
    """Register the pages, the filters templates share, and the headers every response gets (a view may set its
    own)."""
    app.register_blueprint(blp)
    app.jinja_env.filters.update(money=money, when=when)
    app.after_request(_security_headers)
