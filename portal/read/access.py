"""Which roles may read what, and the per-request reader of a caller who may.

Ingest clients write events and read nothing back. Analysts, supervisors, regulators and
administrators read cases, subjects, events and assessments; audit trails are for
supervisors, regulators and administrators. Regulators only ever read, and each of
their reads of a case, an assessment or an audit trail is itself put on the trail.
"""

from __future__ import annotations

from typing import Any

import strawberry

from adapters.auth import Role
from portal.auth import Identity, authorize_any
from portal.read.reader import Reader

READERS = frozenset({Role.ANALYST, Role.SUPERVISOR, Role.REGULATOR, Role.ADMIN})
AUDIT_READERS = frozenset({Role.SUPERVISOR, Role.REGULATOR, Role.ADMIN})


def reader_for(info: strawberry.Info[Any, Any], roles: frozenset[Role]) -> Reader:
    """The request's reader, once the caller is known to hold one of ``roles``."""
    context = info.context
    identity = getattr(context, "identity", None)
    authorize_any(identity if isinstance(identity, Identity) else Identity(None), roles)
    reader = getattr(context, "reader", None)
    if not isinstance(reader, Reader):
        raise RuntimeError("an authenticated request without a reader")
    return reader
