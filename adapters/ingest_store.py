"""Ingest's unit of work on the driver itself: the same transaction, rows and sealing as
:class:`adapters.unit_of_work.SqlUnitOfWork`, with less in the way.

Ingest is the hottest write path, and most of a small transaction's cost was the
layers around the statements rather than the statements: SQLAlchemy's execution
machinery and greenlet hops for each of them, and one round trip each for BEGIN and
the tenant setting. Here the connection is borrowed from the same SQLAlchemy pool (so
its size, timeout and recycling still apply), and its asyncpg connection is used
directly: BEGIN and ``set_config`` of the tenant go to the server in one message
(the simple query protocol, the tenant id written from a ``uuid.UUID``, so never from
text a caller chose), and every other statement is prepared once per connection by
asyncpg's statement cache, its rows passed as one array per column.

The transaction is ours, not SQLAlchemy's, so it is ended here on every path: rolled
back unless committed, and a connection whose state is unknown after a failure is
invalidated rather than returned to the pool.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters import audit_trail
from adapters.database import json_text, positional, translate_errors
from adapters.unit_of_work import EVENTS_SQL, OUTBOX_ROWS_SQL, SUBJECTS_SQL
from domain.audit import AuditEntry
from domain.canonical import plain_json
from domain.errors import TransientFailure, UnknownTenant
from domain.events import SubjectFacts, SubjectKind, SubjectRef
from domain.ids import new_ids
from domain.messages import OutboxMessage, cloud_events
from domain.ports import KnownEvent, NewEvent

log = logging.getLogger(__name__)

_FOREIGN_KEY_VIOLATION = "23503"

_FIND_BY_KEYS = """
SELECT idempotency_key, event_id, payload_hash FROM events
WHERE tenant_id = $1 AND idempotency_key = ANY($2::text[])
"""

# The statements of adapters.unit_of_work, in asyncpg's positional form.
_EVENT_PARAMETERS = (
    "tenant_id",
    "received_at",
    "door",
    "actor",
    "correlation_id",
    "event_ids",
    "keys",
    "types",
    "occurred",
    "subject_ids",
    "counterparty_ids",
    "amounts",
    "currencies",
    "payloads",
    "hashes",
)
_INSERT_EVENTS = positional(EVENTS_SQL, _EVENT_PARAMETERS)
_UPSERT_SUBJECTS = positional(
    SUBJECTS_SQL,
    ("tenant_id", "now", "subject_ids", "kinds", "refs", "attributes", "attributes_at"),
)
_OUTBOX_PARAMETERS = ("tenant_id", "message_ids", "ordering_keys", "message_types", "envelopes")
_SEAL_PARAMETERS = (
    "record_ids",
    "actors",
    "actions",
    "entity_types",
    "entity_ids",
    "correlation_ids",
    "details",
)
_OUTBOX_ROWS = positional(OUTBOX_ROWS_SQL, _OUTBOX_PARAMETERS)
# The outbox rows and the audit entries in one round trip; the entries are sealed onto
# the tenant's chain by the commit that follows.
_OUTBOX_AND_SEAL = positional(
    f"WITH outbox_rows AS ({OUTBOX_ROWS_SQL}) {audit_trail.APPEND_SQL}",
    _OUTBOX_PARAMETERS + _SEAL_PARAMETERS,
)
_SEAL_ALONE = positional(audit_trail.APPEND_SQL, _SEAL_PARAMETERS)


# SubjectKind(value), without the enum's call machinery for each row.
_KINDS = {kind.value: kind for kind in SubjectKind}


def _details(details: Mapping[str, Any]) -> str:
    """An audit record's details as JSON. The database hashes them in its own jsonb
    form, so the spelling is free; a value other than a string (ingest writes only
    strings) goes through plain_json, which refuses what cannot be hashed the same way
    twice."""
    if all(type(value) is str for value in details.values()):
        return json_text(details)
    return plain_json(details)


def _begin(tenant_id: uuid.UUID) -> str:
    """BEGIN and the tenant setting as one simple-protocol message. The id is formatted
    from a ``uuid.UUID`` (hex digits and dashes only), never from caller text."""
    if not isinstance(tenant_id, uuid.UUID):
        raise TypeError("the tenant id must be a UUID")
    return f"BEGIN; SELECT set_config('vigil.tenant_id', '{tenant_id}', true)"


class AsyncpgEventStore:
    def __init__(self, connection: asyncpg.Connection, tenant_id: uuid.UUID) -> None:
        self._connection = connection
        self._tenant_id = tenant_id

    async def find_by_keys(self, keys: Sequence[str]) -> dict[str, KnownEvent]:
        if not keys:
            return {}
        with _statement(self._connection):
            rows = await self._connection.fetch(_FIND_BY_KEYS, self._tenant_id, list(keys))
        return {
            row["idempotency_key"]: KnownEvent(row["event_id"], bytes(row["payload_hash"]))
            for row in rows
        }

    async def insert(self, events: Sequence[NewEvent]) -> set[str]:
        if not events:
            return set()
        first = events[0]
        if any(
            (event.received_at, event.door, event.actor, event.correlation_id)
            != (first.received_at, first.door, first.actor, first.correlation_id)
            for event in events
        ):
            raise ValueError("the events of one insert come from one caller at one moment")
        drafts = [event.draft for event in events]
        with _statement(self._connection):
            rows = await self._connection.fetch(
                _INSERT_EVENTS,
                self._tenant_id,
                first.received_at,
                first.door,
                first.actor,
                first.correlation_id,
                [event.event_id for event in events],
                [draft.idempotency_key for draft in drafts],
                [draft.event_type.value for draft in drafts],
                [draft.occurred_at for draft in drafts],
                [event.subject_id for event in events],
                [event.counterparty_id for event in events],
                [draft.amount for draft in drafts],
                [draft.currency for draft in drafts],
                [json_text(draft.payload) for draft in drafts],
                [draft.payload_hash for draft in drafts],
            )
        return {row["idempotency_key"] for row in rows}


class AsyncpgSubjectStore:
    def __init__(self, connection: asyncpg.Connection, tenant_id: uuid.UUID) -> None:
        self._connection = connection
        self._tenant_id = tenant_id

    async def upsert(self, facts: Sequence[SubjectFacts]) -> dict[SubjectRef, uuid.UUID]:
        if not facts:
            return {}
        now = datetime.now(UTC)
        try:
            with _statement(self._connection):
                rows = await self._connection.fetch(
                    _UPSERT_SUBJECTS,
                    self._tenant_id,
                    now,
                    new_ids(len(facts)),
                    [fact.subject.kind.value for fact in facts],
                    [fact.subject.ref for fact in facts],
                    [json_text(fact.attributes) for fact in facts],
                    [fact.as_of or now for fact in facts],
                )
        except asyncpg.ForeignKeyViolationError as error:
            raise UnknownTenant("no such tenant") from error
        return {
            SubjectRef(_KINDS.get(row["kind"]) or SubjectKind(row["kind"]), row["external_ref"]): (
                row["subject_id"]
            )
            for row in rows
        }


class IngestUnitOfWork:
    """One ingest transaction of one tenant (:class:`domain.ports.IngestUnitOfWork`)."""

    def __init__(self, engine: AsyncEngine, tenant_id: uuid.UUID) -> None:
        self._engine = engine
        self.tenant_id = tenant_id
        self._pooled: AsyncConnection | None = None
        self._connection: asyncpg.Connection | None = None
        self._entries: list[AuditEntry] = []
        self._messages: list[OutboxMessage] = []
        self._committed = False

    async def __aenter__(self) -> Self:
        begin = _begin(self.tenant_id)
        with translate_errors():
            pooled = await self._engine.connect()
            connection: asyncpg.Connection | None = None
            try:
                raw = await pooled.get_raw_connection()
                driver = raw.driver_connection
                if not isinstance(driver, asyncpg.Connection):
                    raise TypeError("the engine does not use asyncpg")
                connection = driver
                with _statement(connection):
                    await connection.execute(begin)
            except BaseException as error:
                await _discard(pooled, connection, error)
                raise
        self._pooled, self._connection = pooled, connection
        self.events = AsyncpgEventStore(connection, self.tenant_id)
        self.subjects = AsyncpgSubjectStore(connection, self.tenant_id)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pooled, self._pooled = self._pooled, None
        connection, self._connection = self._connection, None
        if pooled is None or connection is None:
            return
        if self._committed and not connection.is_in_transaction():
            await pooled.close()
            return
        await _discard(pooled, connection, exc)

    def record(self, entry: AuditEntry) -> None:
        self._entries.append(entry)

    def publish(self, message: OutboxMessage) -> None:
        self._messages.append(message)

    async def commit(self) -> None:
        connection = self._connection
        if connection is None:
            raise RuntimeError("the unit of work is not open")
        try:
            with _statement(connection):
                await self._write_outbox_and_audit(connection)
                await connection.execute("COMMIT")
        except asyncpg.ForeignKeyViolationError as error:
            raise UnknownTenant("no such tenant") from error
        self._committed = True

    async def _write_outbox_and_audit(self, connection: asyncpg.Connection) -> None:
        messages = self._messages
        outbox: list[Any] = [
            self.tenant_id,
            [message.message_id for message in messages],
            [message.ordering_key for message in messages],
            [message.message_type for message in messages],
            [json_text(envelope) for envelope in cloud_events(self.tenant_id, messages)],
        ]
        entries = self._entries
        seal: list[Any] = [
            [entry.record_id for entry in entries],
            [entry.actor for entry in entries],
            [entry.action for entry in entries],
            [entry.entity_type for entry in entries],
            [entry.entity_id for entry in entries],
            [entry.correlation_id for entry in entries],
            [_details(entry.details) for entry in entries],
        ]
        if entries and messages:
            await connection.execute(_OUTBOX_AND_SEAL, *outbox, *seal)
        elif entries:
            await connection.execute(_SEAL_ALONE, *seal)
        elif messages:
            await connection.execute(_OUTBOX_ROWS, *outbox)


async def _discard(
    pooled: AsyncConnection, connection: asyncpg.Connection | None, error: BaseException | None
) -> None:
    """Roll back what is open and give the connection back. A connection that cannot
    be brought back to a known state is invalidated (closed, never reused): one whose
    rollback failed, and one left by a cancellation, which may have interrupted a
    statement in flight (the next user would find the protocol busy), and one that
    failed transiently, which may have been lost (a fresh one costs little, and such
    failures are rare)."""
    reusable = error is None or (
        isinstance(error, Exception) and not isinstance(error, TransientFailure)
    )
    try:
        if reusable and connection is not None and not connection.is_closed():
            if connection.is_in_transaction():
                await connection.execute("ROLLBACK")
            await pooled.close()
            return
    except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError):
        log.warning("rolling back an ingest transaction failed; dropping its connection")
    except BaseException:
        await _invalidate(pooled)
        raise
    await _invalidate(pooled)


async def _invalidate(pooled: AsyncConnection) -> None:
    await pooled.invalidate()
    await pooled.close()


@contextlib.contextmanager
def _statement(connection: asyncpg.Connection) -> Iterator[None]:
    """Driver errors worth a retry become TransientFailure, as elsewhere; so does a
    connection the server ended between two statements, which asyncpg reports as
    closed, or, when the notice arrives as the next statement starts, as a protocol
    busy with another operation. Either way the connection is then dropped."""
    try:
        with translate_errors():
            yield
    except asyncpg.InternalClientError as error:
        raise TransientFailure("the database connection is in an unknown state") from error
    except asyncpg.InterfaceError as error:
        if connection.is_closed():
            raise TransientFailure("the database connection was closed") from error
        raise


def ingest_unit_of_work_factory(engine: AsyncEngine) -> Any:
    def factory(tenant_id: uuid.UUID) -> IngestUnitOfWork:
        return IngestUnitOfWork(engine, tenant_id)

    return factory
