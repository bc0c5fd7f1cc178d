"""The GraphQL schema: who am I, the ingestion of compliance events, the read side
(:mod:`portal.read`): cases, subjects, events, assessments and audit trails, the review
of cases (:mod:`portal.case_mutations`), and the live review queue
(:mod:`portal.review_queue`).

An event's ``data`` is a JSON scalar on purpose: GraphQL checks only the envelope, and the
domain validates each event on its own (:func:`domain.events.parse_event`), so that one
bad event is answered with its own error, naming the field at fault, while the others of
the batch are stored. The codes are the same whichever door the event came through.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Annotated, Any

import strawberry
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry.litestar import BaseContext
from strawberry.scalars import JSON
from strawberry.types.arguments import InputContext
from strawberry.types.base import get_object_definition

from adapters.auth import Role
from adapters.metrics import EVENTS_INGESTED
from domain.ports import IngestUnitOfWorkFactory, UnitOfWorkFactory
from portal.auth import Identity, authenticated, authorize_write
from portal.case_mutations import CaseMutation
from portal.errors import BadRequest
from portal.live import Hub
from portal.read.queries import ReadQuery
from portal.read.reader import Reader
from portal.requests import correlation_id_of
from portal.resources import resources_of
from services.ingest import BatchTooLarge, Caller, IngestResult, Outcome, ingest_events

DOOR = "graphql"


class Context(BaseContext, kw_only=True):
    identity: Identity
    correlation_id: str
    uow_factory: UnitOfWorkFactory
    ingest_uow_factory: IngestUnitOfWorkFactory
    # Where an authenticated HTTP caller's reads go; the reader itself (a session and
    # nine DataLoaders) is made on the first read, so a request that reads nothing,
    # such as an ingest, never pays for it.
    reads_from: AsyncEngine | None = None
    made_reader: Reader | None = None
    hub: Hub
    catch_up_limit: int
    # What a WebSocket client sent in connection_init (strawberry sets it).
    connection_params: dict[str, object] | None = None

    @property
    def reader(self) -> Reader | None:
        """The request's reads (session and DataLoaders), for an authenticated caller."""
        principal = self.identity.principal
        if self.made_reader is None and self.reads_from is not None and principal is not None:
            self.made_reader = Reader(self.reads_from, principal, self.correlation_id)
        return self.made_reader


Info = strawberry.Info[Context, None]


async def context_of(request: ASGIConnection[Any, Any, Any, Any]) -> Context:
    """Strawberry's context for one request (a Litestar dependency)."""
    identity = request.scope.get("auth")
    if not isinstance(identity, Identity):
        identity = Identity(None)
    resources = resources_of(request.app.state)
    correlation_id = correlation_id_of(request)
    principal = identity.principal
    # A reader lives for one HTTP request: its session holds a transaction and its
    # loaders a cache, neither of which may last as long as a WebSocket.
    per_request = request.scope["type"] == ScopeType.HTTP
    return Context(
        identity=identity,
        correlation_id=correlation_id,
        uow_factory=resources.uow_factory,
        ingest_uow_factory=resources.ingest_uow_factory,
        hub=resources.hub,
        catch_up_limit=resources.settings.live_catch_up_limit,
        reads_from=resources.engine if principal is not None and per_request else None,
    )


@strawberry.type(description="The caller, as its bearer token describes it.")
class Viewer:
    subject: str
    tenant_id: strawberry.ID
    roles: list[str]


@strawberry.input(description="One compliance event, as an integration sends it.")
class EventInput:
    idempotency_key: str = strawberry.field(
        description="Unique per tenant; sending it again returns the first event."
    )
    type: str = strawberry.field(description="transaction or kyc.updated")
    occurred_at: str = strawberry.field(
        description="ISO 8601 date and time with its offset, such as 2026-03-01T09:30:00Z"
    )
    data: JSON = strawberry.field(description="The event's fields, validated per type.")

    def as_raw(self) -> dict[str, object]:
        return {
            "idempotencyKey": self.idempotency_key,
            "type": self.type,
            "occurredAt": self.occurred_at,
            "data": self.data,
        }


@strawberry.input
class IngestEventsInput:
    events: list[EventInput] = strawberry.field(
        description="1 to 1,000 events; any other number refuses the whole request "
        "(BAD_REQUEST, with extensions.field input.events)."
    )
    client_mutation_id: str | None = strawberry.field(
        default=None, description="Echoed in the payload."
    )


