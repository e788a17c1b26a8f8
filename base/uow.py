"""The unit of work: the one place that ends a transaction (cosmicpython's pattern).

    with UnitOfWork(session):
        service(session, ...)     # services add and flush; they never commit nor roll back

The block commits once when it ends normally and rolls back on any exception, so a service that fails half way
leaves nothing behind (an import with a bad row stores no item). One exception to that, explicit and grep-able:
a `DomainError` raised with `.keep_writes()` is a refusal whose bookkeeping must survive it (a lapsed lease
marked expired, then 410 Gone), so the block commits what was flushed before it, then lets it propagate.

Who opens one: the edge per request (edge/request.py, around every view), the CLI per command (shell/cli.py),
each job per run (aggregation/jobs.py, market/quality/evaluation.py). `.commit(` and `.rollback(` appear in this
module only (tests/test_transactions.py checks).

`savepoint(session)` is for the patterns "try the insert; on IntegrityError take the row that won the race": the
failed statement is undone, what came before it in the unit of work is not, and the session stays usable.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from sqlalchemy.orm import Session

from base.errors import DomainError

# Set in `session.info` by `Database.autocommit_session` (base/db.py): every statement of such a session is a
# transaction of its own.
AUTOCOMMIT_KEY = "crowdmarket.autocommit"


def keeps_writes(exc: BaseException | None) -> bool:
    """Whether a unit of work ending with `exc` commits: no exception, or a refusal raised with `keep_writes()`."""
    return exc is None or (isinstance(exc, DomainError) and exc.keeps_writes)


def finish(session: Session, exc: BaseException | None) -> None:
    """End the session's transaction as a unit of work ending with `exc` does: commit, or roll back."""
    if keeps_writes(exc):
        session.commit()
    else:
        session.rollback()


class UnitOfWork:
    """`with UnitOfWork(session) as uow:` commits at the end of the block, rolls back on an exception (bar a
    refusal that keeps its writes: see the module's docstring). On PostgreSQL's autocommit sessions each statement
    is committed as it runs; the commit here then costs no round trip (nothing is open), nor does the rollback."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def __enter__(self) -> UnitOfWork:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        finish(self.session, exc)


def autocommit(session: Session) -> bool:
    """Whether each statement of `session` runs in a transaction of its own (`Database.autocommit_session`)."""
    return bool(session.info.get(AUTOCOMMIT_KEY))


@contextmanager
def savepoint(session: Session) -> Iterator[None]:
    """Undo the block alone if it raises (the exception propagates), keeping the unit of work's earlier writes:
    for "insert; on IntegrityError use the row that won the race". On an autocommit session there is no
    transaction to put a SAVEPOINT in (PostgreSQL refuses one), and none is needed: each statement was atomic on
    its own, the failed one changed nothing. There the block runs as is; on failure only the session's state is
    reset (a failed flush leaves it unusable until then), without a round trip."""
    if not autocommit(session):
        nested = session.begin_nested()
        try:
            yield
        except BaseException as exc:
            # A refusal that keeps its writes (see `UnitOfWork`) keeps those made in here too, as on autocommit.
            nested.commit() if keeps_writes(exc) else nested.rollback()
            raise
        nested.commit()
        return
    try:
        yield
    except BaseException:
        session.rollback()  # nothing is open on the connection: this resets the session, it undoes nothing
        raise
