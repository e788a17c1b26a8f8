"""Projects, guideline versions and items: access, settings, label-schema changes. No flask here."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from base import events
from base.errors import Conflict, InvalidInput, NotFound
from base.events import GoldItemChanged
from base.identity import Actor, Role
from base.labels import AnswerError, narrowing, validate_answer
from base.paging import keyset_page
from market.catalogue.models import (
    Batch,
    GuidelineVersion,
    Item,
    Project,
)
from qualification.service import check_requirements

MAX_LISTED_ERRORS = 100


def get_project(session: Session, *, project_id: int, account: Actor, write: bool = False,
                lock: bool = False) -> Project:
    """The project if the account may see it (owner, or ops for reads); others get 404, never 403."""
    stmt = select(Project).where(Project.id == project_id)
    if lock:
        stmt = stmt.with_for_update()
    project = session.scalar(stmt)
    if project is None or not _can_access(project, account, write):
        raise NotFound(f"Project {project_id} not found.")
    return project


def _can_access(project: Project, account: Actor, write: bool) -> bool:
    if project.owner_id == account.id:
        return True
    return account.role == Role.OPS and not write


def list_projects(session: Session, *, account: Actor, after: int | None, limit: int) -> list[Project]:
    """Projects the account may see, by id."""
    owner = None if account.role == Role.OPS else account.id
    return keyset_page(session, Project, after=after, limit=limit, equal=((Project.owner_id, owner),))


_SETTINGS = ("reward_cents", "currency", "items_per_hit", "assignments_per_item", "assignment_duration_seconds",
             "lifetime_seconds", "auto_approval_delay_seconds", "gold_rate", "min_gold_accuracy", "min_judged_answers",
             "flag_confidence", "quality_action", "action_confidence", "accuracy_window", "fast_answer_fraction",
             "gold_feedback", "estimated_seconds", "target_wage_cents_per_hour", "auto_top_up", "reject_gold_misses")


def _check_confidences(flag: Decimal, action: Decimal) -> None:
    if flag > action:
        raise InvalidInput("A worker is flagged before the action is taken: flag_confidence must not exceed "
                           "action_confidence.", errors={"flag_confidence": [f"exceeds action_confidence {action}"]})


def create_project(session: Session, *, owner: Actor, data: dict[str, Any], now: dt.datetime) -> Project:
    """Create a project with its first guideline version."""
    fields = {k: data[k] for k in _SETTINGS if k in data}
    requirements = check_requirements(session, owner_id=owner.id,
                                      requirements=data.get("qualification_requirements"))
    _check_confidences(fields.get("flag_confidence", Decimal("0.90")), fields.get("action_confidence", Decimal("0.99")))
    project = Project(owner_id=owner.id, title=data["title"], description=data.get("description", ""),
                      label_schema=data["label_schema"], guideline_version=1, created_at=now, updated_at=now,
                      qualification_requirements=requirements, **fields)
    session.add(project)
    session.flush()
    session.add(GuidelineVersion(project_id=project.id, version=1, instructions=data.get("instructions", ""),
                                 created_by_id=owner.id, created_at=now))
    session.flush()
    return project


def current_instructions(session: Session, project: Project) -> str:
    """The instructions of the project's current guideline version."""
    return current_instructions_many(session, [project])[project.id]


def current_instructions_many(session: Session, projects: Sequence[Project]) -> dict[int, str]:
    """Each project's current instructions, by project id: one query for the lot."""
    if not projects:
        return {}
    # Any query flushes first (autoflush), so the projects' rows hold their current guideline versions.
    found = dict(session.execute(select(GuidelineVersion.project_id, GuidelineVersion.instructions)
                                 .join(Project, (Project.id == GuidelineVersion.project_id)
                                       & (Project.guideline_version == GuidelineVersion.version))
                                 .where(GuidelineVersion.project_id.in_([p.id for p in projects]))).all())
    return {p.id: found.get(p.id) or "" for p in projects}


