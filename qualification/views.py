"""The qualification test pages of a signed-in worker: the tests, one test with "Start the test", the attempt as a
form with its timer, and the result.

The same service calls as the worker API (qualification/api.py: list_tests, start_attempt, get_attempt,
submit_attempt). Questions are shown as the API shows them (id, position, data): the known answers never reach a
page, before or after the attempt; neither does the score of a question."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from base.errors import Conflict, Gone, InvalidInput
from base.identity import Role
from edge.request import clock, db_session
from edge.web import page_account, signed_in
from qualification import service
from qualification.models import AttemptStatus, QualificationAttempt, QualificationType

blp = Blueprint("qualification_pages", __name__, url_prefix="/work/qualifications")
# A rating scale up to this many points is shown as radio buttons; a longer one as a number field.
MAX_RATING_RADIOS = 11


@blp.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"  # forms with CSRF tokens, a worker's own results
    return response


def _standing(type_id: int, now: dt.datetime) -> service.Standing:
    for standing in service.list_tests(db_session(), worker=page_account(), now=now):
        if standing.qtype.id == type_id:
            return standing
    abort(404, description=f"Qualification test {type_id} not found.")


@blp.get("")
@signed_in(Role.WORKER)
def tests():
    """Every qualification test, with whether the worker may take it now."""
    now = clock()
    return render_template("qualification/tests.html", now=now,
                           tests=service.list_tests(db_session(), worker=page_account(), now=now))


@blp.route("/<int:type_id>", methods=["GET", "POST"])
@signed_in(Role.WORKER)
def test(type_id: int):
    """One test: what it is, and "Start the test" (or resume the open attempt)."""
    now = clock()
    if request.method == "GET":
        return render_template("qualification/test.html", s=_standing(type_id, now), now=now, message=None)
    try:
        attempt, _, _ = service.start_attempt(db_session(), worker=page_account(), type_id=type_id, now=now)
    except service.AttemptRefused as exc:
        # Raised with keep_writes (lapsed attempts marked expired): the unit of work commits them, as for the API.
        message = exc.detail
        if exc.extra.get("available_at"):
            message = f"{message.rstrip('.')}: {_when(exc.extra['available_at'])}."
        return render_template("qualification/test.html", s=_standing(type_id, now), now=now,
                               message=message), exc.status
    return redirect(url_for(".attempt", attempt_id=attempt.id), 303)


def _when(iso: str) -> str:
    return dt.datetime.fromisoformat(iso).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _questions(type_id: int) -> list[dict[str, Any]]:
    # Only what the API's worker schema shows of a question: never its `answer`.
    return [{"id": q.id, "position": q.position, "data": q.data} for q in service.questions(db_session(), type_id)]


def _form_answers(schema: dict[str, Any], questions: list[dict[str, Any]],
                  form: MultiDict[str, str]) -> list[dict[str, Any]]:
    """The form's answers in the service's shape; a question left blank is left out (the service says so)."""
    answers = []
    for q in questions:
        name = f"q{q['id']}"
        if schema["type"] == "multi_choice":
            if name in form or schema.get("min_choices", 0) == 0:
                answers.append({"question_id": q["id"], "answer": form.getlist(name)})
            continue
        raw = form.get(name, "")
        if raw == "" or (schema["type"] == "text" and not raw.strip()):
            continue
        value: Any = raw
        if schema["type"] == "rating":
            try:
                value = int(raw)
            except ValueError:
                value = raw  # the service refuses it with its own message
        answers.append({"question_id": q["id"], "answer": value})
    return answers


def _render_attempt(attempt: QualificationAttempt, qtype: QualificationType, now: dt.datetime, *,
                    message: str | None = None, errors: dict[str, list[str]] | None = None,
                    chosen: MultiDict[str, str] | None = None, status: int = 200):
    questions = _questions(qtype.id)
    if attempt.status == AttemptStatus.STARTED and now < attempt.expires_at and status != 410:
        remaining = int((attempt.expires_at - now).total_seconds())
        html = render_template("qualification/attempt.html", attempt=attempt, qtype=qtype, questions=questions,
                               remaining=remaining, message=message, errors=errors or {},
                               chosen=chosen or MultiDict(), max_radios=MAX_RATING_RADIOS)
        return html, status
    standing = _standing(qtype.id, now)
    html = render_template("qualification/result.html", attempt=attempt, qtype=qtype, s=standing, now=now,
                           expired=attempt.status != AttemptStatus.SUBMITTED, message=message)
    return html, status


@blp.route("/attempts/<int:attempt_id>", methods=["GET", "POST"])
@signed_in(Role.WORKER)
def attempt(attempt_id: int):
    """An attempt: its questions with a timer while it is open; submitted, its score and whether it passed."""
    session, worker, now = db_session(), page_account(), clock()
    found = service.get_attempt(session, worker=worker, attempt_id=attempt_id)  # not theirs: 404
    qtype = session.get_one(QualificationType, found.type_id)
    if request.method == "GET":
        return _render_attempt(found, qtype, now)
    answers = _form_answers(qtype.label_schema, _questions(qtype.id), request.form)
    try:
        service.submit_attempt(session, worker=worker, attempt_id=attempt_id, answers=answers, now=now)
    except InvalidInput as exc:  # nothing was written: the answers are checked before the attempt is touched
        errors = (exc.errors or {}).get("answers", {}) if isinstance(exc.errors, dict) else {}
        return _render_attempt(found, qtype, now, message="Please answer every question.", errors=errors,
                               chosen=request.form, status=exc.status)
    except Gone as exc:  # the time ran out: the service marked it expired (kept) and scored nothing
        return _render_attempt(found, qtype, now, message=exc.detail, status=exc.status)
    except Conflict as exc:  # submitted already with other answers (another tab): its result stands
        return _render_attempt(found, qtype, now, message=exc.detail, status=exc.status)
    return redirect(url_for(".attempt", attempt_id=attempt_id), 303)
