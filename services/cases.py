"""Case review use cases: claim, assign, comment, propose, approve, reject, escalate,
reopen, and the SLA sweep.

Each is one transaction: load the case, let the domain decide (:mod:`domain.case_workflow`),
save it only if its version is still the one the caller read, and write in the same
transaction the step's history row, its audit record and its ``case.<action>`` message
(which the live review queues show). A refused step writes nothing.

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

from domain import case_workflow as workflow
from domain.audit import AuditEntry
from domain.case_notes import MAX_EVIDENCE_PER_STEP, Comment, Evidence, edited, new_comment
from domain.case_notes import evidence as evidence_of
from domain.case_policy import QUEUE_NAME, CasePolicy
from domain.case_workflow import Action, Actor, Transition
from domain.cases import Case, Disposition, case_data, case_from_data
from domain.errors import (
    CaseNotFound,
    InvalidCaseInput,
    StaleVersion,
    TransientFailure,
)
from domain.ids import new_id
from domain.messages import OutboxMessage
from domain.ports import UnitOfWork, UnitOfWorkFactory
from services.retry import with_retries

log = logging.getLogger(__name__)

SLA_ACTOR = "vigil:sla"
CASE_SLA_BREACHED = "case.sla_breached"
MAX_CLIENT_MUTATION_ID = 200

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
    extra: Mapping[str, Any] = field(default_factory=dict)
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class EvidenceRef:
    document_id: str | None
    url: str | None
    sha256: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class _Step:
    """What the domain decided: the case after the step, and what else to write."""

    action: Action
    case: Case
    details: Mapping[str, Any] = field(default_factory=dict)
    comment: Comment | None = None
    evidence: Sequence[Evidence] = ()


Decide = Callable[[UnitOfWork, Case, CasePolicy, datetime], Awaitable[_Step]]


# -- the use cases -------------------------------------------------------------------------


async def claim_case(uow_factory: UnitOfWorkFactory, command: Command) -> StepResult:
    async def decide(uow: UnitOfWork, case: Case, policy: CasePolicy, now: datetime) -> _Step:
        return _Step(Action.CLAIM, workflow.claim(case, command.actor, _version(command)))

    return await _run(uow_factory, command, "caseClaim", decide)


async def claim_next(
    uow_factory: UnitOfWorkFactory, command: Command, queue: str | None
) -> StepResult:
    """The open case of the queue (or of any queue) with the highest priority, then the
    earliest due time. Concurrent claims skip each other's case, so no case goes to two
    analysts."""

    if queue is not None and not QUEUE_NAME.fullmatch(queue):
        raise InvalidCaseInput("no such queue name", field="queue")

    async def decide(uow: UnitOfWork, case: Case, policy: CasePolicy, now: datetime) -> _Step:
        return _Step(Action.CLAIM, workflow.claim(case, command.actor, case.version))

    return await _run(uow_factory, command, "caseClaim", decide, next_in_queue=(queue,))


async def assign_case(
    uow_factory: UnitOfWorkFactory, command: Command, assignee: str
) -> StepResult:
    async def decide(uow: UnitOfWork, case: Case, policy: CasePolicy, now: datetime) -> _Step:
        after = workflow.assign(case, command.actor, assignee, _version(command))
        return _Step(Action.ASSIGN, after, {"assignee": after.assignee})

    return await _run(uow_factory, command, "caseAssign", decide)


async def unassign_case(uow_factory: UnitOfWorkFactory, command: Command) -> StepResult:
    async def decide(uow: UnitOfWork, case: Case, policy: CasePolicy, now: datetime) -> _Step:
        after = workflow.unassign(case, command.actor, _version(command))
        return _Step(Action.UNASSIGN, after, {"previousAssignee": case.assignee})

    return await _run(uow_factory, command, "caseUnassign", decide)


async def comment_on_case(
    uow_factory: UnitOfWorkFactory,
    command: Command,
    body: str,
    *,
    edits: uuid.UUID | None = None,
    evidence: Sequence[EvidenceRef] = (),
) -> StepResult:
    """A comment (or the next version of one, by its author), with evidence references."""
    if len(evidence) > MAX_EVIDENCE_PER_STEP:
        raise InvalidCaseInput(
            f"at most {MAX_EVIDENCE_PER_STEP} evidence references at once", field="evidence"
        )

    async def decide(uow: UnitOfWork, case: Case, policy: CasePolicy, now: datetime) -> _Step:
        after = workflow.comment(case, command.actor, _version(command))
        author = command.actor.name
        if edits is None:
            note = new_comment(new_id(), case.case_id, body, author, now)
        else:
            previous = await uow.cases.comment(edits)
            if previous is None or previous.case_id != case.case_id:
                raise CaseNotFound("no such comment on this case", field="commentId")
            note = edited(previous, body, author, now)
        items = [
            evidence_of(
                new_id(),
                case.case_id,
                document_id=ref.document_id,
                url=ref.url,
                sha256=ref.sha256,
                description=ref.description,
                added_by=author,
                now=now,
                field=f"evidence.{index}",
            )
            for index, ref in enumerate(evidence)
        ]
        details = {
            "commentId": str(note.comment_id),
            "commentVersion": note.version,
            "evidenceIds": [str(item.evidence_id) for item in items],
            "evidenceHashes": [item.sha256 for item in items],
        }
        return _Step(Action.COMMENT, after, details, note, items)

    return await _run(uow_factory, command, "caseComment", decide)


async def propose_disposition(
    uow_factory: UnitOfWorkFactory, command: Command, disposition: Disposition, rationale: str
) -> StepResult:
    async def decide(uow: UnitOfWork, case: Case, policy: CasePolicy, now: datetime) -> _Step:
        after = workflow.propose(
            case, command.actor, disposition, rationale, _version(command), policy, now
        )
        action = Action.CLOSE_ALONE if after.closed_at is not None else Action.PROPOSE
        details = {"disposition": disposition.value, "rationale": rationale.strip()}
        return _Step(action, after, details)

    return await _run(uow_factory, command, "caseProposeDisposition", decide)


async def approve_disposition(uow_factory: UnitOfWorkFactory, command: Command) -> StepResult:
    async def decide(uow: UnitOfWork, case: Case, policy: CasePolicy, now: datetime) -> _Step:
        after = workflow.approve(case, command.actor, _version(command), now)
        return _Step(Action.APPROVE, after, _proposal_details(case))

    return await _run(uow_factory, command, "caseApproveDisposition", decide)


async def reject_disposition(
    uow_factory: UnitOfWorkFactory, command: Command, reason: str
) -> StepResult:
    async def decide(uow: UnitOfWork, case: Case, policy: CasePolicy, now: datetime) -> _Step:
        after = workflow.reject(case, command.actor, reason, _version(command), now)
        return _Step(Action.REJECT, after, {"reason": reason.strip(), **_proposal_details(case)})

    return await _run(uow_factory, command, "caseRejectDisposition", decide)


async def escalate_case(
    uow_factory: UnitOfWorkFactory, command: Command, reason: str
) -> StepResult:
    async def decide(uow: UnitOfWork, case: Case, policy: CasePolicy, now: datetime) -> _Step:
        after = workflow.escalate(case, command.actor, reason, _version(command))
        return _Step(Action.ESCALATE, after, {"reason": reason.strip()})

    return await _run(uow_factory, command, "caseEscalate", decide)


async def reopen_case(uow_factory: UnitOfWorkFactory, command: Command, reason: str) -> StepResult:
    async def decide(uow: UnitOfWork, case: Case, policy: CasePolicy, now: datetime) -> _Step:
        after = workflow.reopen(case, command.actor, reason, _version(command), policy, now)
        return _Step(Action.REOPEN, after, {"reason": reason.strip()})

    return await _run(uow_factory, command, "caseReopen", decide)


async def set_case_policy(
    uow_factory: UnitOfWorkFactory, tenant_id: uuid.UUID, document: Mapping[str, Any], actor: str
) -> None:
    """Store the tenant's case policy (refused with ``InvalidCaseInput`` if it does not
    parse); audited."""
    async with uow_factory(tenant_id) as uow:
        await uow.cases.set_policy(document, actor)
        uow.record(
            AuditEntry(
                new_id(), actor, "case_policy.set", "tenant", str(tenant_id), None, dict(document)
            )
        )
        await uow.commit()


async def flag_sla_breaches(
    uow_factory: UnitOfWorkFactory,
    tenant_id: uuid.UUID,
    *,
    now: datetime | None = None,
    max_rows: int = 500,
) -> int:
    """Flag the tenant's cases past their SLA, each once, with ``case.sla_breached``;
    return how many. Sweepers running at once skip each other's cases, and a case
    flagged by one no longer matches for the other."""
    moment = now or datetime.now(UTC)
    async with uow_factory(tenant_id) as uow:
        flagged = 0
        for case in await uow.cases.due_for_breach(moment, max_rows):
            breached = workflow.breach_sla(case, moment)
            if breached is None or not await uow.cases.flag_breach(breached):
                continue
            data = case_data(breached)
            uow.record(
                AuditEntry(
                    new_id(), SLA_ACTOR, CASE_SLA_BREACHED, "case", str(case.case_id), None, data
                )
            )
            uow.publish(_message(CASE_SLA_BREACHED, breached, moment, None, data))
            flagged += 1
        await uow.commit()
    if flagged:
        log.info("case SLAs breached", extra={"tenant_id": str(tenant_id), "count": flagged})
    return flagged


# -- one step, one transaction ---------------------------------------------------------------


async def _run(
    uow_factory: UnitOfWorkFactory,
    command: Command,
    mutation: str,
    decide: Decide,
    *,
    next_in_queue: tuple[str | None] | None = None,
) -> StepResult:
    _check_client_mutation_id(command.client_mutation_id)
    return await with_retries(
        lambda: _once(uow_factory, command, mutation, decide, next_in_queue), name=mutation
    )


async def _once(
    uow_factory: UnitOfWorkFactory,
    command: Command,
    mutation: str,
    decide: Decide,
    next_in_queue: tuple[str | None] | None,
) -> StepResult:
    now = datetime.now(UTC)
    actor = command.actor
    async with uow_factory(command.tenant_id) as uow:
        replayed = await _replayed(uow, command, mutation)
        if replayed is not None:
            return replayed

        case = await _load(uow, command, next_in_queue)
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
        uow.publish(_message(event, after, now, command.correlation_id, data))

        result = StepResult(after, _extra(step))
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


async def _load(uow: UnitOfWork, command: Command, next_in_queue: tuple[str | None] | None) -> Case:
    if next_in_queue is not None:
        (queue,) = next_in_queue
        case = await uow.cases.next_open(queue)
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
    return StepResult(case_from_data(answer["case"]), answer.get("extra", {}), replayed=True)


async def _remember(uow: UnitOfWork, command: Command, mutation: str, result: StepResult) -> None:
    if command.client_mutation_id is None:
        return
    answer = {"case": case_data(result.case), "extra": dict(result.extra)}
    stored = await uow.cases.remember(
        command.actor.name, command.client_mutation_id, mutation, result.case.case_id, answer
    )
    if not stored:
        # The same call, retried while the first was running, committed first: start
        # again, and the look-up then returns its answer.
        raise TransientFailure("the client mutation id was answered concurrently")


def _message(
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


def _proposal_details(case: Case) -> dict[str, Any]:
    """What was decided on: the proposal the case held before the decision."""
    proposal = case.proposal
    if proposal is None:
        return {}
    return {"disposition": proposal.disposition.value, "proposedBy": proposal.proposed_by}


def _extra(step: _Step) -> dict[str, Any]:
    if step.comment is None:
        return {}
    return {
        "commentId": str(step.comment.comment_id),
        "commentVersion": step.comment.version,
        "evidenceIds": [str(item.evidence_id) for item in step.evidence],
    }


def _version(command: Command) -> int:
    if command.expected_version is None:
        raise InvalidCaseInput("the case version read is required", field="expectedVersion")
    return command.expected_version


def _check_client_mutation_id(value: str | None) -> None:
    if value is not None and not 0 < len(value) <= MAX_CLIENT_MUTATION_ID:
        raise InvalidCaseInput(
            f"a clientMutationId has 1 to {MAX_CLIENT_MUTATION_ID} characters",
            field="clientMutationId",
        )
