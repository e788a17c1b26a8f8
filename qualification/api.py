"""Qualification JSON API: requesters define tests and grant or revoke by hand (ops too); workers take tests."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView

from base.identity import Role
from edge.auth import current_account, requires
from edge.blueprint import Blueprint, page
from edge.fields import PageQuerySchema
from edge.openapi import problems
from edge.request import clock, db_session
from qualification import service
from qualification.models import QualificationAttempt, QualificationQuestion, QualificationType
from qualification.schemas import (
    AttemptSchema,
    AttemptSubmitSchema,
    GrantCreateSchema,
    GrantListSchema,
    GrantSchema,
    HoldersQuerySchema,
    QualificationTestListSchema,
    QualificationTypeCreateSchema,
    QualificationTypeListSchema,
    QualificationTypeSchema,
    RevokeSchema,
)

# `(session, *, requester_id, worker_id) -> bool`: whether the worker has worked on the requester's projects. The
# market knows, and sits above this package: the factory puts the market's answer here (shell/app.py).
WORKED_FOR = "crowdmarket.worked_for"

blp = Blueprint("qualifications", __name__, url_prefix="/api/v1/qualifications",
                description="Qualification types and their tests (requesters; ops read, grant and revoke).")
tests_blp = Blueprint("qualification-tests", __name__, url_prefix="/api/v1",
                      description="Qualification tests (crowd workers).")
READ = (Role.REQUESTER, Role.OPS)
GRANT = (Role.REQUESTER, Role.OPS)


def _type_body(qtype: QualificationType, questions: list[QualificationQuestion] | None = None) -> dict[str, Any]:
    body = {c: getattr(qtype, c) for c in QualificationTypeSchema().fields if c != "questions"}
    if questions is not None:
        body["questions"] = [{"id": q.id, "position": q.position, "data": q.data, "answer": q.answer}
                             for q in questions]
    return body


def _holder_body(holder: service.Holder) -> dict[str, Any]:
    g = holder.grant
    return {"worker_id": g.worker_id, "username": holder.username, "value": g.value, "source": g.source.value,
            "reason": g.reason, "granted_at": g.granted_at, "granted_by_id": g.granted_by_id,
            "revoked_at": g.revoked_at, "revoked_by_id": g.revoked_by_id, "revoke_reason": g.revoke_reason,
            "best_score": holder.best_score, "attempts": holder.attempts}


@blp.route("")
class QualificationTypes(MethodView):
    @requires(*READ)
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, QualificationTypeListSchema)
    def get(self, args: dict[str, Any]):
        """List your qualification types (ops: all)."""
        rows = service.list_types(db_session(), account=current_account(), after=args.get("after"),
                                  limit=args["limit"])
        return page([_type_body(t) for t in rows], args["limit"])

    @requires(Role.REQUESTER)
    @blp.arguments(QualificationTypeCreateSchema)
    @blp.response(201, QualificationTypeSchema)
    @problems(409)
    def post(self, data: dict[str, Any]):
        """Create a qualification type with its test (questions with known answers) and passing score."""
        session = db_session()
        qtype = service.create_type(session, owner=current_account(), data=data, now=clock())
        return _type_body(qtype, service.questions(session, qtype.id))


@blp.route("/<int:type_id>")
class QualificationTypeDetail(MethodView):
    @requires(*READ)
    @blp.response(200, QualificationTypeSchema)
    def get(self, type_id: int):
        """One qualification type with its questions and their known answers."""
        session = db_session()
        qtype = service.get_type(session, type_id=type_id, account=current_account())
        return _type_body(qtype, service.questions(session, type_id))


@blp.route("/<int:type_id>/grants")
class Grants(MethodView):
    @requires(*READ)
    @blp.arguments(HoldersQuerySchema, location="query")
    @blp.response(200, GrantListSchema)
    def get(self, args: dict[str, Any], type_id: int):
        """The workers who hold it, with their values and best test scores (`revoked=true`: every grant)."""
        holders = service.list_holders(db_session(), type_id=type_id, account=current_account(),
                                       revoked=args["revoked"])
        return {"data": [_holder_body(h) for h in holders]}

    @requires(*GRANT)
    @blp.arguments(GrantCreateSchema)
    @blp.response(201, GrantSchema)
    @problems(409)
    def post(self, data: dict[str, Any], type_id: int):
        """Grant it to a worker by hand, or set a holder's value; a reason is required. Name the worker by
        `username` (the one they gave you) or by `worker_id` if they have worked on your projects or taken your
        tests (ops: any worker); any other id is 404, as if there were no such worker."""
        session, account = db_session(), current_account()
        granted = service.grant(session, type_id=type_id, account=account, worker_id=data.get("worker_id"),
                                username=data.get("username"), value=data["value"], reason=data["reason"],
                                now=clock(), worked_for=lambda worker_id: current_app.extensions[WORKED_FOR](
                                    session, requester_id=account.id, worker_id=worker_id))
        return _holder_body(service.holder(session, granted))


@blp.route("/<int:type_id>/grants/<int:worker_id>/revoke")
class Revoke(MethodView):
    @requires(*GRANT)
    @blp.arguments(RevokeSchema)
    @blp.response(200, GrantSchema)
    def post(self, data: dict[str, Any], type_id: int, worker_id: int):
        """Take it away from a worker; a reason is required and the grant stays on record."""
        session = db_session()
        revoked = service.revoke(session, type_id=type_id, account=current_account(), worker_id=worker_id,
                                 reason=data["reason"], now=clock())
        return _holder_body(service.holder(session, revoked))


# ---- workers -------------------------------------------------------------------------------------------------


def _attempt_body(attempt: QualificationAttempt, qtype: QualificationType,
                  questions: list[QualificationQuestion]) -> dict[str, Any]:
    answers = None if attempt.answers is None else [
        {"question_id": int(k), "answer": v} for k, v in sorted(attempt.answers.items(), key=lambda kv: int(kv[0]))]
    return {"id": attempt.id, "test_id": attempt.type_id, "status": attempt.status.value,
            "started_at": attempt.started_at, "expires_at": attempt.expires_at,
            "submitted_at": attempt.submitted_at, "score": attempt.score, "passed": attempt.passed,
            "label_schema": qtype.label_schema,
            "questions": [{"id": q.id, "position": q.position, "data": q.data} for q in questions],
            "answers": answers}


@tests_blp.route("/qualification-tests")
class Tests(MethodView):
    @requires(Role.WORKER)
    @tests_blp.response(200, QualificationTestListSchema)
    def get(self):
        """The qualification tests, with whether you may take each now and what you hold."""
        rows = service.list_tests(db_session(), worker=current_account(), now=clock())
        return {"data": [{
            "id": s.qtype.id, "name": s.qtype.name, "description": s.qtype.description,
            "question_count": s.question_count, "passing_score": s.qtype.passing_score,
            "test_duration_seconds": s.qtype.test_duration_seconds, "attempts_used": s.attempts_used,
            "attempts_left": s.attempts_left, "available_at": s.available_at, "open_attempt_id": s.open_attempt_id,
            "held_value": s.held_value} for s in rows]}


@tests_blp.route("/qualification-tests/<int:type_id>/attempts")
class StartAttempt(MethodView):
    @requires(Role.WORKER)
    @tests_blp.response(201, AttemptSchema)
    @tests_blp.alt_response(200, schema=AttemptSchema, description="Your open attempt, resumed.")
    @problems(409)
    def post(self, type_id: int):
        """Start the test (or resume your open attempt): its questions, never their answers, and a deadline."""
        session = db_session()
        attempt, questions, created = service.start_attempt(session, worker=current_account(), type_id=type_id,
                                                            now=clock())
        body = _attempt_body(attempt, session.get_one(QualificationType, type_id), questions)
        return body, 201 if created else 200


@tests_blp.route("/qualification-attempts/<int:attempt_id>")
class AttemptDetail(MethodView):
    @requires(Role.WORKER)
    @tests_blp.response(200, AttemptSchema)
    def get(self, attempt_id: int):
        """One of your attempts (with your answers and score once submitted)."""
        session = db_session()
        attempt = service.get_attempt(session, worker=current_account(), attempt_id=attempt_id)
        return _attempt_body(attempt, session.get_one(QualificationType, attempt.type_id),
                             service.questions(session, attempt.type_id))


@tests_blp.route("/qualification-attempts/<int:attempt_id>/submit")
class SubmitAttempt(MethodView):
    @requires(Role.WORKER)
    @tests_blp.arguments(AttemptSubmitSchema)
    @tests_blp.response(200, AttemptSchema)
    @problems(409, 410)
    def post(self, data: dict[str, Any], attempt_id: int):
        """Submit one answer per question: your score and pass or fail. The same answers again: the same result."""
        session = db_session()
        attempt, _ = service.submit_attempt(session, worker=current_account(), attempt_id=attempt_id,
                                            answers=data["answers"], now=clock())
        return _attempt_body(attempt, session.get_one(QualificationType, attempt.type_id),
                             service.questions(session, attempt.type_id))