def has_published(session: Session, project: Project) -> bool:
    return session.scalar(select(Batch.id).where(Batch.project_id == project.id).limit(1)) is not None


def update_project(session: Session, *, project: Project, account: Actor, data: dict[str, Any],
                   now: dt.datetime) -> Project:
    """Change settings; new instructions become a new guideline version. Published batches keep their terms. A new
    label schema must fit every gold answer and, once work is published, every answer the old one accepted (see
    `_orphaned`); gold answers are then re-scored under it and their workers judged again, in the same
    transaction."""
    schema_changed = "label_schema" in data and data["label_schema"] != project.label_schema
    if schema_changed:
        orphaned = _orphaned(session, project, data["label_schema"])
        if orphaned:
            raise Conflict("The new label schema does not fit answers the project holds; nothing was changed. "
                           "Keep their keys (add categories, reword names), correct the gold items first, or "
                           "create a new project.", errors=orphaned)
    _check_confidences(data.get("flag_confidence", project.flag_confidence),
                       data.get("action_confidence", project.action_confidence))
    for key in ("title", "description", "label_schema", *_SETTINGS):
        if key in data:
            setattr(project, key, data[key])
    if "qualification_requirements" in data:
        project.qualification_requirements = check_requirements(
            session, owner_id=project.owner_id, requirements=data["qualification_requirements"])
    if "instructions" in data and data["instructions"] != current_instructions(session, project):
        project.guideline_version += 1
        session.add(GuidelineVersion(project_id=project.id, version=project.guideline_version,
                                     instructions=data["instructions"], created_by_id=account.id, created_at=now))
    project.updated_at = now
    if schema_changed:
        session.flush()
        for item_id in session.scalars(select(Item.id).where(Item.project_id == project.id, Item.is_gold.is_(True))):
            events.publish(session, GoldItemChanged(item_id=item_id, at=now))
    session.flush()
    return project


def _orphaned(session: Session, project: Project, schema: dict[str, Any]) -> dict[str, list[str]]:
    """What a new label schema would orphan: once work is published, any answer the old schema accepts (workers
    hold tasks under it and answers are stored under it), and always any gold answer (workers answering the new
    schema's keys would be scored wrong against it forever). At most MAX_LISTED_ERRORS gold items are named."""
    problems: dict[str, list[str]] = {}
    if has_published(session, project) and (why := narrowing(project.label_schema, schema)):
        problems["label_schema"] = [f"work is published: the schema may only widen, and this {why}"]
    gold = session.execute(select(Item.external_id, Item.gold_answer).where(
        Item.project_id == project.id, Item.is_gold.is_(True)).order_by(Item.id))
    for external_id, answer in gold:
        try:
            validate_answer(schema, answer)
        except AnswerError as exc:
            problems[f"gold:{external_id}"] = [f"the known answer {json.dumps(answer)} {exc}"]
            if len(problems) > MAX_LISTED_ERRORS:
                break
    return problems


def list_guidelines(session: Session, *, project: Project) -> list[GuidelineVersion]:
    stmt = select(GuidelineVersion).where(GuidelineVersion.project_id == project.id)
    return list(session.scalars(stmt.order_by(GuidelineVersion.version)))


def get_guideline(session: Session, *, project: Project, version: int) -> GuidelineVersion:
    found = session.scalar(select(GuidelineVersion).where(
        GuidelineVersion.project_id == project.id, GuidelineVersion.version == version))
    if found is None:
        raise NotFound(f"Guideline version {version} not found.")
    return found


def list_items(session: Session, *, project: Project, after: int | None, limit: int,
               gold: bool | None = None, batch_id: int | None = None) -> list[Item]:
    return keyset_page(session, Item, after=after, limit=limit, equal=(
        (Item.project_id, project.id), (Item.is_gold, gold), (Item.batch_id, batch_id)))


def get_item(session: Session, *, project: Project, item_id: int) -> Item:
    item = session.get(Item, item_id)
    if item is None or item.project_id != project.id:
        raise NotFound(f"Item {item_id} not found.")
    return item
