"""Counting the SQL statements a request runs, for tests that hold a list endpoint to a fixed number of queries
whatever the length of its page.

Every session of a test joins the test's connection (tests/conftest.py), so watching that one connection sees
every statement the request runs and nothing another test or process runs: through SQLAlchemy's
`before_cursor_execute` on SQLite, at the psycopg cursor on PostgreSQL (where hot statements bypass SQLAlchemy). The
savepoints that stand in for commits inside the test's outer transaction are left out: a request served outside
a test runs none of them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, event

_SAVEPOINTS = re.compile(r"\s*(SAVEPOINT|RELEASE\s+SAVEPOINT|ROLLBACK\s+TO\s+SAVEPOINT)\b", re.IGNORECASE)


@contextmanager
def counting(connection: Connection) -> Iterator[list[str]]:
    """The statements run on `connection` inside the block (savepoint housekeeping left out), in order."""
    statements: list[str] = []

    def note(statement: Any) -> None:
        text = statement.decode() if isinstance(statement, bytes) else str(statement)
        if not _SAVEPOINTS.match(text):
            statements.append(text)

    if connection.dialect.name == "postgresql":
        # Hot statements run straight on the psycopg connection there, past SQLAlchemy's events (base/db.py
        # HotStatement): count what reaches the driver instead, every statement once whichever way it came.
        driver = connection.connection.driver_connection
        saved = driver.cursor_factory
        driver.cursor_factory = _counting_cursor(saved, note)
        try:
            yield statements
        finally:
            driver.cursor_factory = saved
        return

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        note(statement)

    event.listen(connection, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(connection, "before_cursor_execute", record)


def _counting_cursor(base: type, note: Callable[[Any], None]) -> type:
    class CountingCursor(base):  # type: ignore[misc, valid-type]
        def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            note(query)
            return super().execute(query, *args, **kwargs)

        def executemany(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            note(query)
            return super().executemany(query, *args, **kwargs)

    return CountingCursor


def statements_of(connection: Connection, call: Any, *args: Any, **kwargs: Any) -> tuple[Any, list[str]]:
    """Run `call(*args, **kwargs)` (a test-client request, say); its result and the statements it ran."""
    with counting(connection) as statements:
        result = call(*args, **kwargs)
    return result, list(statements)
