"""In-memory implementations of the domain's ports, for unit tests of services."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from domain.audit import GENESIS, AuditEntry, AuditRecord, seal
from domain.events import SubjectFacts, SubjectRef
from domain.ids import new_id
from domain.messages import OutboxMessage
from domain.ports import KnownEvent, NewEvent


@dataclass
class FakeStore:
    """What a committed database would hold, for one tenant."""

    events: dict[str, NewEvent] = field(default_factory=dict)
    subjects: dict[SubjectRef, tuple[uuid.UUID, dict[str, object]]] = field(default_factory=dict)
    audit: list[AuditRecord] = field(default_factory=list)
    outbox: list[OutboxMessage] = field(default_factory=list)
    inbox: set[tuple[str, str]] = field(default_factory=set)
    commits: int = 0


class FakeEvents:
    def __init__(self, store: FakeStore, staged: dict[str, NewEvent]) -> None:
        self._store = store
        self._staged = staged

    async def find_by_keys(self, keys: Sequence[str]) -> dict[str, KnownEvent]:
        return {
            key: KnownEvent(event.event_id, event.draft.payload_hash)
            for key, event in self._store.events.items()
            if key in keys
        }

    async def insert(self, events: Sequence[NewEvent]) -> set[str]:
        inserted = set()
        for event in events:
            key = event.draft.idempotency_key
            if key not in self._store.events and key not in self._staged:
                self._staged[key] = event
                inserted.add(key)
        return inserted


class FakeSubjects:
    def __init__(self, store: FakeStore) -> None:
        self._store = store

    async def upsert(self, facts: Sequence[SubjectFacts]) -> dict[SubjectRef, uuid.UUID]:
        ids = {}
        for fact in facts:
            subject_id, attributes = self._store.subjects.get(fact.subject, (new_id(), {}))
            self._store.subjects[fact.subject] = (subject_id, {**attributes, **fact.attributes})
            ids[fact.subject] = subject_id
        return ids


class FakeInbox:
    def __init__(self, store: FakeStore) -> None:
        self._store = store

    async def first_sight(self, consumer: str, message_id: str) -> bool:
        if (consumer, message_id) in self._store.inbox:
            return False
        self._store.inbox.add((consumer, message_id))
        return True

    async def first_sights(self, consumer: str, message_ids: Sequence[str]) -> set[str]:
        return {
            message_id
            for message_id in dict.fromkeys(message_ids)
            if await self.first_sight(consumer, message_id)
        }


class FakeUnitOfWork:
    def __init__(self, store: FakeStore, tenant_id: uuid.UUID) -> None:
        self.tenant_id = tenant_id
        self._store = store
        self._staged: dict[str, NewEvent] = {}
        self._entries: list[AuditEntry] = []
        self._messages: list[OutboxMessage] = []
        self.events = FakeEvents(store, self._staged)
        self.subjects = FakeSubjects(store)
        self.inbox = FakeInbox(store)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._staged.clear()

    def record(self, entry: AuditEntry) -> None:
        self._entries.append(entry)

    def publish(self, message: OutboxMessage) -> None:
        self._messages.append(message)

    async def commit(self) -> None:
        last = self._store.audit[-1] if self._store.audit else None
        self._store.audit += seal(
            self.tenant_id,
            self._entries,
            last_seq=last.seq if last else 0,
            last_hash=last.hash if last else GENESIS,
            recorded_at=datetime.now(UTC),
        )
        self._store.events.update(self._staged)
        self._store.outbox += self._messages
        self._store.commits += 1
