"""The ports through which the application layer reaches storage.

Adapters implement them for PostgreSQL; unit tests implement them in memory. A unit of
work is one transaction of one tenant: it rolls back unless :meth:`commit` was called.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self

from domain.audit import AuditEntry
from domain.case_notes import Comment, Evidence
from domain.case_policy import CasePolicy
from domain.case_workflow import Transition
from domain.cases import Case
from domain.events import EventDraft, SubjectFacts, SubjectRef
from domain.messages import OutboxMessage
from domain.review_queue import CaseFeed
from domain.scoring import ScoringStore


@dataclass(frozen=True, slots=True)
class NewEvent:
    event_id: uuid.UUID
    draft: EventDraft
    subject_id: uuid.UUID
    counterparty_id: uuid.UUID | None
    received_at: datetime
    door: str
    actor: str
    correlation_id: str | None


@dataclass(frozen=True, slots=True)
class KnownEvent:
    event_id: uuid.UUID
    payload_hash: bytes


class EventStore(Protocol):
    async def find_by_keys(self, keys: Sequence[str]) -> dict[str, KnownEvent]: ...

    async def insert(self, events: Sequence[NewEvent]) -> set[str]:
        """Insert events whose key is new; return the keys actually inserted."""
        ...


class SubjectStore(Protocol):
    async def upsert(self, facts: Sequence[SubjectFacts]) -> dict[SubjectRef, uuid.UUID]:
        """Create or update subjects, merging attributes; lock them until commit."""
        ...


class Inbox(Protocol):
    async def first_sight(self, consumer: str, message_id: str) -> bool:
        """Record a message as handled by a consumer; False when it was handled before."""
        ...

    async def first_sights(self, consumer: str, message_ids: Sequence[str]) -> set[str]:
        """Record messages as handled by a consumer; answer those not handled before."""
        ...


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """The first answer given to a client mutation id."""

    mutation: str
    answer: Mapping[str, Any]


class CaseStore(Protocol):
    async def policy(self) -> CasePolicy:
        """The tenant's case policy (the default one when it has set none)."""
        ...

    async def set_policy(self, document: Mapping[str, Any], actor: str) -> None: ...

    async def get(self, case_id: uuid.UUID) -> Case | None: ...

    async def next_open(self, queue: str | None) -> Case | None:
        """The open case to claim next (highest priority, then earliest due), locked
        until commit; cases other transactions hold are skipped."""
        ...

    async def save(self, case: Case, expected_version: int, now: datetime) -> bool:
        """Write the case if it is still at ``expected_version``; False when it is not.
        Raise the domain's errors for what the database's review guard refuses."""
        ...

    async def add_transition(self, transition: Transition) -> None: ...

    async def comment(self, comment_id: uuid.UUID) -> Comment | None:
        """The latest version of a comment."""
        ...

    async def add_comment(self, comment: Comment) -> None: ...

    async def add_evidence(self, item: Evidence) -> None: ...

    async def answer_for(self, actor: str, client_mutation_id: str) -> StoredAnswer | None:
        """The answer stored for this id; a call with the same id still running is
        waited for until its transaction ends."""
        ...

    async def remember(
        self,
        actor: str,
        client_mutation_id: str,
        mutation: str,
        case_id: uuid.UUID,
        answer: Mapping[str, Any],
    ) -> bool:
        """Store the answer to a client mutation id; False when one was stored first."""
        ...

    async def due_for_breach(self, now: datetime, max_rows: int) -> list[Case]:
        """Cases past their SLA and not flagged, locked; those others hold are skipped."""
        ...

    async def flag_breach(self, case: Case) -> bool:
        """Record ``case.sla_breached_at``; False when the case was flagged already."""
        ...


class UnitOfWork(Protocol):
    tenant_id: uuid.UUID
    events: EventStore
    subjects: SubjectStore
    inbox: Inbox
    scoring: ScoringStore
    cases: CaseStore
    case_feed: CaseFeed

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def record(self, entry: AuditEntry) -> None:
        """Append an audit entry; it is chained and written at commit."""
        ...

    def publish(self, message: OutboxMessage) -> None:
        """Add a message to the outbox; it is written at commit."""
        ...

    async def commit(self) -> None: ...


UnitOfWorkFactory = Callable[[uuid.UUID], UnitOfWork]


class IngestUnitOfWork(Protocol):
    """What ingesting events needs of a unit of work: a full :class:`UnitOfWork` is one,
    and so is the leaner one the doors use (``adapters.ingest_store``)."""

    tenant_id: uuid.UUID
    events: EventStore
    subjects: SubjectStore

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def record(self, entry: AuditEntry) -> None: ...

    def publish(self, message: OutboxMessage) -> None: ...

    async def commit(self) -> None: ...


IngestUnitOfWorkFactory = Callable[[uuid.UUID], IngestUnitOfWork]
