"""Ingest compliance events: validate, then store each new event with its subjects, its
audit record and its ``event.received`` message in one transaction."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from domain.audit import AuditEntry
from domain.errors import IdempotencyConflict, InvalidEvent, TransientFailure
from domain.events import EventDraft, SubjectFacts, parse_event
from domain.ids import new_ids
from domain.messages import EVENT_RECEIVED, OutboxMessage
from domain.ports import IngestUnitOfWork, IngestUnitOfWorkFactory, KnownEvent, NewEvent
from services.retry import with_retries

log = logging.getLogger(__name__)

MAX_BATCH = 1000


class Outcome(StrEnum):
    ACCEPTED = "ACCEPTED"
    DUPLICATE = "DUPLICATE"
    REJECTED = "REJECTED"


@dataclass(frozen=True, slots=True)
class Rejection:
    code: str
    field: str
    message: str


@dataclass(frozen=True, slots=True)
class IngestResult:
    index: int
    outcome: Outcome
    event_id: uuid.UUID | None = None
    rejection: Rejection | None = None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sends the events, through which door, on behalf of which tenant."""

    tenant_id: uuid.UUID
    actor: str
    door: str
    correlation_id: str | None = None


class BatchTooLarge(InvalidEvent):
    def __init__(self, size: int) -> None:
        super().__init__(
            "BATCH_SIZE", "events", f"send 1 to {MAX_BATCH} events at a time, not {size}"
        )


async def ingest_events(
    uow_factory: IngestUnitOfWorkFactory,
    caller: Caller,
    raw_events: Sequence[object],
    *,
    now: datetime | None = None,
) -> list[IngestResult]:
    """Answer each event on its own: accepted, a duplicate of an earlier one, or rejected."""
    if not 1 <= len(raw_events) <= MAX_BATCH:
        raise BatchTooLarge(len(raw_events))
    moment = now or datetime.now(UTC)

    results: dict[int, IngestResult] = {}
    drafts: dict[int, EventDraft] = {}
    for index, raw in enumerate(raw_events):
        try:
            drafts[index] = parse_event(raw, now=moment)
        except InvalidEvent as error:
            results[index] = _rejected(index, error.code, error.field, error.message)

    if drafts:
        stored = await with_retries(
            lambda: _store(uow_factory, caller, drafts, moment), name="ingest_events"
        )
        results.update(stored)
    return [results[index] for index in range(len(raw_events))]


class _SeenBefore(Exception):
    """A key of the batch was stored before: answer the batch on the checked path."""


async def _store(
    uow_factory: IngestUnitOfWorkFactory,
    caller: Caller,
    drafts: dict[int, EventDraft],
    now: datetime,
) -> dict[int, IngestResult]:
    """Store the batch assuming every key is new, the usual case, which saves looking
    the keys up first; if one was seen before, the transaction is rolled back (so a
    conflicting payload touches nothing) and the batch is answered after a look-up."""
    try:
        return await _store_checked(uow_factory, caller, drafts, now, look_up=False)
    except _SeenBefore:
        return await _store_checked(uow_factory, caller, drafts, now, look_up=True)


async def _store_checked(
    uow_factory: IngestUnitOfWorkFactory,
    caller: Caller,
    drafts: dict[int, EventDraft],
    now: datetime,
    *,
    look_up: bool,
) -> dict[int, IngestResult]:
    results: dict[int, IngestResult] = {}
    async with uow_factory(caller.tenant_id) as uow:
        keys = sorted({draft.idempotency_key for draft in drafts.values()})
        originals = await uow.events.find_by_keys(keys) if look_up else {}

        fresh: dict[str, tuple[int, EventDraft]] = {}
        repeats: list[tuple[int, EventDraft]] = []
        for index, draft in drafts.items():
            key = draft.idempotency_key
            if key in originals or key in fresh:
                repeats.append((index, draft))
            else:
                fresh[key] = (index, draft)

        new_events = await _write(
            uow, caller, [draft for _, draft in fresh.values()], now, looked_up=look_up
        )
        for event in new_events:
            key = event.draft.idempotency_key
            originals[key] = KnownEvent(event.event_id, event.draft.payload_hash)
            results[fresh[key][0]] = IngestResult(fresh[key][0], Outcome.ACCEPTED, event.event_id)
        for index, draft in repeats:
            results[index] = _repeat(index, draft, originals[draft.idempotency_key])
        await uow.commit()

    if not log.isEnabledFor(logging.DEBUG):
        # Building each event's fields costs more than the rest of its answer.
        return results
    for event in new_events:
        log.debug(
            "event accepted",
            extra={
                "tenant_id": str(caller.tenant_id),
                "event_id": str(event.event_id),
                "event_type": event.draft.event_type.value,
                "subject": event.draft.primary.masked(),
            },
        )
    return results


