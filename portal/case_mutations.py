"""The GraphQL mutations of case review, named object first: ``caseClaim``,
``caseAssign``, ``caseComment``, ``caseProposeDisposition``, ``caseApproveDisposition``,
``caseRejectDisposition``, ``caseEscalate``, ``caseReopen``.

Each takes one input with the case's id, the version the caller read and an optional
``clientMutationId``, and answers a payload: the case as the step left it, or typed
errors (``STALE_VERSION``, ``TRANSITION_NOT_ALLOWED``, ``FOUR_EYES``, ``NOT_FOUND``,
``NOT_ASSIGNEE``, ``FORBIDDEN_ROLE``, ``INVALID_INPUT``) and no case. A refusal is an
answer, not a GraphQL error: the client acts on its code. A call sent again with the
same ``clientMutationId`` gets the first answer and acts no second time.

Roles are checked by the domain's table (``domain.case_workflow.ACTION_ROLES``):
analysts claim, comment, propose and escalate; supervisors assign, unassign, approve,
reject and reopen.

The payloads return the read side's ``Case`` as the step left it, and ``caseId`` is that
type's global id.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import strawberry
from strawberry import relay

from domain.case_workflow import Actor
from domain.errors import CaseError as DomainCaseError
from domain.errors import InvalidCaseInput
from domain.ports import UnitOfWorkFactory
from portal.auth import authenticated
from portal.case_types import (
    CaseApproveDispositionInput,
    CaseApproveDispositionPayload,
    CaseAssignInput,
    CaseAssignPayload,
    CaseClaimInput,
    CaseClaimPayload,
    CaseCommentInput,
    CaseCommentPayload,
    CaseCommentWritten,
    CaseError,
    CaseErrorCode,
    CaseEscalateInput,
    CaseEscalatePayload,
    CaseMutationPayload,
    CaseProposeDispositionInput,
    CaseProposeDispositionPayload,
    CaseReasonedInput,
    CaseRejectDispositionInput,
    CaseRejectDispositionPayload,
    CaseReopenInput,
    CaseReopenPayload,
)
from portal.read.types import Case
from services import cases as review
from services.case_steps import Command, StepResult
from services.cases import EvidenceRef

Step = Callable[[Command], Awaitable[StepResult]]
P = TypeVar("P", bound=CaseMutationPayload)
# The schema's context (portal.schema.Context), which imports this module.
Info = strawberry.Info[Any, None]


async def _step(
    info: Info,
    payload: type[P],
    case_id: strawberry.ID | None,
    expected_version: int | None,
    client_mutation_id: str | None,
    step: Step,
) -> P:
    principal = authenticated(info.context.identity)
    actor = Actor(principal.subject, frozenset(role.value for role in principal.roles))
    try:
        command = Command(
            tenant_id=principal.tenant_id,
            actor=actor,
            case_id=_case_id(case_id),
            expected_version=expected_version,
            client_mutation_id=client_mutation_id,
            correlation_id=info.context.correlation_id,
        )
        result = await step(command)
    except DomainCaseError as error:
        refusal = CaseError(
            code=CaseErrorCode(error.code), field=error.field, message=error.message
        )
        return payload(client_mutation_id=client_mutation_id, case=None, errors=[refusal])
    answer = payload(
        client_mutation_id=client_mutation_id,
        case=Case.of_case(result.case, result.updated_at),
        errors=[],
    )
    if isinstance(answer, CaseCommentPayload) and "commentId" in result.extra:
        answer.comment = CaseCommentWritten(
            comment_id=strawberry.ID(result.extra["commentId"]),
            version=result.extra["commentVersion"],
            evidence_ids=[strawberry.ID(value) for value in result.extra["evidenceIds"]],
        )
    return answer


Run = Callable[[UnitOfWorkFactory, Command, Any], Awaitable[StepResult]]


def _resolver(input_type: type, payload: type[P], run: Run) -> Callable[..., Awaitable[P]]:
    """The resolver of one mutation: ``run`` takes the step once the caller is known."""

    async def resolve(info: Info, input: Any) -> P:
        factory = info.context.uow_factory
        return await _step(
            info,
            payload,
            input.case_id,
            input.expected_version,
            input.client_mutation_id,
            lambda command: run(factory, command, input),
        )

    # Strawberry reads the input and payload types of the schema from these.
    resolve.__annotations__ = {"info": Info, "input": input_type, "return": payload}
    return resolve


async def _claim(factory: UnitOfWorkFactory, command: Command, input: CaseClaimInput) -> StepResult:
    if input.case_id is None:
        return await review.claim_next(factory, command, input.queue)
    return await review.claim_case(factory, command)


async def _assign(
    factory: UnitOfWorkFactory, command: Command, input: CaseAssignInput
) -> StepResult:
    if input.assignee is None:
        return await review.unassign_case(factory, command)
    return await review.assign_case(factory, command, input.assignee)


async def _comment(
    factory: UnitOfWorkFactory, command: Command, input: CaseCommentInput
) -> StepResult:
    refs = [
        EvidenceRef(item.document_id, item.url, item.sha256, item.description)
        for item in input.evidence
    ]
    edits = _uuid(input.comment_id, "commentId") if input.comment_id else None
    return await review.comment_on_case(factory, command, input.body, edits=edits, evidence=refs)


async def _propose(
    factory: UnitOfWorkFactory, command: Command, input: CaseProposeDispositionInput
) -> StepResult:
    return await review.propose_disposition(factory, command, input.disposition, input.rationale)


async def _approve(factory: UnitOfWorkFactory, command: Command, input: object) -> StepResult:
    return await review.approve_disposition(factory, command)


async def _reject(
    factory: UnitOfWorkFactory, command: Command, input: CaseReasonedInput
) -> StepResult:
    return await review.reject_disposition(factory, command, input.reason)


async def _escalate(
    factory: UnitOfWorkFactory, command: Command, input: CaseReasonedInput
) -> StepResult:
    return await review.escalate_case(factory, command, input.reason)


async def _reopen(
    factory: UnitOfWorkFactory, command: Command, input: CaseReasonedInput
) -> StepResult:
    return await review.reopen_case(factory, command, input.reason)


@strawberry.type
class CaseMutation:
    """Mixed into the schema's ``Mutation``."""

    case_claim: CaseClaimPayload = strawberry.mutation(
        resolver=_resolver(CaseClaimInput, CaseClaimPayload, _claim),
        description="Take a case (by id, or the next of a queue).",
    )
    case_assign: CaseAssignPayload = strawberry.mutation(
        resolver=_resolver(CaseAssignInput, CaseAssignPayload, _assign),
        description="Give a case to an analyst, or take it back.",
    )
    case_comment: CaseCommentPayload = strawberry.mutation(
        resolver=_resolver(CaseCommentInput, CaseCommentPayload, _comment),
        description="Comment, with evidence; an edit is a version.",
    )
    case_propose_disposition: CaseProposeDispositionPayload = strawberry.mutation(
        resolver=_resolver(CaseProposeDispositionInput, CaseProposeDispositionPayload, _propose),
        description="Propose how to close the case you work.",
    )
    case_approve_disposition: CaseApproveDispositionPayload = strawberry.mutation(
        resolver=_resolver(CaseApproveDispositionInput, CaseApproveDispositionPayload, _approve),
        description="Approve another's proposal and close the case.",
    )
    case_reject_disposition: CaseRejectDispositionPayload = strawberry.mutation(
        resolver=_resolver(CaseRejectDispositionInput, CaseRejectDispositionPayload, _reject),
        description="Send a proposal back, with the reason.",
    )
    case_escalate: CaseEscalatePayload = strawberry.mutation(
        resolver=_resolver(CaseEscalateInput, CaseEscalatePayload, _escalate),
        description="Hand a case up to the supervisors.",
    )
    case_reopen: CaseReopenPayload = strawberry.mutation(
        resolver=_resolver(CaseReopenInput, CaseReopenPayload, _reopen),
        description="Open a closed case again, with the reason.",
    )


def _case_id(value: strawberry.ID | None) -> uuid.UUID | None:
    """A case's global id (as the read side gives it) to its key."""
    if value is None:
        return None
    try:
        global_id = relay.GlobalID.from_id(str(value))
    except (ValueError, TypeError):
        raise InvalidCaseInput("not a case id", field="caseId") from None
    if global_id.type_name != "Case":
        raise InvalidCaseInput("not a case id", field="caseId")
    return _uuid(global_id.node_id, "caseId")


def _uuid(value: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidCaseInput("not an id", field=field) from None