def _ingest_events_input(
    cls: type[IngestEventsInput], value: Mapping[str, Any], context: InputContext
) -> IngestEventsInput:
    """The input built straight from the value GraphQL has checked: its leaves are
    strings and a JSON scalar, which strawberry would hand over unchanged, but only after
    resolving every field's type again for each event (a tenth of a batch's time)."""
    return cls(
        events=[
            EventInput(
                idempotency_key=event["idempotencyKey"],
                type=event["type"],
                occurred_at=event["occurredAt"],
                data=event["data"],
            )
            for event in value["events"]
        ],
        client_mutation_id=value.get("clientMutationId"),
    )


get_object_definition(IngestEventsInput, strict=True).from_input = _ingest_events_input


@strawberry.type(description="Stored now, or earlier when `duplicate` is true.")
class EventAccepted:
    index: int = strawberry.field(description="The event's position in the batch.")
    event_id: strawberry.ID
    duplicate: bool


@strawberry.type(description="Refused; the other events of the batch are not affected.")
class EventRejected:
    index: int = strawberry.field(description="The event's position in the batch.")
    code: str = strawberry.field(description="Machine-readable, such as INVALID_AMOUNT.")
    field: str = strawberry.field(description="Dotted path into the event, such as data.amount.")
    message: str


EventResult = Annotated[EventAccepted | EventRejected, strawberry.union("IngestResult")]


def _results(root: IngestEventsPayload) -> list[EventResult]:
    # Made when asked for: a client may want only the counts.
    return [_answer(result) for result in root.outcomes]


@strawberry.type
class IngestEventsPayload:
    client_mutation_id: str | None
    results: list[EventResult] = strawberry.field(
        resolver=_results, description="One per event, in order."
    )
    accepted_count: int = strawberry.field(description="Events stored by this request.")
    duplicate_count: int = strawberry.field(description="Events stored before.")
    rejected_count: int
    outcomes: strawberry.Private[list[IngestResult]]


def resolve_viewer(info: Info) -> Viewer:
    principal = authenticated(info.context.identity)
    return Viewer(
        subject=principal.subject,
        tenant_id=strawberry.ID(str(principal.tenant_id)),
        roles=sorted(role.value for role in principal.roles),
    )


async def resolve_ingest_events(info: Info, input: IngestEventsInput) -> IngestEventsPayload:
    principal = authorize_write(info.context.identity, Role.INGEST)
    caller = Caller(
        tenant_id=principal.tenant_id,
        actor=principal.subject,
        door=DOOR,
        correlation_id=info.context.correlation_id,
    )
    try:
        results = await ingest_events(
            info.context.ingest_uow_factory, caller, [event.as_raw() for event in input.events]
        )
    except BatchTooLarge as error:
        raise BadRequest(error.message, field="input.events") from error

    counts = Counter(result.outcome for result in results)
    for outcome, count in counts.items():
        EVENTS_INGESTED.labels(door=DOOR, outcome=outcome.value.lower()).inc(count)
    return IngestEventsPayload(
        client_mutation_id=input.client_mutation_id,
        outcomes=results,
        accepted_count=counts[Outcome.ACCEPTED],
        duplicate_count=counts[Outcome.DUPLICATE],
        rejected_count=counts[Outcome.REJECTED],
    )


@strawberry.type
class Query(ReadQuery):
    viewer: Viewer = strawberry.field(
        resolver=resolve_viewer, description="The caller of this request."
    )


@strawberry.type
class Mutation(CaseMutation):
    ingest_events: IngestEventsPayload = strawberry.mutation(
        resolver=resolve_ingest_events,
        description="Store compliance events; each is answered on its own.",
    )


def _answer(result: IngestResult) -> EventAccepted | EventRejected:
    if result.rejection is not None:
        return EventRejected(
            index=result.index,
            code=result.rejection.code,
            field=result.rejection.field,
            message=result.rejection.message,
        )
    if result.event_id is None:
        raise RuntimeError("an accepted event without an id")
    return EventAccepted(
        index=result.index,
        event_id=strawberry.ID(str(result.event_id)),
        duplicate=result.outcome is Outcome.DUPLICATE,
    )
