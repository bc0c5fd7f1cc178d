"""Case review use cases: claim, assign, comment, propose, approve, reject, escalate,
reopen, and the SLA sweep.

Each review step is one transaction (see :mod:`services.case_steps`): the domain decides
(:mod:`domain.case_workflow`), the case is saved only at the version the caller read,
and the step's history row, audit record and ``case.<action>`` message commit with it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from domain import case_workflow as workflow
from domain.audit import AuditEntry
from domain.case_notes import MAX_EVIDENCE_PER_STEP, edited, new_comment
from domain.case_notes import evidence as evidence_of
from domain.case_policy import QUEUE_NAME, CasePolicy
from domain.case_workflow import Action
from domain.cases import Case, Disposition, case_data
from domain.errors import CaseNotFound, InvalidCaseInput
from domain.ids import new_id
from domain.ports import UnitOfWork, UnitOfWorkFactory
from services.case_steps import Command, FromQueue, Step, StepResult, case_message, run_step

log = logging.getLogger(__name__)

SLA_ACTOR = "vigil:sla"
CASE_SLA_BREACHED = "case.sla_breached"


@dataclass(frozen=True, slots=True)
class EvidenceRef:
    document_id: str | None
    url: str | None
    sha256: str
    description: str = ""


# -- the use cases -------------------------------------------------------------------------


async def claim_case(uow_factory: UnitOfWorkFactory, command: Command) -> StepResult:
    async def decide(uow: UnitOfWork, case: Case, policy: CasePolicy, now: datetime) -> Step:
        return Step(Action.CLAIM, workflow.claim(case, command.actor, _version(command)))

    return await run_step(uow_factory, command, "caseClaim", decide)


async def claim_next(
    uow_factory: UnitOfWorkFactory, command: Command, queue: str | None
) -> StepResult:
    """The open case of the queue (or of any queue) with the highest priority, then the
    earliest due time. Concurrent claims skip each other's case, so no case goes to two
    analysts."""

    if queue is not None and not QUEUE_NAME.fullmatch(queue):
        raise InvalidCaseInput("no such queue name", field="queue")

    async def decide(uow: UnitOfWork, case: Case, policy: CasePolicy, now: datetime) -> Step:
        return Step(Action.CLAIM, workflow.claim(case, command.actor, case.version))

    return await run_step(uow_factory, command, "caseClaim", decide, from_queue=FromQueue(queue))


async def assign_case(
    uow_factory: UnitOfWorkFactory, command: Command, assignee: str
) -> StepResult:
    async def decide(uow: UnitOfWork, case: Case, policy: CasePolicy, now: datetime) -> Step:
        after = workflow.assign(case, command.actor, assignee, _version(command))
        return Step(Action.ASSIGN, after, {"assignee": after.assignee})

    return await run_step(uow_factory, command, "caseAssign", decide)


async def unassign_case(uow_factory: UnitOfWorkFactory, command: Command) -> StepResult:
    async def decide(uow: UnitOfWork, case: Case, policy: CasePolicy, now: datetime) -> Step:
        after = workflow.unassign(case, command.actor, _version(command))
        return Step(Action.UNASSIGN, after, {"previousAssignee": case.assignee})

    return await run_step(uow_factory, command, "caseUnassign", decide)


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

    async def decide(uow: UnitOfWork, case: Case, policy: CasePolicy, now: datetime) -> Step:
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
        return Step(Action.COMMENT, after, details, note, items)

    return await run_step(uow_factory, command, "caseComment", decide)


async def propose_disposition(
    uow_factory: UnitOfWorkFactory, command: Command, disposition: Disposition, rationale: str
) -> StepResult:
    async def decide(uow: UnitOfWork, case: Case, policy: CasePolicy, now: datetime) -> Step:
        after = workflow.propose(
            case, command.actor, disposition, rationale, _version(command), policy, now
        )
        action = Action.CLOSE_ALONE if after.closed_at is not None else Action.PROPOSE
        details = {"disposition": disposition.value, "rationale": rationale.strip()}
        return Step(action, after, details)

    return await run_step(uow_factory, command, "caseProposeDisposition", decide)


async def approve_disposition(uow_factory: UnitOfWorkFactory, command: Command) -> StepResult:
    async def decide(uow: UnitOfWork, case: Case, policy: CasePolicy, now: datetime) -> Step:
        after = workflow.approve(case, command.actor, _version(command), now)
        return Step(Action.APPROVE, after, _proposal_details(case))

    return await run_step(uow_factory, command, "caseApproveDisposition", decide)


async def reject_disposition(
    uow_factory: UnitOfWorkFactory, command: Command, reason: str
) -> StepResult:
    async def decide(uow: UnitOfWork, case: Case, policy: CasePolicy, now: datetime) -> Step:
        after = workflow.reject(case, command.actor, reason, _version(command), now)
        return Step(Action.REJECT, after, {"reason": reason.strip(), **_proposal_details(case)})

    return await run_step(uow_factory, command, "caseRejectDisposition", decide)


async def escalate_case(
    uow_factory: UnitOfWorkFactory, command: Command, reason: str
) -> StepResult:
    async def decide(uow: UnitOfWork, case: Case, policy: CasePolicy, now: datetime) -> Step:
        after = workflow.escalate(case, command.actor, reason, _version(command))
        return Step(Action.ESCALATE, after, {"reason": reason.strip()})

    return await run_step(uow_factory, command, "caseEscalate", decide)


async def reopen_case(uow_factory: UnitOfWorkFactory, command: Command, reason: str) -> StepResult:
    async def decide(uow: UnitOfWork, case: Case, policy: CasePolicy, now: datetime) -> Step:
        after = workflow.reopen(case, command.actor, reason, _version(command), policy, now)
        return Step(Action.REOPEN, after, {"reason": reason.strip()})

    return await run_step(uow_factory, command, "caseReopen", decide)


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
            uow.publish(case_message(CASE_SLA_BREACHED, breached, moment, None, data))
            flagged += 1
        await uow.commit()
    if flagged:
        log.info("case SLAs breached", extra={"tenant_id": str(tenant_id), "count": flagged})
    return flagged


def _proposal_details(case: Case) -> dict[str, Any]:
    """What was decided on: the proposal the case held before the decision."""
    proposal = case.proposal
    if proposal is None:
        return {}
    return {"disposition": proposal.disposition.value, "proposedBy": proposal.proposed_by}


def _version(command: Command) -> int:
    if command.expected_version is None:
        raise InvalidCaseInput("the case version read is required", field="expectedVersion")
    return command.expected_version
