"""Declarative base, column types and the engine/session factory shared by every package."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import (
    JSON,
    Connection,
    DateTime,
    Engine,
    Enum,
    Executable,
    MetaData,
    create_engine,
    event,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from base.events import HUB_KEY, EventHub
from base.uow import AUTOCOMMIT_KEY, UnitOfWork

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite stores them naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where a UTC timestamp is required")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


# JSON documents; JSONB on PostgreSQL. Python None is SQL NULL, never the JSON literal null.
JSONDoc = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling breaks SAVEPOINT and defers locks; take control of BEGIN.
    # BEGIN IMMEDIATE serializes writers up front, so no transaction fails on a lock upgrade.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


# Timestamps read past SQLAlchemy (`HotStatement`) come back in the session's time zone: make it UTC.
UTC_SESSION = "-c TimeZone=UTC"

PLAN_LIFETIME_SECONDS = 300


def make_engine(url: str, *, pool_size: int = 10, echo: bool = False, autocommit: bool = False) -> Engine:
    """Create an engine with the project's per-backend settings. `autocommit` (PostgreSQL): its connections run
    every statement in a transaction of its own, set once per connection rather than at every checkout."""
    if url.startswith("sqlite"):
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30})
        _configure_sqlite(engine)
        return engine
    options: dict[str, Any] = {}
    if autocommit:
        # The hot paths' few statements, each planned once per connection: prepared at first use, and always
        # run on their generic plan. PostgreSQL would otherwise replan them at every execution (a claim spends
        # as long in the planner as in the executor): their generic plans look costlier to it than they are,
        # because a limit-one scan of an index range bounded by an unknown timestamp is costed as a long walk.
        # For the same reason JIT is off: those estimates would cross its threshold and compile every plan.
        # No ping at checkout either (a round trip per request): the views on this pool run again once on a
        # fresh connection when theirs turns out dead (`edge.auth.requires`), which their idempotence allows.
        # A plan is made from the statistics of its first use and kept: one made while the tables were empty (a
        # new deployment, a benchmark) scans them sequentially for the connection's whole life, however they grow
        # (seen: a gold claim at 120 ms, its probes walking every assignment). Connections are recycled, and their
        # plans made anew, every PLAN_LIFETIME_SECONDS.
        options = {"isolation_level": "AUTOCOMMIT", "pool_recycle": PLAN_LIFETIME_SECONDS, "connect_args": {
            "prepare_threshold": 0, "options": f"{UTC_SESSION} -c plan_cache_mode=force_generic_plan -c jit=off"}}
    else:
        options = {"connect_args": {"options": UTC_SESSION}}
    return create_engine(url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=not autocommit,
                         **options)


class HotStatement:
    """A statement on a hot path (authentication, claim, submit). On PostgreSQL it runs straight on the psycopg
    connection, compiled once: SQLAlchemy's per-execution work (execution context, parameter and result
    processing) cost about a third as much as the database did. Elsewhere it runs through SQLAlchemy.

    Rows are named tuples either way, with values as the driver gives them: enum columns come back as their
    string values on PostgreSQL (wrap them in the enum), timestamps as aware datetimes (in UTC: see
    `make_engine`), JSON as Python objects."""

    _DIALECT = PGDialect_psycopg()

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        compiled = statement.compile(dialect=self._DIALECT)
        self._sql = compiled.string
        self._defaults = dict(compiled.params)  # values bound in the statement itself (a LIMIT, ...)

    def rows(self, session: Session, params: dict[str, Any]) -> list[Any]:
        conn = session.connection()
        if conn.dialect.name != "postgresql":
            return list(conn.execute(self.statement, params))
        values = {**self._defaults, **params}
        cursor = conn.connection.driver_connection.cursor(row_factory=namedtuple_row)
        with cursor:
            try:
                cursor.execute(self._sql, values)
                return cursor.fetchall() if cursor.description is not None else []
            except psycopg.Error as exc:
                # As if SQLAlchemy had run it: the error wrapped (IntegrityError, ...) and, on a disconnect, the
                # connection and the pool invalidated (`connection_invalidated` set for the retry in `requires`).
                conn._handle_dbapi_exception(exc, self._sql, values, cursor, None)

    def first(self, session: Session, params: dict[str, Any]) -> Any:
        rows = self.rows(session, params)
        return rows[0] if rows else None


class Database:
    """An engine plus the session factory the app, CLI and jobs share."""

    def __init__(self, engine: Engine, bind: Engine | Connection | None = None) -> None:
        self.engine = engine
        self.events = EventHub()  # every session of this database carries it (base/events.py)
        kwargs: dict[str, Any] = {"expire_on_commit": False, "info": {HUB_KEY: self.events}}
        if isinstance(bind, Connection):
            # Tests: every session joins the test's outer transaction; commits become savepoints.
            kwargs["join_transaction_mode"] = "create_savepoint"
        self.sessionmaker = sessionmaker(bind=bind or engine, **kwargs)
        # The autocommit pool: PostgreSQL only, and never for a database bound to a test's outer transaction.
        self._autocommit_wanted = bind is None and engine.dialect.name == "postgresql"
        self._autocommit: sessionmaker[Session] | None = None

    @classmethod
    def from_url(cls, url: str, *, pool_size: int = 10) -> Database:
        return cls(make_engine(url, pool_size=pool_size))

    def session(self) -> Session:
        return self.sessionmaker()

    def autocommit_session(self) -> Session:
        """A session whose statements each run in a transaction of their own, without BEGIN and COMMIT round
        trips: for request handlers whose every write is one atomic statement. PostgreSQL only (its own pool);
        elsewhere, and for a database bound to a test's outer transaction, an ordinary session."""
        if not self._autocommit_wanted:
            return self.session()
        if self._autocommit is None:
            engine = make_engine(self.engine.url.render_as_string(hide_password=False),
                                 pool_size=self.engine.pool.size(), autocommit=True)
            self._autocommit = sessionmaker(bind=engine, expire_on_commit=False,
                                            info={HUB_KEY: self.events, AUTOCOMMIT_KEY: True})
        return self._autocommit()

    def engines(self) -> list[Engine]:
        """The engines behind this database's pools."""
        return [self.engine] + ([self._autocommit.kw["bind"]] if self._autocommit is not None else [])

    def dispose(self) -> None:
        for engine in self.engines():
            engine.dispose()

    @contextmanager
    def session_scope(self) -> Iterator[Session]:
        """A session that is closed (and rolled back if uncommitted) when the block ends; a job opens its units of
        work on it (base/uow.py)."""
        session = self.session()
        try:
            yield session
        finally:
            session.close()

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """A session in one unit of work (base/uow.py): committed when the block ends, rolled back if it raises,
        then closed. For scripts (benchmarks) that call services outside the app."""
        with self.session_scope() as session, UnitOfWork(session):
            yield session


@contextmanager
def scratch_database(server_url: str, name: str) -> Iterator[str]:
    """A new, empty PostgreSQL database `name` on the server of `server_url`, dropped afterwards even if still
    connected to; yields its URL. For tests and benchmarks."""
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def dialect_insert(dialect: str) -> Any:
    """The dialect's own `insert` (the one with ON CONFLICT clauses): PostgreSQL's, else SQLite's. Build the
    statement once per dialect (`functools.cache`), not per execution."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def enum_column(enum_cls: type[enum.Enum], name: str) -> Enum:
    """A portable enum column: VARCHAR + CHECK holding the members' values."""
    return Enum(enum_cls, name=name, native_enum=False, create_constraint=True, length=20,
                values_callable=lambda members: [m.value for m in members], validate_strings=True)
