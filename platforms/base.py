"""The interface every platform implements, and what the work page needs of it. No flask here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Arrival:
    """A platform worker reaching our work page, as the platform's query parameters describe them.

    `assignment_ref` is the platform's id of this piece of work (MTurk's assignmentId); `preview` means the worker
    is only looking (nothing may be leased or recorded); `return_to` is where the finished work is announced."""

    platform: str
    preview: bool
    worker_ref: str | None = None
    assignment_ref: str | None = None
    task_ref: str | None = None
    return_to: str | None = None


@dataclass(frozen=True)
class Completion:
    """How the page hands the work back once our submit stored it: a form POSTed by the browser to `action`
    (the platform's endpoint), with these fields."""

    action: str
    fields: Mapping[str, str] = field(default_factory=dict)


class Platform(Protocol):
    name: str
    title: str  # as workers know it
    # Origins the page's form may post to (its CSP form-action).
    form_origins: tuple[str, ...]

    def arrival(self, args: Mapping[str, str]) -> Arrival:
        """Read an arrival from the page's query string; raises InvalidInput naming what is missing or wrong."""
        ...

    def completion(self, arrival: Arrival, *, assignment_id: int) -> Completion:
        """The form that tells the platform the work is done."""
        ...
