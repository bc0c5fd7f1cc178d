"""One request's reading: its caller, its database session, its DataLoaders.

Everything here is made per request and dropped with it: a DataLoader's cache never
outlives the request, so no tenant's rows can be served to another from memory, and a
change committed between two requests is always seen by the second. Each loader batches
the keys asked for in one tick of the event loop into one statement.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import GraphQLError
from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry.dataloader import DataLoader
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionResult

from adapters.auth import Principal, Role
from adapters.read_store import (
    AssessmentRow,
    CaseRow,
    CommentRow,
    EvidenceRow,
    ReadSession,
    ReadStore,
)
from domain.audit import AuditEntry
from domain.ids import new_id
from domain.scoring import AlertRecord

T = TypeVar("T")
# What a case has many of.
N = TypeVar("N", AlertRecord, CommentRow, EvidenceRow)

REGULATOR_READ = "regulator.read"


class Reader:
    def __init__(
        self, engine: AsyncEngine, principal: Principal, correlation_id: str | None
    ) -> None:
        self.principal = principal
        self.session = ReadSession(engine, principal.tenant_id)
        self._correlation_id = correlation_id
        self._noted: set[tuple[str, str, str]] = set()
        self.cases = self._loader(ReadStore.cases_by_ids, lambda row: row.case_id)
        self.subjects = self._loader(ReadStore.subjects_by_ids, lambda row: row.subject_id)
        self.events = self._loader(ReadStore.events_by_ids, lambda row: row.event_id)
        self.assessments = self._loader(ReadStore.assessments_by_ids, lambda row: row.assessment_id)
        self.alerts = self._loader(ReadStore.alerts_by_ids, lambda row: row.alert_id)
        self.latest_assessment: DataLoader[uuid.UUID, AssessmentRow | None] = DataLoader(
            self._latest_assessments
        )
        self.case_alerts: DataLoader[uuid.UUID, list[AlertRecord]] = DataLoader(
            self._per_case(ReadStore.alerts_of_cases)
        )
        self.case_comments: DataLoader[uuid.UUID, list[CommentRow]] = DataLoader(
            self._per_case(ReadStore.comments_of_cases)
        )
        self.case_evidence: DataLoader[uuid.UUID, list[EvidenceRow]] = DataLoader(
            self._per_case(ReadStore.evidence_of_cases)
        )

    async def read(self, reading: Callable[[ReadStore], Awaitable[T]]) -> T:
        return await self.session.read(reading)

    def note_read(self, entity_type: str, entity_id: uuid.UUID | str, operation: str) -> None:
        """Put a regulator's read of an entity on the audit trail (once per request and
        operation)."""
        if not self.principal.has(Role.REGULATOR):
            return
        key = (entity_type, str(entity_id), operation)
        if key in self._noted:
            return
        self._noted.add(key)
        self.session.record(
            AuditEntry(
                record_id=new_id(),
                actor=self.principal.subject,
                action=REGULATOR_READ,
                entity_type=entity_type,
                entity_id=str(entity_id),
                correlation_id=self._correlation_id,
                details={"operation": operation},
            )
        )

    def _loader(
        self,
        read_many: Callable[[ReadStore, Sequence[uuid.UUID]], Awaitable[Sequence[T]]],
        key_of: Callable[[T], uuid.UUID],
    ) -> DataLoader[uuid.UUID, T | None]:
        async def load(keys: list[uuid.UUID]) -> list[T | None]:
            rows = await self.read(lambda store: read_many(store, keys))
            found = {key_of(row): row for row in rows}
            return [found.get(key) for key in keys]

        return DataLoader(load)

    async def _latest_assessments(self, keys: list[uuid.UUID]) -> list[AssessmentRow | None]:
        found = await self.read(lambda store: store.latest_assessments(keys))
        return [found.get(key) for key in keys]

    def _per_case(
        self, read_many: Callable[[ReadStore, Sequence[uuid.UUID]], Awaitable[Sequence[N]]]
    ) -> Callable[[list[uuid.UUID]], Awaitable[list[list[N]]]]:
        """A loader's batch function: the rows of each case, in the order read."""

        async def load(keys: list[uuid.UUID]) -> list[list[N]]:
            rows = await self.read(lambda store: read_many(store, keys))
            by_case: dict[uuid.UUID, list[N]] = {key: [] for key in keys}
            for row in rows:
                by_case[row.case_id].append(row)
            return [by_case[key] for key in keys]

        return load

    def prime_cases(self, rows: Sequence[CaseRow]) -> None:
        """Cases read as a page are known by id for the rest of the request."""
        self.cases.prime_many({row.case_id: row for row in rows})


class CloseReads(SchemaExtension):
    """End the request's read session when the operation is done, committing the audit
    records of its reads. If they cannot be committed, the answer is withheld: a
    regulator never sees what the trail does not show was read."""

    async def on_operation(self) -> AsyncIterator[None]:
        yield
        # Only a reader the request made: asking for "reader" would make one.
        reader = getattr(self.execution_context.context, "made_reader", None)
        if not isinstance(reader, Reader):
            return
        try:
            await reader.session.close()
        except Exception as error:
            result = self.execution_context.result
            failure = GraphQLError("the reads could not be recorded", original_error=error)
            if isinstance(result, GraphQLExecutionResult | ExecutionResult):
                result.data = None
                result.errors = [failure]
            else:
                raise
