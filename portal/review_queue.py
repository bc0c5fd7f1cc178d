"""The ``reviewQueue`` subscription: a tenant's case changes, live, over
``graphql-transport-ws``.

Who may watch: analysts and supervisors, who work the queues. Regulators are left out on
purpose: their reads are audited one by one, which a stream of every change does not
fit; they read cases through queries. The caller's token is checked when the connection
is initialised (:func:`portal.auth.authenticate_connection`), again when the
subscription starts, and again before each item is sent, so a token that expires ends
the stream with ``UNAUTHENTICATED`` even while nothing changes.

Every item has a cursor. A client that comes back with ``after: <cursor>`` is sent what
it missed (up to ``live_catch_up_limit`` changes, else a resync), then the live changes,
with none twice at the seam: the subscriber joins the hub before the catch-up is read,
and changes at or before the last position sent are skipped.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, TypeVar, cast

import strawberry
from strawberry import relay
from strawberry.scalars import JSON

from adapters.auth import Principal, Role
from domain.review_queue import CaseChange, Cursor, InvalidCursor, ReviewFilter
from portal.auth import EXPIRED, Identity, authenticated
from portal.errors import BadRequest, Forbidden, Unauthenticated
from portal.live import Resync
from portal.read.types import CaseStatus, RiskBand
from portal.schema import Info
from services.review_queue import catch_up

E = TypeVar("E", bound=Enum)

log = logging.getLogger(__name__)

REVIEW_ROLES = (Role.ANALYST, Role.SUPERVISOR)
MAX_FILTER_VALUES = 20
MAX_FILTER_LENGTH = 100


def authorize_review(identity: Identity, tenant_id: uuid.UUID | None = None) -> Principal:
    """The caller, if its token is still valid, holds a reviewing role, and (when given)
    belongs to ``tenant_id``."""
    principal = authenticated(identity)
    if principal.expires_at <= datetime.now(UTC):
        raise Unauthenticated(EXPIRED)
    if not any(principal.has(role) for role in REVIEW_ROLES):
        raise Forbidden("this operation needs the analyst or supervisor role")
    if tenant_id is not None and principal.tenant_id != tenant_id:
        raise Forbidden("this change belongs to another tenant")
    return principal


@strawberry.input(description="Only changes whose fields hold one of the values given.")
class ReviewQueueFilter:
    bands: list[RiskBand] | None = None
    statuses: list[CaseStatus] | None = None
    queues: list[str] | None = None
    assignees: list[str] | None = None

    def as_domain(self) -> ReviewFilter:
        return ReviewFilter(
            bands=_values("filter.bands", _names(self.bands)),
            statuses=_values("filter.statuses", _names(self.statuses)),
            queues=_values("filter.queues", self.queues),
            assignees=_values("filter.assignees", self.assignees),
        )


def _names(values: list[RiskBand] | list[CaseStatus] | None) -> list[str] | None:
    return None if values is None else [value.value for value in values]


def _values(field: str, values: list[str] | None) -> frozenset[str]:
    if values is None:
        return frozenset()
    if len(values) > MAX_FILTER_VALUES or any(len(v) > MAX_FILTER_LENGTH for v in values):
        raise BadRequest(
            f"at most {MAX_FILTER_VALUES} values of at most {MAX_FILTER_LENGTH} characters",
            field=field,
        )
    return frozenset(values)


@strawberry.type(description="A case was opened, updated, assigned ... (see `type`).")
class CaseChanged:
    cursor: str = strawberry.field(description="Send it back as `after` to resume here.")
    type: str = strawberry.field(description="case.opened, case.updated, case.assigned ...")
    case_id: strawberry.ID = strawberry.field(
        description="The case's global id, as `case(id:)` and the review mutations take it."
    )
    recorded_at: datetime
    status: CaseStatus | None
    band: RiskBand | None
    priority: int | None
    queue: str | None
    assignee: str | None
    version: int | None
    sla_due_at: str | None
    data: JSON = strawberry.field(description="Every field the change carries.")

    @classmethod
    def of(cls, change: CaseChange) -> CaseChanged:
        return cls(
            cursor=change.cursor.encode(),
            type=change.change_type,
            case_id=strawberry.ID(relay.to_base64("Case", change.case_id)),
            recorded_at=change.recorded_at,
            status=_member(CaseStatus, change.text("status")),
            band=_member(RiskBand, change.text("band")),
            priority=_integer(change.data.get("priority")),
            queue=change.text("queue"),
            assignee=change.text("assignee"),
            version=_integer(change.data.get("version")),
            sla_due_at=change.text("slaDueAt"),
            data=cast(JSON, dict(change.data)),
        )


def _member(kind: type[E], value: str | None) -> E | None:
    """The enum member of a value a message carries; None for one this code does not know."""
    try:
        return None if value is None else kind(value)
    except ValueError:
        return None


@strawberry.type(
    description="Changes up to `cursor` were not sent: reload the queue; the stream goes "
    "on after `cursor`."
)
class ReviewQueueResync:
    cursor: str
    reason: str


ReviewQueueItem = Annotated[CaseChanged | ReviewQueueResync, strawberry.union("ReviewQueueItem")]


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _resync(cursor: Cursor, reason: str) -> ReviewQueueResync:
    return ReviewQueueResync(cursor=cursor.encode(), reason=reason)


async def watch(
    info: Info, filter: ReviewQueueFilter | None = None, after: str | None = None
) -> AsyncGenerator[ReviewQueueItem, None]:
    context = info.context
    principal = authorize_review(context.identity)
    tenant_id = principal.tenant_id
    wanted = filter.as_domain() if filter is not None else ReviewFilter()
    try:
        start = Cursor.decode(after) if after is not None else None
    except InvalidCursor as error:
        raise BadRequest(error.message, field="after") from error

    log.info("review queue subscribed", extra={"tenant_id": str(tenant_id), "resumed": bool(after)})
    async with context.hub.subscription(tenant_id) as (subscriber, joined):
        last = joined.position
        if start is not None:
            try:
                missed = await catch_up(
                    context.uow_factory, tenant_id, start, limit=context.catch_up_limit
                )
            except InvalidCursor as error:
                raise BadRequest(error.message, field="after") from error
            if missed.complete:
                for change in missed.changes:
                    authorize_review(context.identity, tenant_id)
                    if wanted.matches(change):
                        yield CaseChanged.of(change)
            else:
                authorize_review(context.identity, tenant_id)
                yield _resync(missed.head, "more changes were missed than are replayed")
            last = missed.head.position

        while True:
            seconds_left = (principal.expires_at - datetime.now(UTC)).total_seconds()
            item = await subscriber.next(within=seconds_left)
            authorize_review(context.identity, tenant_id)
            if item is None:
                continue
            if isinstance(item, Resync):
                if item.cursor.position > last:
                    last = item.cursor.position
                    yield _resync(item.cursor, item.reason)
            elif item.position > last:
                last = item.position
                if wanted.matches(item):
                    yield CaseChanged.of(item)


@strawberry.type
class Subscription:
    @strawberry.subscription(  # type: ignore[untyped-decorator]
        description="The caller's tenant's case changes as they commit (analyst or "
        "supervisor). With `after`, what was missed since that cursor comes first."
    )
    async def review_queue(
        self, info: Info, filter: ReviewQueueFilter | None = None, after: str | None = None
    ) -> AsyncGenerator[ReviewQueueItem, None]:
        async for item in watch(info, filter, after):
            yield item
