"""Domain errors: services raise these; the edge (edge/problems.py) turns them into problem+json.

A domain error ends the unit of work (base/uow.py) it is raised in with a rollback: a refused request changes
nothing. A refusal whose bookkeeping must outlive it says so where it is raised, `raise Gone(...).keep_writes()`:
then the unit of work commits what was flushed before the refusal (a lapsed lease marked expired, a worker's
lapsed leases ended before "no work"). `grep -rn "keep_writes()"` lists every such place."""

from __future__ import annotations

from typing import Any, Self

PROBLEM_MIMETYPE = "application/problem+json"


class DomainError(Exception):
    """A rule of the domain was broken; services raise these, the edge turns them into problems."""

    status = 400
    title = "Bad request"

    headers: dict[str, str] = {}
    # Whether the unit of work commits what was flushed before this refusal (see the module docstring).
    keeps_writes = False

    def __init__(self, detail: str, *, errors: Any = None, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.extra = extra
        if headers:
            self.headers = {**self.headers, **headers}

    def keep_writes(self) -> Self:
        """Mark this refusal as one that keeps the writes made before it: the unit of work around it commits them,
        then the refusal reaches the caller as ever. Use it only for bookkeeping that is true whatever the answer
        (a lease that ran out), never for part of what was refused."""
        self.keeps_writes = True
        return self


class InvalidInput(DomainError):
    status = 422
    title = "Invalid input"


class NotFound(DomainError):
    status = 404
    title = "Not found"


class Forbidden(DomainError):
    status = 403
    title = "Forbidden"


class Conflict(DomainError):
    status = 409
    title = "Conflict"


class IdempotencyConflict(Conflict):
    """An Idempotency-Key sent again with a different request: neither a replay nor a new request."""

    def __init__(self) -> None:
        super().__init__("This Idempotency-Key was used for a different request.",
                         errors={"Idempotency-Key": ["reused with a different body"]})


class Gone(DomainError):
    status = 410
    title = "Gone"


class TooManyRequests(DomainError):
    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int, **extra: object) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)}, retry_after=retry_after, **extra)


class Unauthorized(DomainError):
    status = 401
    title = "Unauthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="crowdmarket"'}
