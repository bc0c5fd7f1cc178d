"""Who reads what on the review portal: tenants see only their own rows, each role only
its operations, regulators' reads are audited, and the review page costs a fixed number
of SQL statements."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.audit_trail import verify
from adapters.auth import Role
from adapters.settings import Settings
from adapters.tenants import create_tenant
from portal.resources import resources_of
from tests.integration.portal_support import Portal, error_codes, open_portal, token
from tests.integration.read_support import REVIEW_PAGE, global_id, seed_cases


@pytest.fixture
async def portal(settings: Settings) -> AsyncIterator[Portal]:
    async with open_portal(settings) as client:
        yield client


async def first_case(owner_engine: AsyncEngine, tenant: uuid.UUID) -> dict[str, Any]:
    """Ids of one of the tenant's cases, its subject, its latest assessment, alert and
    event, as the owner reads them."""
    async with owner_engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT c.case_id, c.subject_id, a.assessment_id, a.alert_id, a.event_id"
                    " FROM cases c JOIN alerts a USING (tenant_id, case_id)"
                    " WHERE c.tenant_id = :t ORDER BY c.case_id LIMIT 1"
                ),
                {"t": tenant},
            )
        ).one()
    return {
        "Case": global_id("Case", row.case_id),
        "Subject": global_id("Subject", row.subject_id),
        "RiskAssessment": global_id("RiskAssessment", row.assessment_id),
        "Alert": global_id("Alert", row.alert_id),
        "Event": global_id("Event", row.event_id),
    }


# Each read operation, with the ids it needs, and what it answers when nothing is visible.
OPERATIONS: dict[str, tuple[str, str]] = {
    "cases": ("query { cases(first: 5) { edges { node { id } } } }", "cases"),
    "case": ("query($id: ID!) { case(id: $id) { id band } }", "case"),
    "subject": (
        "query($id: ID!) { subject(id: $id) { id events(first: 5) { edges { node { id } } }"
        " assessments(first: 5) { edges { node { id score } } } } }",
        "subject",
    ),
    "assessment": (
        "query($id: ID!) { assessment(id: $id) { id explanation { score } } }",
        "assessment",
    ),
    "events": ("query { events(first: 5) { edges { node { id amount } } } }", "events"),
    "node": ("query($id: ID!) { node(id: $id) { id } }", "node"),
    "auditTrail": (
        "query($id: ID!) { auditTrail(of: $id, first: 5) { edges { node { seq action } } } }",
        "auditTrail",
    ),
}
OPERATION_IDS = {
    "case": "Case",
    "subject": "Subject",
    "assessment": "RiskAssessment",
    "node": "Case",
    "auditTrail": "Case",
}

ALLOWED: dict[Role, set[str]] = {
    Role.INGEST: set(),
    Role.ANALYST: set(OPERATIONS) - {"auditTrail"},
    Role.SUPERVISOR: set(OPERATIONS),
    Role.REGULATOR: set(OPERATIONS),
    Role.ADMIN: set(OPERATIONS),
}


async def run(portal: Portal, bearer: str, operation: str, nodes: dict[str, Any]) -> dict[str, Any]:
    document, _ = OPERATIONS[operation]
    variables = {"id": nodes[OPERATION_IDS[operation]]} if operation in OPERATION_IDS else {}
    return await portal.graphql(document, variables, token=bearer)


def is_empty(value: Any) -> bool:
    return value is None or value == {"edges": []}


@pytest.mark.parametrize("role", list(Role), ids=[role.value for role in Role])
async def test_each_role_may_run_only_its_operations(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    uow_factory: Any,
    transaction_event: Any,
    owner_engine: AsyncEngine,
    role: Role,
) -> None:
    await seed_cases(uow_factory, tenant, transaction_event, 1)
    nodes = await first_case(owner_engine, tenant)
    bearer = token(settings, tenant, role, subject=f"{role.value}-1")

    for operation, (_, field) in OPERATIONS.items():
        body = await run(portal, bearer, operation, nodes)
        if operation in ALLOWED[role]:
            assert "errors" not in body, (operation, body)
            assert not is_empty(body["data"][field]), (operation, body)
        else:
            assert error_codes(body) == ["FORBIDDEN"], (operation, body)
            assert body["data"] is None or body["data"][field] is None, (operation, body)

    # Reading never writes: only the ingest role may store events.
    ingest = await portal.graphql(
        "mutation($input: IngestEventsInput!) { ingestEvents(input: $input) { acceptedCount } }",
        {"input": {"events": [transaction_event()]}},
        token=bearer,
    )
    expected = [] if role is Role.INGEST else ["FORBIDDEN"]
    assert error_codes(ingest) == expected


async def test_no_query_or_id_of_one_tenant_shows_anything_to_another(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    uow_factory: Any,
    transaction_event: Any,
    owner_engine: AsyncEngine,
) -> None:
    await seed_cases(uow_factory, tenant, transaction_event, 2)
    nodes = await first_case(owner_engine, tenant)
    other = await create_tenant(owner_engine, f"t-{uuid.uuid4().hex[:12]}", "Other bank")
    stranger = token(settings, other, *Role, subject="stranger")
    owner = token(settings, tenant, *Role, subject="insider")

    for operation, (_, field) in OPERATIONS.items():
        seen = await run(portal, owner, operation, nodes)
        assert not is_empty(seen["data"][field]), (operation, seen)
        hidden = await run(portal, stranger, operation, nodes)
        assert "errors" not in hidden, (operation, hidden)
        assert is_empty(hidden["data"][field]), (operation, hidden)

    for type_name, node_id in nodes.items():
        for query in ("node", {"Case": "case", "Subject": "subject"}.get(type_name)):
            if query is None:
                continue
            body = await portal.graphql(
                f"query($id: ID!) {{ {query}(id: $id) {{ id }} }}", {"id": node_id}, token=stranger
            )
            assert body == {"data": {query: None}}, (type_name, body)
    subject_events = await portal.graphql(
        "query($s: ID!) { events(first: 5, subject: $s) { edges { node { id } } } }",
        {"s": nodes["Subject"]},
        token=stranger,
    )
    assert subject_events == {"data": {"events": {"edges": []}}}


async def test_an_id_of_nothing_and_an_id_of_another_tenant_get_the_same_answer(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    uow_factory: Any,
    transaction_event: Any,
    owner_engine: AsyncEngine,
) -> None:
    await seed_cases(uow_factory, tenant, transaction_event, 1)
    nodes = await first_case(owner_engine, tenant)
    other = await create_tenant(owner_engine, f"t-{uuid.uuid4().hex[:12]}", "Other bank")
    stranger = token(settings, other, Role.ANALYST)
    document = "query($id: ID!) { case(id: $id) { id } }"

    theirs = await portal.graphql(document, {"id": nodes["Case"]}, token=stranger)
    nothing = await portal.graphql(
        document, {"id": global_id("Case", uuid.uuid4())}, token=stranger
    )
    garbage = await portal.graphql(document, {"id": global_id("Case", "x")}, token=stranger)

    assert theirs == nothing == garbage == {"data": {"case": None}}


async def regulator_reads(owner_engine: AsyncEngine, tenant: uuid.UUID) -> list[Any]:
    async with owner_engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT actor, entity_type, entity_id, correlation_id, details"
                " FROM audit_records WHERE tenant_id = :t AND action = 'regulator.read'"
                " ORDER BY seq"
            ),
            {"t": tenant},
        )
        return list(rows)


async def test_a_regulator_s_reads_are_put_on_the_audit_trail_and_an_analyst_s_are_not(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    uow_factory: Any,
    transaction_event: Any,
    owner_engine: AsyncEngine,
) -> None:
    await seed_cases(uow_factory, tenant, transaction_event, 1)
    nodes = await first_case(owner_engine, tenant)
    analyst = token(settings, tenant, Role.ANALYST)
    for operation in OPERATIONS.keys() - {"auditTrail"}:
        await run(portal, analyst, operation, nodes)
    assert await regulator_reads(owner_engine, tenant) == []

    regulator = token(settings, tenant, Role.REGULATOR, subject="bafin-examiner")
    headers = {"X-Correlation-ID": "exam-2026-1"}
    for operation in ("case", "assessment", "auditTrail"):
        document, _ = OPERATIONS[operation]
        body = await portal.graphql(
            document, {"id": nodes[OPERATION_IDS[operation]]}, token=regulator, headers=headers
        )
        assert "errors" not in body, body

    reads = await regulator_reads(owner_engine, tenant)
    assert [(row.entity_type, row.details["operation"]) for row in reads] == [
        ("case", "case"),
        ("assessment", "assessment"),
        ("case", "auditTrail"),
    ]
    assert {row.actor for row in reads} == {"bafin-examiner"}
    assert {row.correlation_id for row in reads} == {"exam-2026-1"}
    async with owner_engine.connect() as connection:
        assert await verify(connection, tenant) > len(reads)

    # The trail a regulator reads next shows the earlier reading.
    body = await portal.graphql(
        OPERATIONS["auditTrail"][0].replace("first: 5", "first: 50"),
        {"id": nodes["Case"]},
        token=regulator,
    )
    actions = [edge["node"]["action"] for edge in body["data"]["auditTrail"]["edges"]]
    assert actions.count("regulator.read") == 2


@contextmanager
def statements_of(engine: AsyncEngine) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)


@pytest.mark.parametrize("role", [Role.ANALYST, Role.REGULATOR])
async def test_the_review_page_costs_the_same_statements_for_5_cases_as_for_50(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    uow_factory: Any,
    transaction_event: Any,
    role: Role,
) -> None:
    await seed_cases(uow_factory, tenant, transaction_event, 55)
    assert portal.app is not None
    engine = resources_of(portal.app.state).engine
    bearer = token(settings, tenant, role)
    counts = {}
    for size in (5, 50):
        with statements_of(engine) as seen:
            body = await portal.graphql(REVIEW_PAGE, {"first": size}, token=bearer)
        assert "errors" not in body, body
        cases = body["data"]["cases"]["edges"]
        assert len(cases) == size
        assert all(case["node"]["latestAssessment"] for case in cases)
        assert all(case["node"]["subject"] for case in cases)
        counts[size] = len(seen)

    assert counts[5] == counts[50], counts
    # The tenant, the cases, their subjects, their latest assessments (and for a
    # regulator the audit chain's head, records and head again).
    assert counts[50] <= 4 + (3 if role is Role.REGULATOR else 0), counts


async def test_a_read_that_finds_no_free_connection_is_unavailable_not_internal(
    settings: Settings, tenant: uuid.UUID
) -> None:
    crowded = settings.model_copy(
        update={"database_pool_size": 1, "database_pool_timeout_seconds": 0.2}
    )
    async with open_portal(crowded) as portal:
        assert portal.app is not None
        engine = resources_of(portal.app.state).engine
        # The pool's one connection and its one overflow are both taken.
        async with engine.connect(), engine.connect():
            body = await portal.graphql(
                REVIEW_PAGE, {"first": 5}, token=token(settings, tenant, Role.ANALYST)
            )

    assert error_codes(body) == ["UNAVAILABLE"]


async def test_a_regulator_s_read_that_cannot_be_recorded_is_not_answered(
    portal: Portal, settings: Settings
) -> None:
    # A tenant with no audit chain: the read's record cannot be sealed at the end.
    nowhere = uuid.uuid4()
    regulator = token(settings, nowhere, Role.REGULATOR)

    body = await portal.graphql(
        OPERATIONS["auditTrail"][0], {"id": global_id("Case", uuid.uuid4())}, token=regulator
    )

    assert body["data"] is None
    assert error_codes(body) == ["FORBIDDEN"]