async def _write(
    uow: IngestUnitOfWork,
    caller: Caller,
    drafts: list[EventDraft],
    now: datetime,
    *,
    looked_up: bool,
) -> list[NewEvent]:
    if not drafts:
        return []
    facts = _merged_facts(drafts)
    subject_ids = await uow.subjects.upsert(facts)

    new_events = [
        NewEvent(
            event_id=event_id,
            draft=draft,
            subject_id=subject_ids[draft.primary],
            counterparty_id=subject_ids[draft.counterparty] if draft.counterparty else None,
            received_at=now,
            door=caller.door,
            actor=caller.actor,
            correlation_id=caller.correlation_id,
        )
        for event_id, draft in zip(
            new_ids(len(drafts)), sorted(drafts, key=lambda d: d.idempotency_key), strict=True
        )
    ]
    inserted = await uow.events.insert(new_events)
    if len(inserted) != len(new_events):
        if not looked_up:
            raise _SeenBefore
        # Another transaction stored one of these keys after we looked: start again, and
        # the look-up will then answer it as a duplicate or a conflict.
        raise TransientFailure("an idempotency key was stored concurrently")

    count = len(new_events)
    for event, record_id, message_id in zip(
        new_events, new_ids(count), new_ids(count), strict=True
    ):
        # Each written twice below: made into text once.
        event_id, subject_id = str(event.event_id), str(event.subject_id)
        uow.record(_audit_entry(caller, event, record_id, event_id, subject_id))
        uow.publish(_received_message(event, message_id, event_id, subject_id))
    return new_events


def _merged_facts(drafts: list[EventDraft]) -> list[SubjectFacts]:
    """One entry per subject, later events' attributes winning, in a stable order so that
    concurrent batches lock subjects in the same order."""
    merged: dict[tuple[str, str], SubjectFacts] = {}
    for draft in sorted(drafts, key=lambda d: d.occurred_at):
        for fact in draft.facts:
            key = (fact.subject.kind.value, fact.subject.ref)
            before = merged.get(key)
            merged[key] = (
                SubjectFacts(fact.subject, {**before.attributes, **fact.attributes}, fact.as_of)
                if before
                else fact
            )
    return [merged[key] for key in sorted(merged)]


def _audit_entry(
    caller: Caller, event: NewEvent, record_id: uuid.UUID, event_id: str, subject_id: str
) -> AuditEntry:
    return AuditEntry(
        record_id=record_id,
        actor=caller.actor,
        action="event.accepted",
        entity_type="event",
        entity_id=event_id,
        correlation_id=caller.correlation_id,
        details={
            "door": caller.door,
            "eventType": event.draft.event_type.value,
            "idempotencyKey": event.draft.idempotency_key,
            "payloadHash": event.draft.payload_hash.hex(),
            "subjectId": subject_id,
        },
    )


def _received_message(
    event: NewEvent, message_id: uuid.UUID, event_id: str, subject_id: str
) -> OutboxMessage:
    draft = event.draft
    data: dict[str, object] = {
        "eventId": event_id,
        "eventType": draft.event_type.value,
        "occurredAt": draft.payload["occurredAt"],
        "subjectId": subject_id,
    }
    if event.counterparty_id is not None:
        data["counterpartyId"] = str(event.counterparty_id)
    if draft.amount is not None and draft.currency is not None:
        data["amount"] = str(draft.amount)
        data["currency"] = draft.currency
    return OutboxMessage(
        message_id=message_id,
        message_type=EVENT_RECEIVED,
        subject=f"event/{event_id}",
        ordering_key=event.subject_id,
        time=event.received_at,
        data=data,
        correlation_id=event.correlation_id,
    )


def _repeat(index: int, draft: EventDraft, original: KnownEvent) -> IngestResult:
    if original.payload_hash != draft.payload_hash:
        conflict = IdempotencyConflict(draft.idempotency_key)
        return _rejected(index, conflict.code, "idempotencyKey", conflict.message)
    return IngestResult(index, Outcome.DUPLICATE, original.event_id)


def _rejected(index: int, code: str, field: str, message: str) -> IngestResult:
    return IngestResult(index, Outcome.REJECTED, rejection=Rejection(code, field, message))
