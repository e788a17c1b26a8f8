"""Answers as the requester sees them: paged listing and streamed CSV/JSONL export with provenance."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Select, exists, select
from sqlalchemy.orm import Session

from base.labels import format_csv_answer
from base.spreadsheet import cell
from market.catalogue.models import Answer, Assignment, Item, Project

EXPORT_PAGE = 5_000
EXPORT_COLUMNS = ("answer_id", "assignment_id", "worker_id", "item_id", "external_id", "is_gold", "answer",
                  "submitted_at", "duration_ms", "guideline_version")


def _answers_query(project: Project, *, batch_id: int | None = None, worker_id: int | None = None,
                   item_id: int | None = None) -> Select[Any]:
    stmt = (select(Answer.id, Answer.assignment_id, Answer.worker_id, Answer.item_id, Item.external_id,
                   Item.is_gold, Answer.value, Answer.submitted_at, Answer.duration_ms, Answer.guideline_version)
            .join(Item, Item.id == Answer.item_id)
            # Answers a block excludes are kept but not shown: they must not reach anyone's labels.
            .where(Answer.project_id == project.id, Answer.excluded_at.is_(None)).order_by(Answer.id))
    if batch_id is not None:
        stmt = stmt.where(Item.batch_id == batch_id)
    if worker_id is not None:
        stmt = stmt.where(Answer.worker_id == worker_id)
    if item_id is not None:
        stmt = stmt.where(Answer.item_id == item_id)
    return stmt


def worked_for(session: Session, *, requester_id: int, worker_id: int) -> bool:
    """Whether the worker has held an assignment (in any state) in one of the requester's projects."""
    return bool(session.scalar(select(exists().where(
        Assignment.worker_id == worker_id, Assignment.project_id == Project.id, Project.owner_id == requester_id))))


def _as_dict(row: Any) -> dict[str, Any]:
    return dict(zip(EXPORT_COLUMNS, row, strict=True))


def list_answers(session: Session, *, project: Project, after: int | None, limit: int,
                 **filters: int | None) -> list[dict[str, Any]]:
    """One page of answers, oldest first; pass the last answer_id as `after` for the next page."""
    stmt = _answers_query(project, **filters).limit(limit)
    if after is not None:
        stmt = stmt.where(Answer.id > after)
    return [_as_dict(row) for row in session.execute(stmt)]


def iter_answers(session: Session, *, project: Project, **filters: int | None) -> Iterator[dict[str, Any]]:
    """Every answer, fetched in keyset pages so memory stays constant however many there are."""
    after = None
    while True:
        page = list_answers(session, project=project, after=after, limit=EXPORT_PAGE, **filters)
        yield from page
        if len(page) < EXPORT_PAGE:
            return
        after = page[-1]["answer_id"]


def export_lines(session: Session, *, project: Project, fmt: str, **filters: int | None) -> Iterator[str]:
    """Yield the export as text chunks: a CSV with a header row, or one JSON object per line. The CSV's text cells
    (external ids, answers) are safe to open in a spreadsheet (market.spreadsheet); JSON Lines are the data as is."""
    if fmt == "jsonl":
        for row in iter_answers(session, project=project, **filters):
            row["submitted_at"] = row["submitted_at"].isoformat()
            yield json.dumps(row, separators=(",", ":")) + "\n"
        return
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")  # RFC 4180; with "\n" a lone CR in a cell went unquoted
    writer.writerow(EXPORT_COLUMNS)
    for n, row in enumerate(iter_answers(session, project=project, **filters), start=1):
        row["external_id"] = cell(row["external_id"])
        row["answer"] = cell(format_csv_answer(row["answer"]))
        row["submitted_at"] = row["submitted_at"].isoformat()
        row["is_gold"] = "true" if row["is_gold"] else "false"
        writer.writerow(row.values())
        if n % 1000 == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()
