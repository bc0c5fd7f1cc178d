"""One review step, one transaction: the machinery every use case of
:mod:`services.cases` shares.

A step loads its case (or the next of a queue), lets the domain decide, saves the case
only if its version is still the one the caller read, and writes in the same
transaction the step's history row, its audit record and its ``case.<action>`` message
(which the live review queues show). A refused step changes nothing; a refusal of the
controls themselves (four eyes, a role the actor lacks) is put on the audit trail in a
transaction of its own, as ``review.refused``, since an auditor asks who tried.

A step that carries a client mutation id stores its answer in the same transaction; the
same id sent again by the same actor gets that answer back and acts no second time. A
refused step stores no answer, so sending it again is judged again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from domain.audit import AuditEntry
from domain.case_notes import Comment, Evidence
from domain.case_policy import CasePolicy
from domain.case_workflow import Action, Actor, Transition
from domain.cases import Case, case_data, case_from_data
from domain.errors import (
    CaseError,
    CaseNotFound,
    ForbiddenRole,
    FourEyes,
    InvalidCaseInput,
    StaleVersion,
    TransientFailure,
)
from domain.ids import new_id
from domain.messages import OutboxMessage
from domain.ports import UnitOfWork, UnitOfWorkFactory
from domain.text import unprintable
from services.retry import with_retries

log = logging.getLogger(__name__)

MAX_CLIENT_MUTATION_ID = 200
# The audit action of a refused attempt; not a ``case.`` change, so no queue shows it.
REFUSED = "review.refused"

# The audit action and message type of each step.
EVENT_OF: Mapping[Action, str] = {
    Action.CLAIM: "case.claimed",
    Action.ASSIGN: "case.assigned",
    Action.UNASSIGN: "case.unassigned",
    Action.COMMENT: "case.commented",
    Action.PROPOSE: "case.proposed",
    Action.CLOSE_ALONE: "case.closed",
    Action.APPROVE: "case.closed",
    Action.REJECT: "case.rejected",
    Action.ESCALATE: "case.escalated",
    Action.REOPEN: "case.reopened",
}


@dataclass(frozen=True, slots=True)
class Command:
    """Who asks for a step on which case, having read which version."""

    tenant_id: uuid.UUID
    actor: Actor
    case_id: uuid.UUID | None
    expected_version: int | None
    client_mutation_id: str | None = None
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class StepResult:
    case: Case
    updated_at: datetime
    extra: Mapping[str, Any] = field(default_factory=dict)
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    """What the domain decided: the case after the step, and what else to write."""

    action: Action
    case: Case
    details: Mapping[str, Any] = field(default_factory=dict)
    comment: Comment | None = None
    evidence: Sequence[Evidence] = ()


@dataclass(frozen=True, slots=True)
class FromQueue:
    """A step on the next open case of a queue (``None``: of any queue), not on a case
    named by id."""

    queue: str | None


Decide = Callable[[UnitOfWork, Case, CasePolicy, datetime], Awaitable[Step]]


async def run_step(
    uow_factory: UnitOfWorkFactory,
    command: Command,
    mutation: str,
    decide: Decide,
    *,
    from_queue: FromQueue | None = None,
) -> StepResult:
    _check_client_mutation_id(command.client_mutation_id)
    try:
        return await with_retries(
            lambda: _once(uow_factory, command, mutation, decide, from_queue), name=mutation
        )
    except (FourEyes, ForbiddenRole) as refusal:
        if command.case_id is not None:
            await _record_refusal(uow_factory, command, mutation, refusal)
        raise


async def _record_refusal(
    uow_factory: UnitOfWorkFactory, command: Command, mutation: str, refusal: CaseError
) -> None:
    """Put a refused attempt on the trail. Not being able to is logged, and the caller is
    still answered with the refusal."""
    entry = AuditEntry(
        new_id(),
        command.actor.name,
        REFUSED,
        "case",
        str(command.case_id),
        command.correlation_id,
        {
            "mutation": mutation,
            "code": refusal.code,
            "message": refusal.message,
            "roles": sorted(command.actor.roles),
        },
    )
    try:
        async with uow_factory(command.tenant_id) as uow:
            uow.record(entry)
            await uow.commit()
    except Exception as error:
        log.warning(
            "a refused review step could not be put on the audit trail",
            extra={
                "tenant_id": str(command.tenant_id),
                "case_id": str(command.case_id),
                "code": refusal.code,
                "reason": type(error).__name__,
            },
        )


async def _once(
    uow_factory: UnitOfWorkFactory,
    command: Command,
    mutation: str,
    decide: Decide,
    from_queue: FromQueue | None,
) -> StepResult:
    now = datetime.now(UTC)
    actor = command.actor
    async with uow_factory(command.tenant_id) as uow:
        replayed = await _replayed(uow, command, mutation)
        if replayed is not None:
            return replayed

        case = await _load(uow, command, from_queue)
        step = await decide(uow, case, await uow.cases.policy(), now)
        after = step.case
        if not await uow.cases.save(after, case.version, now):
            raise StaleVersion("the case changed since it was read: read it again")
        if step.comment is not None:
            await uow.cases.add_comment(step.comment)
        for item in step.evidence:
            await uow.cases.add_evidence(item)

        details = {"action": step.action.value, "from": case.status.value, **step.details}
        await uow.cases.add_transition(
            Transition(
                after.case_id,
                after.version,
                step.action,
                case.status,
                after.status,
                actor.name,
                actor.roles,
                now,
                details,
            )
        )
        event = EVENT_OF[step.action]
        data = {**case_data(after), **details}
        uow.record(
            AuditEntry(
                new_id(),
                actor.name,
                event,
                "case",
                str(after.case_id),
                command.correlation_id,
                data,
            )
        )
        uow.publish(case_message(event, after, now, command.correlation_id, data))

        result = StepResult(after, now, _extra(step))
        await _remember(uow, command, mutation, result)
        await uow.commit()

    log.info(
        "case step taken",
        extra={
            "tenant_id": str(command.tenant_id),
            "case_id": str(after.case_id),
            "action": step.action.value,
            "previous_status": case.status.value,
            "status": after.status.value,
            "version": after.version,
        },
    )
    return result


async def _load(uow: UnitOfWork, command: Command, from_queue: FromQueue | None) -> Case:
    if from_queue is not None:
        case = await uow.cases.next_open(from_queue.queue)
        if case is None:
            raise CaseNotFound("no open case is waiting in this queue", field="queue")
        return case
    if command.case_id is None:
        raise InvalidCaseInput("a case id is required", field="caseId")
    case = await uow.cases.get(command.case_id)
    if case is None:
        raise CaseNotFound("no such case", field="caseId")
    return case


async def _replayed(uow: UnitOfWork, command: Command, mutation: str) -> StepResult | None:
    if command.client_mutation_id is None:
        return None
    stored = await uow.cases.answer_for(command.actor.name, command.client_mutation_id)
    if stored is None:
        return None
    if stored.mutation != mutation:
        raise InvalidCaseInput(
            "this clientMutationId was used for another mutation", field="clientMutationId"
        )
    answer = stored.answer
    case = case_from_data(answer["case"])
    if command.case_id is not None and case.case_id != command.case_id:
        # Answering another case's step would tell the caller this case was acted on.
        raise InvalidCaseInput(
            "this clientMutationId was used for another case", field="clientMutationId"
        )
    return StepResult(
        case,
        datetime.fromisoformat(answer["updatedAt"]),
        answer.get("extra", {}),
        replayed=True,
    )


async def _remember(uow: UnitOfWork, command: Command, mutation: str, result: StepResult) -> None:
    if command.client_mutation_id is None:
        return
    answer = {
        "case": case_data(result.case),
        "updatedAt": result.updated_at.isoformat(),
        "extra": dict(result.extra),
    }
    stored = await uow.cases.remember(
        command.actor.name, command.client_mutation_id, mutation, result.case.case_id, answer
    )
    if not stored:
        # The same call, retried while the first was running, committed first: start
        # again, and the look-up then returns its answer.
        raise TransientFailure("the client mutation id was answered concurrently")


def case_message(
    event: str, case: Case, now: datetime, correlation_id: str | None, data: Mapping[str, Any]
) -> OutboxMessage:
    return OutboxMessage(
        message_id=new_id(),
        message_type=event,
        subject=f"case/{case.case_id}",
        ordering_key=case.case_id,
        time=now,
        correlation_id=correlation_id,
        data=data,
    )


def _extra(step: Step) -> dict[str, Any]:
    if step.comment is None:
        return {}
    return {
        "commentId": str(step.comment.comment_id),
        "commentVersion": step.comment.version,
        "evidenceIds": [str(item.evidence_id) for item in step.evidence],
    }


def _check_client_mutation_id(value: str | None) -> None:
    if value is None:
        return
    if not 0 < len(value) <= MAX_CLIENT_MUTATION_ID or unprintable(value, multiline=False):
        raise InvalidCaseInput(
            f"a clientMutationId has 1 to {MAX_CLIENT_MUTATION_ID} printable characters",
            field="clientMutationId",
        )
