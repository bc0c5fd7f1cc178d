"""The live review queue: the changes of a tenant's cases, in the order they committed.

A case change is read back from the tenant's audit chain: every change of a case is
audited in its own transaction with the action it published (``case.opened``,
``case.updated``, ``case.assigned`` and the ones to come) and the same fields, and the
chain numbers a tenant's records in commit order without gaps. A record's sequence
number is therefore a position from which a reader can go on without missing or
repeating a change, and the :class:`Cursor` handed to clients is that position,
encoded so that clients do not build their own.

Changes of types this module does not know are passed on as they are; the filters read
only the fields a change carries.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from domain.errors import VigilError

CASE_ENTITY = "case"
CASE_CHANGE_PREFIX = "case."

_CURSOR_PREFIX = "rq1:"
_POSITION = re.compile(r"[0-9]{1,19}")
_MAX_POSITION = 2**63 - 1  # a bigint
MAX_CURSOR_LENGTH = 64


class InvalidCursor(VigilError):
    code = "INVALID_CURSOR"


@dataclass(frozen=True, slots=True, order=True)
class Cursor:
    """A position in a tenant's case changes: everything up to it has been seen."""

    position: int

    def encode(self) -> str:
        raw = f"{_CURSOR_PREFIX}{self.position}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        if not text or len(text) > MAX_CURSOR_LENGTH:
            raise InvalidCursor("the cursor is not one this queue gave")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError) as error:
            raise InvalidCursor("the cursor is not one this queue gave") from error
        position = raw.removeprefix(_CURSOR_PREFIX)
        if position == raw or not _POSITION.fullmatch(position) or int(position) > _MAX_POSITION:
            raise InvalidCursor("the cursor is not one this queue gave")
        return cls(int(position))


@dataclass(frozen=True, slots=True)
class CaseChange:
    """One change of one case, as its audit record tells it."""

    position: int
    change_type: str
    case_id: str
    recorded_at: datetime
    data: Mapping[str, Any]

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.position)

    def text(self, field: str) -> str | None:
        """A field of the change as text, or None when it is absent or not a scalar."""
        value = self.data.get(field)
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return None


@dataclass(frozen=True, slots=True)
class ReviewFilter:
    """Which changes a subscriber wants; an empty set of a field means any value.

    A change that does not carry a filtered field (a type we do not know, say) does not
    match that filter: a subscriber asking for high-band cases is never sent a change
    that may not concern one.
    """

    bands: frozenset[str] = frozenset()
    statuses: frozenset[str] = frozenset()
    queues: frozenset[str] = frozenset()
    assignees: frozenset[str] = frozenset()

    def matches(self, change: CaseChange) -> bool:
        return all(
            not wanted or change.text(field) in wanted
            for field, wanted in (
                ("band", self.bands),
                ("status", self.statuses),
                ("queue", self.queues),
                ("assignee", self.assignees),
            )
        )


@dataclass(frozen=True, slots=True)
class CatchUp:
    """What a reader missed after a cursor: the changes, up to ``limit`` of them, and
    the tenant's position when they were read. ``complete`` is False when more changes
    were missed than the limit allows."""

    changes: Sequence[CaseChange]
    head: Cursor
    complete: bool


class CaseFeed(Protocol):
    """The tenant's case changes, read in the tenant's own transaction."""

    async def head(self) -> int:
        """The position of the tenant's latest audit record (0 before the first)."""
        ...

    async def changes_after(
        self, position: int, *, up_to: int | None, limit: int
    ) -> list[CaseChange]:
        """Case changes after ``position`` (and at most ``up_to``), oldest first."""
        ...
