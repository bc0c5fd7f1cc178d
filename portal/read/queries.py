"""The read side's queries, their pages and cursors.

Every list is a Relay connection read in keyset pages: a cursor holds the sort keys of
the row it stands for, so the next page starts right after that row whatever was
inserted meanwhile, and costs one index range scan. A cursor is opaque to clients and
checked when it comes back: a cursor that is not ours, or one made for another order,
is a BAD_REQUEST naming the argument.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

import strawberry
from strawberry import relay

from adapters.read_store import MAX_PAGE, CaseFilter, CaseOrder
from domain.text import unprintable
from portal.errors import BadRequest
from portal.read.access import AUDIT_READERS, READERS, reader_for
from portal.read.types import (
    AUDITED_ENTITIES,
    NODE_TYPES,
    AuditRecord,
    Case,
    CaseStatus,
    Event,
    RiskAssessment,
    RiskBand,
    Subject,
)

N = TypeVar("N", bound=relay.Node)
R = TypeVar("R")

MAX_FILTER_VALUES = 10
MAX_FILTER_TEXT = 200
# The ranges of the integer columns a cursor holds a key of (priority, audit seq).
INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1


@strawberry.enum(description="The order of a list of cases.")
class CaseSort(Enum):
    PRIORITY = "priority"
    SLA_DUE = "sla_due"


@strawberry.input(description="Cases match every condition given; a list matches any value.")
class CaseFilterInput:
    status: list[CaseStatus] | None = None
    band: list[RiskBand] | None = None
    opened_from: datetime | None = strawberry.field(
        default=None, description="Opened at or after this time."
    )
    opened_before: datetime | None = strawberry.field(
        default=None, description="Opened before this time."
    )
    sla_breached: bool | None = strawberry.field(
        default=None, description="True: past their SLA due time and not closed."
    )
    queue: list[str] | None = None
    assignee: list[str] | None = strawberry.field(
        default=None, description="Cases held by any of these analysts."
    )
    unassigned: bool | None = strawberry.field(
        default=None, description="True: only cases nobody holds; false: only held ones."
    )


# -- cursors -------------------------------------------------------------------------


def encode_cursor(kind: str, keys: Sequence[Any]) -> str:
    plain = [kind, *(key.isoformat() if isinstance(key, datetime) else str(key) for key in keys)]
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode()


def decode_cursor(cursor: str, kind: str, parsers: Sequence[Callable[[str], Any]]) -> list[Any]:
    """The keys of a cursor of ``kind``; BAD_REQUEST for anything else."""
    try:
        plain = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        if not isinstance(plain, list) or len(plain) != len(parsers) + 1 or plain[0] != kind:
            raise ValueError("not a cursor of this list")
        return [parse(str(value)) for parse, value in zip(parsers, plain[1:], strict=True)]
    except (ValueError, TypeError, UnicodeError, binascii.Error, OverflowError) as error:
        raise BadRequest("the cursor is not valid for this list", field="after") from error


def _first(first: int) -> int:
    if not 1 <= first <= MAX_PAGE:
        raise BadRequest(f"first must be between 1 and {MAX_PAGE}", field="first")
    return first


def _timestamp(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("a cursor's time has an offset")
    # In UTC, as the driver sends it: a time that has none (past 9999 or before year 1
    # once its offset is taken off) raises OverflowError here, not in the driver.
    return moment.astimezone(UTC)


def _bounded(largest: int) -> Callable[[str], int]:
    """A parser of an integer key that the database's column can hold."""

    def parse(value: str) -> int:
        number = int(value)
        if not -largest - 1 <= number <= largest:
            raise ValueError("out of the column's range")
        return number

    return parse


def _moment(value: datetime | None, field: str) -> datetime | None:
    """A time argument the database can compare with: in UTC when it has an offset.
    Without one it is taken as UTC, as before."""
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError as error:
        raise BadRequest("a time between the years 1 and 9999 in UTC", field=field) from error


