"""The ports through which the application layer reaches storage.

Adapters implement them for PostgreSQL; unit tests implement them in memory. A unit of
work is one transaction of one tenant: it rolls back unless :meth:`commit` was called.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from domain.audit import AuditEntry
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


class UnitOfWork(Protocol):
    tenant_id: uuid.UUID
    events: EventStore
    subjects: SubjectStore
    inbox: Inbox
    scoring: ScoringStore
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
