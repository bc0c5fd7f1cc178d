"""The PostgreSQL side of case review: cases with their workflow columns, the tenant's
case policy, the history of steps, comments, evidence and the answers to client
mutation ids.

A case is saved only if its version is still the one the step read (``WHERE version =
expected``): of two writers that read the same version, the second finds no row and
the step is refused as stale, so no update is lost. The database's review guard
(migration 0006) refuses a transition outside the table and a decision that breaks four
eyes; its errors are translated here into the domain's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters import tables
from adapters.database import sqlstate, translate_errors
from domain.case_notes import Comment, Evidence
from domain.case_policy import DEFAULT_POLICY, CasePolicy, parse_policy
from domain.case_workflow import Transition
from domain.cases import Case, CaseStatus, Decision, Disposition, Proposal
from domain.errors import FourEyes, TransitionNotAllowed
from domain.ports import StoredAnswer
from domain.rules import Band

_cases = tables.cases
_WORKFLOW_COLUMNS = (
    "status",
    "band",
    "priority",
    "sla_due_at",
    "version",
    "queue",
    "typologies",
    "assignee",
    "disposition",
    "rationale",
    "proposed_by",
    "proposed_at",
    "decision",
    "decided_by",
    "decided_roles",
    "decided_at",
    "decision_reason",
    "closed_at",
    "sla_breached_at",
    "updated_at",
)
_SAVE = (
    update(_cases)
    .where(
        _cases.c.tenant_id == bindparam("where_tenant_id"),
        _cases.c.case_id == bindparam("where_case_id"),
        _cases.c.version == bindparam("where_version"),
    )
    .values(
        {name: bindparam(f"new_{name}", type_=_cases.c[name].type) for name in _WORKFLOW_COLUMNS}
    )
    .returning(_cases.c.version)
)
# A step reads the case it will save FOR UPDATE: the SLA sweep (which skips locked
# cases) cannot flag it between the read and the save, whose every column would then
# clear the flag again, since flagging changes no version. Two steps on one case take
# turns; the second then reads the new version and is refused as stale, as before.
_GET = (
    select(_cases)
    .where(_cases.c.tenant_id == bindparam("tenant_id"), _cases.c.case_id == bindparam("case_id"))
    .with_for_update()
)
# The queue's best open case that no one else is taking: concurrent claims skip each
# other's rows, so two analysts never get the same case (index cases_claim_next).
_OPEN_BY_PRIORITY: Select[Any] = (
    select(_cases)
    .where(_cases.c.tenant_id == bindparam("tenant_id"), _cases.c.status == "open")
    .order_by(_cases.c.priority.desc(), _cases.c.sla_due_at)
    .limit(1)
    .with_for_update(skip_locked=True)
)
_NEXT_IN_QUEUE = _OPEN_BY_PRIORITY.where(_cases.c.queue == bindparam("queue"))
# Cases past due and not flagged; a case another sweeper holds is skipped, and one it
# flagged meanwhile no longer matches once its lock is released (index cases_sla_due).
_DUE = (
    select(_cases)
    .where(
        _cases.c.tenant_id == bindparam("tenant_id"),
        _cases.c.status != "closed",
        _cases.c.sla_breached_at.is_(None),
        _cases.c.sla_due_at <= bindparam("now"),
    )
    .order_by(_cases.c.sla_due_at)
    .limit(bindparam("max_rows"))
    .with_for_update(skip_locked=True)
)
_FLAG_BREACH = (
    update(_cases)
    .where(
        _cases.c.tenant_id == bindparam("where_tenant_id"),
        _cases.c.case_id == bindparam("where_case_id"),
        _cases.c.sla_breached_at.is_(None),
    )
    .values(sla_breached_at=bindparam("breached_at", type_=_cases.c.sla_breached_at.type))
    .returning(_cases.c.case_id)
)
_POLICY = select(tables.case_policies.c.document).where(
    tables.case_policies.c.tenant_id == bindparam("tenant_id")
)
_POLICY_ROWS = insert(tables.case_policies)
_SET_POLICY = _POLICY_ROWS.on_conflict_do_update(
    index_elements=["tenant_id"],
    set_={
        "document": _POLICY_ROWS.excluded.document,
        "low_closes_alone": _POLICY_ROWS.excluded.low_closes_alone,
        "updated_by": _POLICY_ROWS.excluded.updated_by,
        "updated_at": func.now(),
    },
)
_comments = tables.case_comments
_LATEST_COMMENT = (
    select(_comments)
    .where(
        _comments.c.tenant_id == bindparam("tenant_id"),
        _comments.c.comment_id == bindparam("comment_id"),
    )
    .order_by(_comments.c.version.desc())
    .limit(1)
)
_mutations = tables.case_mutations
_ANSWER = select(_mutations.c.mutation, _mutations.c.answer).where(
    _mutations.c.tenant_id == bindparam("tenant_id"),
    _mutations.c.actor == bindparam("actor"),
    _mutations.c.client_mutation_id == bindparam("client_mutation_id"),
)
# Calls with one client mutation id take turns: a retry sent while the first call runs
# waits for it, then finds its answer.
_TAKE_TURNS = text("SELECT pg_advisory_xact_lock(hashtextextended(:turn_key, 0))")
_REMEMBER = (
    insert(_mutations)
    .on_conflict_do_nothing(index_elements=["tenant_id", "actor", "client_mutation_id"])
    .returning(_mutations.c.client_mutation_id)
)

# SQLSTATEs the review guard raises (migration 0006).
_FOUR_EYES = "VGFE1"
_NOT_A_TRANSITION = "VGTR1"
_UNIQUE_VIOLATION = "23505"


def case_of_row(row: Any) -> Case:
    proposal = None
    if row.disposition is not None and row.proposed_by is not None:
        proposal = Proposal(
            Disposition(row.disposition), row.rationale, row.proposed_by, row.proposed_at
        )
    decision = None
    if row.decision is not None:
        decision = Decision(
            row.decision == "approved",
            row.decided_by,
            frozenset(row.decided_roles or ()),
            row.decided_at,
            row.decision_reason,
        )
    return Case(
        case_id=row.case_id,
        subject_id=row.subject_id,
        status=CaseStatus(row.status),
        band=Band(row.band),
        priority=row.priority,
        opened_at=row.opened_at,
        sla_due_at=row.sla_due_at,
        alert_count=row.alert_count,
        version=row.version,
        queue=row.queue,
        typologies=tuple(row.typologies),
        assignee=row.assignee,
        proposal=proposal,
        decision=decision,
        sla_breached_at=row.sla_breached_at,
        closed_at=row.closed_at,
    )


def _workflow_values(case: Case, now: datetime) -> dict[str, Any]:
    proposal, decision = case.proposal, case.decision
    return {
        "new_status": case.status.value,
        "new_band": case.band.value,
        "new_priority": case.priority,
        "new_sla_due_at": case.sla_due_at,
        "new_version": case.version,
        "new_queue": case.queue,
        "new_typologies": list(case.typologies),
        "new_assignee": case.assignee,
        "new_disposition": proposal.disposition.value if proposal else None,
        "new_rationale": proposal.rationale if proposal else None,
        "new_proposed_by": proposal.proposed_by if proposal else None,
        "new_proposed_at": proposal.proposed_at if proposal else None,
        "new_decision": ("approved" if decision.approved else "rejected") if decision else None,
        "new_decided_by": decision.decided_by if decision else None,
        "new_decided_roles": sorted(decision.roles) if decision else None,
        "new_decided_at": decision.decided_at if decision else None,
        "new_decision_reason": decision.reason if decision else None,
        "new_closed_at": case.closed_at,
        "new_sla_breached_at": case.sla_breached_at,
        "new_updated_at": now,
    }


class SqlCaseStore:
    def __init__(self, connection: AsyncConnection, tenant_id: uuid.UUID) -> None:
        self._connection = connection
        self._tenant_id = tenant_id
        self._policy: CasePolicy | None = None

    async def policy(self) -> CasePolicy:
        """The tenant's policy, read once per transaction; the default when it has none."""
        if self._policy is None:
            row = await self._first(_POLICY)
            self._policy = parse_policy(row.document) if row else DEFAULT_POLICY
        return self._policy

    async def set_policy(self, document: Mapping[str, Any], actor: str) -> None:
        policy = parse_policy(document)
        await self._run(
            _SET_POLICY,
            document=dict(document),
            low_closes_alone=policy.low_closes_alone,
            updated_by=actor,
        )
        self._policy = policy

    async def get(self, case_id: uuid.UUID) -> Case | None:
        row = await self._first(_GET, case_id=case_id)
        return case_of_row(row) if row else None

    async def next_open(self, queue: str | None) -> Case | None:
        if queue is None:
            row = await self._first(_OPEN_BY_PRIORITY)
        else:
            row = await self._first(_NEXT_IN_QUEUE, queue=queue)
        return case_of_row(row) if row else None

    async def save(self, case: Case, expected_version: int, now: datetime) -> bool:
        parameters = _workflow_values(case, now) | {
            "where_tenant_id": self._tenant_id,
            "where_case_id": case.case_id,
            "where_version": expected_version,
        }
        with _review_guard():
            result = await self._connection.execute(_SAVE, parameters)
        return result.first() is not None

    async def add_transition(self, transition: Transition) -> None:
        await self._run(
            insert(tables.case_transitions),
            case_id=transition.case_id,
            version=transition.version,
            action=transition.action.value,
            from_status=transition.from_status.value,
            to_status=transition.to_status.value,
            actor=transition.actor,
            actor_roles=sorted(transition.roles),
            details=dict(transition.details),
            taken_at=transition.taken_at,
        )

    async def comment(self, comment_id: uuid.UUID) -> Comment | None:
        row = await self._first(_LATEST_COMMENT, comment_id=comment_id)
        if row is None:
            return None
        return Comment(
            row.comment_id, row.version, row.case_id, row.body, row.author, row.written_at
        )

    async def add_comment(self, comment: Comment) -> None:
        await self._run(
            insert(_comments),
            comment_id=comment.comment_id,
            version=comment.version,
            case_id=comment.case_id,
            body=comment.body,
            author=comment.author,
            written_at=comment.written_at,
        )

    async def add_evidence(self, item: Evidence) -> None:
        await self._run(
            insert(tables.case_evidence),
            evidence_id=item.evidence_id,
            case_id=item.case_id,
            kind=item.kind.value,
            reference=item.reference,
            sha256=bytes.fromhex(item.sha256),
            description=item.description,
            added_by=item.added_by,
            added_at=item.added_at,
        )

    async def answer_for(self, actor: str, client_mutation_id: str) -> StoredAnswer | None:
        key = f"case-mutation|{self._tenant_id}|{actor}|{client_mutation_id}"
        await self._first(_TAKE_TURNS, turn_key=key)
        row = await self._first(_ANSWER, actor=actor, client_mutation_id=client_mutation_id)
        return StoredAnswer(row.mutation, row.answer) if row else None

    async def remember(
        self,
        actor: str,
        client_mutation_id: str,
        mutation: str,
        case_id: uuid.UUID,
        answer: Mapping[str, Any],
    ) -> bool:
        row = await self._first(
            _REMEMBER,
            actor=actor,
            client_mutation_id=client_mutation_id,
            mutation=mutation,
            case_id=case_id,
            answer=dict(answer),
        )
        return row is not None

    async def due_for_breach(self, now: datetime, max_rows: int) -> list[Case]:
        with translate_errors():
            result = await self._connection.execute(
                _DUE, {"tenant_id": self._tenant_id, "now": now, "max_rows": max_rows}
            )
            return [case_of_row(row) for row in result]

    async def flag_breach(self, case: Case) -> bool:
        with translate_errors():
            result = await self._connection.execute(
                _FLAG_BREACH,
                {
                    "where_tenant_id": self._tenant_id,
                    "where_case_id": case.case_id,
                    "breached_at": case.sla_breached_at,
                },
            )
            return result.first() is not None

    async def _first(self, statement: Any, **parameters: Any) -> Any:
        with translate_errors():
            result = await self._connection.execute(
                statement, {"tenant_id": self._tenant_id, **parameters}
            )
            return result.first()

    async def _run(self, statement: Any, **parameters: Any) -> Any:
        with translate_errors():
            result = await self._connection.execute(
                statement, {"tenant_id": self._tenant_id, **parameters}
            )
            return result.first() if result.returns_rows else None


@contextmanager
def _review_guard() -> Iterator[None]:
    """The database's refusals of a case update, as the domain's errors."""
    try:
        with translate_errors():
            yield
    except DBAPIError as error:
        code = sqlstate(error)
        if code == _FOUR_EYES:
            raise FourEyes("the database refused the decision: four eyes") from error
        if code == _NOT_A_TRANSITION:
            raise TransitionNotAllowed("the database refused the transition") from error
        if code == _UNIQUE_VIOLATION:
            raise TransitionNotAllowed("the subject has another case that is not closed") from error
        raise
