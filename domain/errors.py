"""The domain's exceptions.

    VigilError                      root of everything Vigil raises on purpose
    ├── InvalidEvent                an event that can never be valid (code, field, message)
    ├── IdempotencyConflict         a key seen before with a different payload
    ├── AuditChainBroken            a record whose hash or link does not verify
    ├── UnknownTenant               a tenant id that does not exist
    ├── CaseError                   a review step refused (code, field, message)
    │   ├── CaseNotFound            no such case in the caller's tenant
    │   ├── StaleVersion            the case changed since the caller read it
    │   ├── TransitionNotAllowed    the action is not in the table for the case's status
    │   ├── ForbiddenRole           the caller lacks the role the action needs
    │   ├── FourEyes                the approver proposed, or is not a supervisor
    │   ├── NotAssignee             only the case's assignee may do this
    │   └── InvalidCaseInput        a missing reason, an over-long comment, a bad hash
    └── TransientFailure            worth retrying: a deadlock, a lost connection, a race

Each error carries a stable machine-readable ``code``; the edges (GraphQL, the inbound
queue) map codes to responses in one place and never show internal detail.
"""

from __future__ import annotations


class VigilError(Exception):
    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidEvent(VigilError):
    """An event that fails validation. ``field`` is a dotted path into the event."""

    def __init__(self, code: str, field: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.field = field

    def __repr__(self) -> str:
        return f"InvalidEvent(code={self.code!r}, field={self.field!r}, message={self.message!r})"


class IdempotencyConflict(VigilError):
    code = "IDEMPOTENCY_CONFLICT"

    def __init__(self, idempotency_key: str) -> None:
        super().__init__("this idempotency key was used before with a different payload")
        self.idempotency_key = idempotency_key


class AuditChainBroken(VigilError):
    code = "AUDIT_CHAIN_BROKEN"

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"audit record {seq}: {reason}")
        self.seq = seq
        self.reason = reason


class UnknownTenant(VigilError):
    code = "UNKNOWN_TENANT"


class TransientFailure(VigilError):
    """A failure worth retrying: a deadlock, a lost connection, a racing writer."""

    code = "TRANSIENT"


class CaseError(VigilError):
    """A review step that was refused; nothing of it was written. ``field`` names the
    input at fault, when one is."""

    code = "CASE_ERROR"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class CaseNotFound(CaseError):
    code = "NOT_FOUND"


class StaleVersion(CaseError):
    code = "STALE_VERSION"


class TransitionNotAllowed(CaseError):
    code = "TRANSITION_NOT_ALLOWED"


class ForbiddenRole(CaseError):
    code = "FORBIDDEN_ROLE"


class FourEyes(CaseError):
    code = "FOUR_EYES"


class NotAssignee(CaseError):
    code = "NOT_ASSIGNEE"


class InvalidCaseInput(CaseError):
    code = "INVALID_INPUT"