def _connection(
    rows: Sequence[R],
    first: int,
    after: str | None,
    node: Callable[[R], N],
    cursor: Callable[[R], str],
) -> relay.Connection[N]:
    """A page read with ``first + 1`` rows: the extra row only says there is more."""
    shown = rows[:first]
    edges = [relay.Edge(cursor=cursor(row), node=node(row)) for row in shown]
    return relay.Connection(
        edges=edges,
        page_info=relay.PageInfo(
            has_next_page=len(rows) > first,
            has_previous_page=after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
    )


# -- pages ---------------------------------------------------------------------------


async def case_page(
    info: strawberry.Info,
    first: int,
    after: str | None,
    filter: CaseFilterInput | None,
    sort: CaseSort,
) -> relay.Connection[Case]:
    reader = reader_for(info, READERS)
    limit = _first(first)
    order = CaseOrder(sort.value)
    kind = f"cases.{order.value}"
    key: Any = None
    if after is not None:
        if order is CaseOrder.PRIORITY:
            key = tuple(decode_cursor(after, kind, (_bounded(INT4_MAX), _timestamp, uuid.UUID)))
        else:
            key = tuple(decode_cursor(after, kind, (_timestamp, uuid.UUID)))
    where = _case_filter(filter or CaseFilterInput())
    rows = await reader.read(lambda store: store.cases(where, order, key, limit + 1))
    reader.prime_cases(rows)
    for row in rows[:limit]:
        reader.note_read("case", row.case_id, "cases")

    def cursor(row: Any) -> str:
        keys = (
            (row.priority, row.sla_due_at, row.case_id)
            if order is CaseOrder.PRIORITY
            else (row.sla_due_at, row.case_id)
        )
        return encode_cursor(kind, keys)

    return _connection(rows, limit, after, Case.of, cursor)


def _case_filter(given: CaseFilterInput) -> CaseFilter:
    lists: tuple[tuple[str, list[Any] | None], ...] = (
        ("status", given.status),
        ("band", given.band),
        ("queue", given.queue),
        ("assignee", given.assignee),
    )
    for name, values in lists:
        if values is not None and len(values) > MAX_FILTER_VALUES:
            raise BadRequest(
                f"at most {MAX_FILTER_VALUES} values in one filter", field=f"filter.{name}"
            )
    for name, texts in (("queue", given.queue), ("assignee", given.assignee)):
        if any(
            not 0 < len(text) <= MAX_FILTER_TEXT or unprintable(text, multiline=False)
            for text in texts or ()
        ):
            raise BadRequest(
                f"a {name} is 1 to {MAX_FILTER_TEXT} printable characters",
                field=f"filter.{name}",
            )
    return CaseFilter(
        statuses=sorted({status.value for status in given.status or ()}),
        bands=sorted({band.value for band in given.band or ()}),
        opened_from=_moment(given.opened_from, "filter.openedFrom"),
        opened_before=_moment(given.opened_before, "filter.openedBefore"),
        sla_breached=given.sla_breached,
        queues=sorted(set(given.queue or ())),
        assignees=sorted(set(given.assignee or ())),
        unassigned=given.unassigned,
    )


async def event_page(
    info: strawberry.Info,
    first: int,
    after: str | None,
    *,
    subject_id: uuid.UUID | None = None,
    occurred_from: datetime | None = None,
    occurred_before: datetime | None = None,
) -> relay.Connection[Event]:
    reader = reader_for(info, READERS)
    limit = _first(first)
    since = _moment(occurred_from, "occurredFrom")
    before = _moment(occurred_before, "occurredBefore")
    key: Any = None
    if after is not None:
        key = tuple(decode_cursor(after, "events", (_timestamp, uuid.UUID)))
    rows = await reader.read(lambda store: store.events(subject_id, since, before, key, limit + 1))
    return _connection(
        rows,
        limit,
        after,
        Event.of,
        lambda row: encode_cursor("events", (row.occurred_at, row.event_id)),
    )


async def assessment_page(
    info: strawberry.Info, subject_id: uuid.UUID, first: int, after: str | None
) -> relay.Connection[RiskAssessment]:
    reader = reader_for(info, READERS)
    limit = _first(first)
    key: Any = None
    if after is not None:
        key = tuple(decode_cursor(after, "assessments", (_timestamp, uuid.UUID)))
    rows = await reader.read(lambda store: store.assessments_of_subject(subject_id, key, limit + 1))
    for row in rows[:limit]:
        reader.note_read("assessment", row.assessment_id, "subject.assessments")
    return _connection(
        rows,
        limit,
        after,
        RiskAssessment.of,
        lambda row: encode_cursor("assessments", (row.scored_at, row.assessment_id)),
    )


async def audit_page(
    info: strawberry.Info, entity_type: str, entity_id: str, first: int, after: str | None
) -> relay.Connection[AuditRecord]:  # type: ignore[type-var]
    reader = reader_for(info, AUDIT_READERS)
    limit = _first(first)
    seq = None if after is None else int(decode_cursor(after, "audit", (_bounded(INT8_MAX),))[0])
    rows = await reader.read(
        lambda store: store.audit_trail(entity_type, entity_id, seq, limit + 1)
    )
    reader.note_read(entity_type, entity_id, "auditTrail")
    return _connection(  # type: ignore[type-var]
        rows, limit, after, AuditRecord.of, lambda row: encode_cursor("audit", (row.seq,))
    )


# -- the fields of Query -------------------------------------------------------------


async def _node_of(info: strawberry.Info, id: relay.GlobalID, wanted: str) -> Any:
    """The node an id names if it is of the type ``wanted`` and visible, else None."""
    if id.type_name != wanted:
        return None
    nodes = await NODE_TYPES[wanted].resolve_nodes(info=info, node_ids=[id.node_id])
    return next(iter(nodes), None)


@strawberry.type
class ReadQuery:
    @strawberry.field(description="Cases for review, in the order asked (analyst and up).")
    async def cases(
        self,
        info: strawberry.Info,
        first: int = 50,
        after: str | None = None,
        filter: CaseFilterInput | None = None,
        sort: CaseSort = CaseSort.PRIORITY,
    ) -> relay.Connection[Case]:
        return await case_page(info, first, after, filter, sort)

    @strawberry.field(description="One case, or null when there is none by this id.")
    async def case(self, info: strawberry.Info, id: relay.GlobalID) -> Case | None:
        found: Case | None = await _node_of(info, id, "Case")
        return found

    @strawberry.field(description="One subject with its events and assessments.")
    async def subject(self, info: strawberry.Info, id: relay.GlobalID) -> Subject | None:
        found: Subject | None = await _node_of(info, id, "Subject")
        return found

    @strawberry.field(description="One assessment with its explanation.")
    async def assessment(self, info: strawberry.Info, id: relay.GlobalID) -> RiskAssessment | None:
        found: RiskAssessment | None = await _node_of(info, id, "RiskAssessment")
        return found

    @strawberry.field(description="Events, newest first; of one subject when it is given.")
    async def events(
        self,
        info: strawberry.Info,
        first: int = 20,
        after: str | None = None,
        subject: relay.GlobalID | None = None,
        occurred_from: datetime | None = None,
        occurred_before: datetime | None = None,
    ) -> relay.Connection[Event]:
        subject_id = None
        if subject is not None:
            if subject.type_name != "Subject":
                raise BadRequest("subject must be the id of a Subject", field="subject")
            subject_id = _uuid(subject.node_id, "subject")
        return await event_page(
            info,
            first,
            after,
            subject_id=subject_id,
            occurred_from=occurred_from,
            occurred_before=occurred_before,
        )

    @strawberry.field(
        description="The audit records of a case, an event, an assessment or an alert, "
        "in the chain's order (supervisor, regulator, admin)."
    )
    async def audit_trail(
        self, info: strawberry.Info, of: relay.GlobalID, first: int = 20, after: str | None = None
    ) -> relay.Connection[AuditRecord]:  # type: ignore[type-var]
        reader_for(info, AUDIT_READERS)
        entity_type = AUDITED_ENTITIES.get(of.type_name)
        if entity_type is None:
            raise BadRequest(
                "of must be the id of a Case, Event, RiskAssessment or Alert", field="of"
            )
        entity_id = str(_uuid(of.node_id, "of"))
        return await audit_page(info, entity_type, entity_id, first, after)

    @strawberry.field(description="Any object by its id, or null.")
    async def node(self, info: strawberry.Info, id: relay.GlobalID) -> relay.Node | None:
        reader_for(info, READERS)
        if id.type_name not in NODE_TYPES:
            return None
        found: relay.Node | None = await _node_of(info, id, id.type_name)
        return found


def _uuid(value: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError as error:
        raise BadRequest("not a valid id", field=field) from error
