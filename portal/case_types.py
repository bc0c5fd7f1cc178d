"""The GraphQL types of case review: the inputs of the ``case*`` mutations and their
payloads, which answer the read side's :class:`~portal.read.types.Case` (see
:mod:`portal.case_mutations`)."""

from __future__ import annotations

from enum import Enum

import strawberry

from domain.cases import Disposition as DomainDisposition
from portal.read.types import Case


@strawberry.enum(description="Why a review step was refused.")
class CaseErrorCode(Enum):
    STALE_VERSION = "STALE_VERSION"
    TRANSITION_NOT_ALLOWED = "TRANSITION_NOT_ALLOWED"
    FOUR_EYES = "FOUR_EYES"
    NOT_FOUND = "NOT_FOUND"
    NOT_ASSIGNEE = "NOT_ASSIGNEE"
    FORBIDDEN_ROLE = "FORBIDDEN_ROLE"
    INVALID_INPUT = "INVALID_INPUT"


@strawberry.type(description="A refused review step; nothing of it was written.")
class CaseError:
    code: CaseErrorCode
    field: str | None = strawberry.field(description="The input at fault, when one is.")
    message: str


@strawberry.type
class CaseCommentWritten:
    comment_id: strawberry.ID
    version: int = strawberry.field(description="1 for a new comment; an edit adds one.")
    evidence_ids: list[strawberry.ID]


@strawberry.type
class CaseMutationPayload:
    client_mutation_id: str | None
    case: Case | None = strawberry.field(
        description="The case as the step left it; null when refused."
    )
    errors: list[CaseError]


@strawberry.type
class CaseClaimPayload(CaseMutationPayload):
    pass


@strawberry.type
class CaseAssignPayload(CaseMutationPayload):
    pass


@strawberry.type
class CaseCommentPayload(CaseMutationPayload):
    comment: CaseCommentWritten | None = None


@strawberry.type
class CaseProposeDispositionPayload(CaseMutationPayload):
    pass


@strawberry.type
class CaseApproveDispositionPayload(CaseMutationPayload):
    pass


@strawberry.type
class CaseRejectDispositionPayload(CaseMutationPayload):
    pass


@strawberry.type
class CaseEscalatePayload(CaseMutationPayload):
    pass


@strawberry.type
class CaseReopenPayload(CaseMutationPayload):
    pass


@strawberry.input(description="Claim a case by id, or the next one of a queue.")
class CaseClaimInput:
    case_id: strawberry.ID | None = strawberry.field(
        default=None, description="Leave out to claim the next case of `queue`."
    )
    expected_version: int | None = strawberry.field(
        default=None, description="Required with caseId."
    )
    queue: str | None = strawberry.field(
        default=None, description="Without caseId: this queue, or every queue when null."
    )
    client_mutation_id: str | None = None


@strawberry.input
class CaseAssignInput:
    case_id: strawberry.ID
    expected_version: int
    assignee: str | None = strawberry.field(description="Null takes the case back to its queue.")
    client_mutation_id: str | None = None


@strawberry.input(description="A document id or a URL, with the SHA-256 of its content.")
class CaseEvidenceInput:
    document_id: str | None = None
    url: str | None = None
    sha256: str = strawberry.field(description="64 lower-case hex digits.")
    description: str = ""


@strawberry.input
class CaseCommentInput:
    case_id: strawberry.ID
    expected_version: int
    body: str
    comment_id: strawberry.ID | None = strawberry.field(
        default=None, description="Edit this comment of yours: its next version is written."
    )
    evidence: list[CaseEvidenceInput] = strawberry.field(default_factory=list)
    client_mutation_id: str | None = None


@strawberry.input
class CaseProposeDispositionInput:
    case_id: strawberry.ID
    expected_version: int
    disposition: DomainDisposition
    rationale: str
    client_mutation_id: str | None = None


@strawberry.input
class CaseApproveDispositionInput:
    case_id: strawberry.ID
    expected_version: int
    client_mutation_id: str | None = None


@strawberry.input
class CaseReasonedInput:
    case_id: strawberry.ID
    expected_version: int
    reason: str
    client_mutation_id: str | None = None


@strawberry.input
class CaseRejectDispositionInput(CaseReasonedInput):
    pass


@strawberry.input
class CaseEscalateInput(CaseReasonedInput):
    pass


@strawberry.input
class CaseReopenInput(CaseReasonedInput):
    pass
