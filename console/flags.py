"""The ops flag queue (most severe first: market/quality/triage.py says how) and a flag's page: the evidence, and
block / unblock / dismiss, each with a required note.

The forms call exactly the services the JSON API's /api/v1/ops/flags/{id}/block|unblock|dismiss call
(market/quality/effects.py `block_flagged`, `unblock_flagged`, workers/flags.py `dismiss`), with the note as the
API's `reason`, loaded through the API's schemas; a refused form changes nothing (its service call runs in a
savepoint) and says why on the page."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from marshmallow import ValidationError

from base.errors import DomainError, NotFound
from base.identity import Role
from base.uow import savepoint
from console.charts import Series, line_chart
from edge.request import clock, db_session
from edge.web import page_account, signed_in
from market.catalogue.models import Project
from market.quality import scoring, triage
from market.quality.effects import block_flagged, unblock_flagged
from workers import flags
from workers.models import FlagReason, FlagState, WorkerFlag
from workers.schemas import BlockSchema, FlagNoteSchema, FlagQuerySchema

blp = Blueprint("ops_flags", __name__)
PER_PAGE = 50
STATES = [s.value for s in FlagState]
REASONS = [r.value for r in FlagReason]


@blp.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"  # ops data and CSRF tokens: never cached
    return response


def _filters() -> tuple[dict[str, Any], dict[str, Any], dict[str, list[str]]]:
    """(the values as typed, the filters loaded through the API's query schema, field errors)."""
    typed = {k: request.args.get(k, "").strip() for k in ("state", "reason", "project_id", "worker_id")}
    if "state" not in request.args:
        typed["state"] = FlagState.OPEN.value  # the queue: open flags, unless asked otherwise
    given = {k: v for k, v in typed.items() if v and not (k == "state" and v == "any")}
    try:
        loaded = FlagQuerySchema(only=("state", "reason", "project_id", "worker_id")).load(given)
    except ValidationError as exc:
        return typed, {}, exc.messages  # type: ignore[return-value]
    return typed, loaded, {}


@blp.get("/ops")
@signed_in(Role.OPS)
def queue():
    """The flag queue: flags filtered by state (open by default), reason, project and worker; most severe first."""
    typed, loaded, errors = _filters()
    try:
        number = max(1, int(request.args.get("page", "1")))
    except ValueError:
        number, errors = 1, {**errors, "page": ["Not a valid page number."]}
    if errors:
        return render_template("ops/flags.html", rows=[], total=0, page=1, pages=1, values=typed, errors=errors,
                               states=STATES, reasons=REASONS, tiers=triage.TIER_NAMES,
                               message="Please correct the filters below."), 422
    rows, total = triage.flag_queue(
        db_session(), now=clock(), state=FlagState(loaded["state"]) if "state" in loaded else None,
        reason=FlagReason(loaded["reason"]) if "reason" in loaded else None, worker_id=loaded.get("worker_id"),
        project_id=loaded.get("project_id"), offset=(number - 1) * PER_PAGE, limit=PER_PAGE)
    pages = max(1, -(-total // PER_PAGE))
    args = {k: v for k, v in typed.items() if v}
    return render_template("ops/flags.html", rows=rows, total=total, page=number, pages=pages, values=typed,
                           errors={}, states=STATES, reasons=REASONS, tiers=triage.TIER_NAMES, message=None,
                           prev_url=url_for(".queue", **args, page=number - 1) if number > 1 else None,
                           next_url=url_for(".queue", **args, page=number + 1) if number < pages else None)


def _shown(value: Any) -> str:
    """An answer or item as text for the page (Jinja escapes it)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def _evidence(flag: WorkerFlag) -> dict[str, Any]:
    session = db_session()
    project = session.get(Project, flag.project_id) if flag.project_id is not None else None
    records = scoring.worker_records(session, flag.account_id,
                                     project_ids=[project.id] if project is not None else None)
    history = triage.gold_history(session, worker_id=flag.account_id, project_id=flag.project_id)
    threshold = float(project.min_gold_accuracy) if project is not None else None
    where = f"in {project.title}" if project is not None else "in every project"
    chart = line_chart(
        Series([p.accuracy for p in history], [p.low for p in history], [p.high for p in history],
               [f"Gold answer {p.n}, {p.at:%Y-%m-%d %H:%M} UTC: {p.accuracy:.0%} "
                f"(95% interval {p.low:.0%}-{p.high:.0%})" for p in history]),
        chart_id=f"gold-chart-{flag.id}", title=f"Gold accuracy over time {where}",
        description=(f"Running accuracy after each of {len(history)} scored gold answers, with its 95% Wilson "
                     f"interval as a band" + (f" and the project's minimum {threshold:.0%} as a dashed line."
                                              if threshold is not None else ".")
                     + (f" Latest: {history[-1].accuracy:.0%}." if history else " No gold answers yet.")),
        x_label="Scored gold answers, oldest first", threshold=threshold,
        threshold_label=f"minimum {threshold:.0%}" if threshold is not None else "")
    titles = triage.project_titles(session, [r.project_id for r in records if r.project_id is not None])
    medians = {r.project_id: triage.project_median_ms(session, project_id=r.project_id, excluding=flag.account_id)
               for r in records if r.project_id is not None}
    answers = triage.recent_gold_answers(session, worker_id=flag.account_id, project_id=flag.project_id)
    return {"project": project, "records": records, "titles": titles, "medians": medians, "history": history,
            "chart": chart, "threshold": threshold,
            "answers": [{"a": a, "text": _shown(a.data.get("text", a.data)), "value": _shown(a.value),
                         "gold": _shown(a.gold)} for a in answers]}


def _detail(flag_id: int, status: int = 200, message: str | None = None, errors: dict | None = None,
            values: dict | None = None, form: str | None = None):
    session = db_session()
    flag = flags.get_flag(session, flag_id=flag_id)
    block = flags.block_of(session, flag)
    held = flags.blocks_in_force(session, worker_ids=[flag.account_id], now=clock()).get(flag.account_id, [])
    trail = flags.events(session, flag.id)
    names = triage.account_names(session, [flag.account_id, flag.created_by_id, *(e.actor_id for e in trail)])
    return render_template(
        "ops/flag.html", flag=flag, block=block, now=clock(), severity=triage.severity(flag, held), trail=trail,
        names=names, worker_name=names.get(flag.account_id), message=message, errors=errors or {},
        values=values or {}, form=form, **_evidence(flag)), status


@blp.get("/ops/flags/<int:flag_id>")
@signed_in(Role.OPS)
def flag_page(flag_id: int):
    """A flag's evidence, its audit trail, and block / unblock / dismiss."""
    return _detail(flag_id)


def _decide(flag_id: int, form: str, schema: Any, fields: tuple[str, ...], act: Any):
    """Load the form through the API's schema (a note is required: blank is refused), call the service in a
    savepoint, then back to the flag's page with what happened; refused: the page again, saying why."""
    session = db_session()
    flags.get_flag(session, flag_id=flag_id)  # 404 before anything else
    values = {k: request.form.get(k, "") for k in fields}
    data = {k: v.strip() for k, v in values.items()}
    data["reason"] = data.pop("note")
    if "expires_at" in data and not data["expires_at"]:
        data["expires_at"] = None
    try:
        loaded = schema.load(data)
    except ValidationError as exc:
        errors = dict(exc.messages)  # type: ignore[arg-type]
        if "reason" in errors:
            errors["note"] = ["A note is required: say why, for the audit trail."]
            del errors["reason"]
        return _detail(flag_id, 422, "Nothing was changed: please correct the form.", errors, values, form)
    try:
        with savepoint(session):
            act(session, loaded)
    except DomainError as exc:
        if isinstance(exc, NotFound):
            raise
        errors = {("note" if k == "reason" else k): v for k, v in (exc.errors or {}).items()} \
            if isinstance(exc.errors, dict) else {}
        return _detail(flag_id, exc.status, f"Nothing was changed: {exc.detail}", errors, values, form)
    return None


@blp.post("/ops/flags/<int:flag_id>/block")
@signed_in(Role.OPS)
def block(flag_id: int):
    """Block the flagged worker (the flag's project or all work, optionally until a time), with a note."""
    refused = _decide(flag_id, "block", BlockSchema(), ("scope", "expires_at", "note"), lambda s, d: block_flagged(
        s, flag_id=flag_id, actor=page_account(), scope=d["scope"], reason=d["reason"], expires_at=d["expires_at"],
        now=clock()))
    if refused is not None:
        return refused
    flash("The worker is blocked; their live leases ended and their answers in scope are excluded.")
    return redirect(url_for(".flag_page", flag_id=flag_id))


@blp.post("/ops/flags/<int:flag_id>/unblock")
@signed_in(Role.OPS)
def unblock(flag_id: int):
    """Lift the flag's block, with a note; the flag is open again."""
    refused = _decide(flag_id, "unblock", FlagNoteSchema(), ("note",), lambda s, d: unblock_flagged(
        s, flag_id=flag_id, actor=page_account(), reason=d["reason"], now=clock()))
    if refused is not None:
        return refused
    flash("The block is lifted; the worker's excluded answers count again and the flag is open.")
    return redirect(url_for(".flag_page", flag_id=flag_id))


@blp.post("/ops/flags/<int:flag_id>/dismiss")
@signed_in(Role.OPS)
def dismiss(flag_id: int):
    """Close an open flag without action, with a note."""
    refused = _decide(flag_id, "dismiss", FlagNoteSchema(), ("note",), lambda s, d: flags.dismiss(
        s, flag_id=flag_id, actor=page_account(), reason=d["reason"], now=clock()))
    if refused is not None:
        return refused
    flash("The flag is dismissed.")
    return redirect(url_for(".flag_page", flag_id=flag_id))
