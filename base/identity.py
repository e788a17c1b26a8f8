"""Who acts: roles, and what services need of an account."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class Role(enum.StrEnum):
    REQUESTER = "requester"
    OPS = "ops"
    WORKER = "worker"


class Actor(Protocol):
    """What services need of whoever acts: an `Account`, or the `Caller` that authentication yields."""

    @property
    def id(self) -> int: ...

    @property
    def role(self) -> Role: ...


@dataclass(frozen=True, slots=True)
class Caller:
    """The account behind a request's token, as authentication reads it: its id and role, without loading the
    ORM entity (that load was a fifth of a worker request's CPU)."""

    id: int
    role: Role


# werkzeug's method string. scrypt with werkzeug's own parameters (N=2^15, r=8, p=1; about 0.1 s a hash on a
# quiet core); tests pass a cheap one, production refuses anything below this (shell/config.py).
DEFAULT_PASSWORD_HASH = "scrypt:32768:8:1"
