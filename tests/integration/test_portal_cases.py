"""Case review through the GraphQL API, from an ingested event to a closed case."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry import relay

from adapters.audit_trail import verify
from adapters.auth import Role
from adapters.score_queue import enqueue_score
from adapters.settings import Settings
from adapters.tenants import create_tenant
from domain.ports import UnitOfWorkFactory
from tests.integration.case_support import as_owner, open_cases
from tests.integration.portal_support import Portal, error_codes, open_portal, token
from tests.integration.scoring_support import (
    activate_default_ruleset,
    alerting,
    eventually,
    working,
)

STATE = """case { id status version assignee queue band slaBreached
  proposal { disposition proposedBy } decision { approved decidedBy } }"""
ERRORS = "errors { code field message }"

CLAIM = f"""
mutation Claim($input: CaseClaimInput!) {{
  caseClaim(input: $input) {{ clientMutationId {STATE} {ERRORS} }}
}}"""
ASSIGN = f"""
mutation Assign($input: CaseAssignInput!) {{ caseAssign(input: $input) {{ {STATE} {ERRORS} }} }}"""
COMMENT = f"""
mutation Comment($input: CaseCommentInput!) {{
  caseComment(input: $input) {{ {STATE} {ERRORS} comment {{ commentId version evidenceIds }} }}
}}"""
PROPOSE = f"""
mutation Propose($input: CaseProposeDispositionInput!) {{
  caseProposeDisposition(input: $input) {{ {STATE} {ERRORS} }}
}}"""
APPROVE = f"""
mutation Approve($input: CaseApproveDispositionInput!) {{
  caseApproveDisposition(input: $input) {{ clientMutationId {STATE} {ERRORS} }}
}}"""
REJECT = f"""
mutation Reject($input: CaseRejectDispositionInput!) {{
  caseRejectDisposition(input: $input) {{ {STATE} {ERRORS} }}
}}"""
ESCALATE = f"""
mutation Escalate($input: CaseEscalateInput!) {{
  caseEscalate(input: $input) {{ {STATE} {ERRORS} }}
}}"""
REOPEN = f"""
mutation Reopen($input: CaseReopenInput!) {{ caseReopen(input: $input) {{ {STATE} {ERRORS} }} }}"""


@pytest.fixture
async def portal(settings: Settings) -> AsyncIterator[Portal]:
    async with open_portal(settings) as client:
        yield client


def case_gid(case_id: uuid.UUID) -> str:
    """The global id the API gives a case."""
    return relay.to_base64("Case", case_id)


class Reviewer:
    """One person at the API, with a token of their own."""

    def __init__(
        self, portal: Portal, settings: Settings, tenant: uuid.UUID, name: str, *roles: Role
    ) -> None:
        self._portal = portal
        self._token = token(settings, tenant, *roles, subject=name)

    async def call(self, document: str, **fields: Any) -> dict[str, Any]:
        body = await self._portal.graphql(document, {"input": fields}, token=self._token)
        assert "errors" not in body, body
        (payload,) = body["data"].values()
        result: dict[str, Any] = payload
        return result

    async def read(self, document: str, **variables: Any) -> dict[str, Any]:
        body = await self._portal.graphql(document, variables, token=self._token)
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data

    async def ok(self, document: str, **fields: Any) -> dict[str, Any]:
        payload = await self.call(document, **fields)
        assert payload["errors"] == [], payload
        state: dict[str, Any] = payload["case"]
        return state

    async def refused(self, document: str, **fields: Any) -> str:
        payload = await self.call(document, **fields)
        assert payload["case"] is None, payload
        (error,) = payload["errors"]
        code: str = error["code"]
        return code


async def test_from_an_ingested_event_to_a_closed_case_with_each_step_on_the_audit_trail(
    portal: Portal,
    settings: Settings,
    scoring: Settings,
    queue: ArqRedis,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    await activate_default_ruleset(uow_factory, tenant)
    ingested = await portal.ingest(
        [alerting(transaction_event)], token=token(settings, tenant, Role.INGEST)
    )
    event_id = uuid.UUID(ingested["results"][0]["eventId"])
    async with working(scoring):
        await enqueue_score(queue, tenant, event_id)

        async def case_opened() -> bool:
            rows = await as_owner(
                owner_engine, "SELECT 1 FROM cases WHERE tenant_id = :t", t=tenant
            )
            return bool(rows)

        await eventually(case_opened, what="scoring opened a case")

    alice = Reviewer(portal, settings, tenant, "alice", Role.ANALYST)
    bob = Reviewer(portal, settings, tenant, "bob", Role.SUPERVISOR)

    claimed = await alice.ok(CLAIM, queue="default")
    case_id = claimed["id"]
    assert (claimed["status"], claimed["assignee"], claimed["version"]) == (
        "IN_REVIEW",
        "alice",
        2,
    )
    commented = await alice.ok(
        COMMENT,
        caseId=case_id,
        expectedVersion=2,
        body="Transfer to a high-risk country; invoice requested.",
        evidence=[{"url": "https://dms.bank.example/d/77", "sha256": "0f" * 32}],
    )
    # The supervisor reads what the analyst wrote before deciding.
    notes = await bob.read(
        "query($id: ID!) { case(id: $id) { comments { body author version }"
        " evidence { kind reference sha256 addedBy } } }",
        id=case_id,
    )
    assert notes["case"] == {
        "comments": [
            {
                "body": "Transfer to a high-risk country; invoice requested.",
                "author": "alice",
                "version": 1,
            }
        ],
        "evidence": [
            {
                "kind": "url",
                "reference": "https://dms.bank.example/d/77",
                "sha256": "0f" * 32,
                "addedBy": "alice",
            }
        ],
    }
    proposed = await alice.ok(
        PROPOSE,
        caseId=case_id,
        expectedVersion=commented["version"],
        disposition="NO_FURTHER_ACTION",
        rationale="Invoice matches a known supplier contract.",
    )
    assert proposed["status"] == "PENDING_APPROVAL"
    assert proposed["proposal"] == {"disposition": "NO_FURTHER_ACTION", "proposedBy": "alice"}
    closed = await bob.ok(APPROVE, caseId=case_id, expectedVersion=proposed["version"])

    assert (closed["status"], closed["version"]) == ("CLOSED", 5)
    assert closed["decision"] == {"approved": True, "decidedBy": "bob"}
    read = await bob.read(
        "query($id: ID!) { case(id: $id) { status version assignee"
        " proposal { disposition } decision { decidedBy } alertCount } }",
        id=case_id,
    )
    assert read["case"] == {
        "status": "CLOSED",
        "version": 5,
        "assignee": "alice",
        "proposal": {"disposition": "NO_FURTHER_ACTION"},
        "decision": {"decidedBy": "bob"},
        "alertCount": 1,
    }
    trail = await as_owner(
        owner_engine,
        "SELECT action, actor FROM audit_records WHERE tenant_id = :t ORDER BY seq",
        t=tenant,
    )
    steps = [tuple(row) for row in trail if row.action.startswith(("event.", "case.", "risk."))]
    assert steps == [
        ("event.accepted", "core-banking"),
        ("risk.assessed", "vigil:scoring"),
        ("case.opened", "vigil:scoring"),
        ("case.claimed", "alice"),
        ("case.commented", "alice"),
        ("case.proposed", "alice"),
        ("case.closed", "bob"),
    ]
    async with owner_engine.connect() as connection:
        assert await verify(connection, tenant) == len(trail)


async def test_the_api_refuses_what_four_eyes_roles_and_versions_forbid(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    (case_id,) = [case_gid(c) for c in await open_cases(uow_factory, tenant, transaction_event, 1)]
    carol = Reviewer(portal, settings, tenant, "carol", Role.ANALYST, Role.SUPERVISOR)
    dave = Reviewer(portal, settings, tenant, "dave", Role.ANALYST)
    regulator = Reviewer(portal, settings, tenant, "rita", Role.REGULATOR)

    assert await regulator.refused(CLAIM, caseId=case_id, expectedVersion=1) == "FORBIDDEN_ROLE"
    # A regulator's token never writes, whatever other roles it also carries.
    both = Reviewer(portal, settings, tenant, "rita", Role.REGULATOR, Role.ANALYST)
    assert await both.refused(CLAIM, caseId=case_id, expectedVersion=1) == "FORBIDDEN_ROLE"
    await carol.ok(CLAIM, caseId=case_id, expectedVersion=1)
    assert await dave.refused(CLAIM, caseId=case_id, expectedVersion=1) == "STALE_VERSION"
    assert (
        await dave.refused(
            PROPOSE, caseId=case_id, expectedVersion=2, disposition="SAR_FILED", rationale="x"
        )
        == "NOT_ASSIGNEE"
    )
    await carol.ok(
        PROPOSE, caseId=case_id, expectedVersion=2, disposition="SAR_FILED", rationale="mule"
    )

    assert await carol.refused(APPROVE, caseId=case_id, expectedVersion=3) == "FOUR_EYES"
    assert await dave.refused(APPROVE, caseId=case_id, expectedVersion=3) == "FORBIDDEN_ROLE"
    assert await carol.refused(REJECT, caseId=case_id, expectedVersion=3, reason="no") == (
        "FOUR_EYES"
    )
    # Who tried to get past the controls is on the trail; the case did not change.
    tried = await as_owner(
        owner_engine,
        "SELECT actor, details->>'code' AS code, details->>'mutation' AS mutation"
        " FROM audit_records WHERE tenant_id = :t AND action = 'review.refused' ORDER BY seq",
        t=tenant,
    )
    assert [tuple(row) for row in tried] == [
        ("rita", "FORBIDDEN_ROLE", "caseClaim"),
        ("rita", "FORBIDDEN_ROLE", "caseClaim"),
        ("carol", "FOUR_EYES", "caseApproveDisposition"),
        ("dave", "FORBIDDEN_ROLE", "caseApproveDisposition"),
        ("carol", "FOUR_EYES", "caseRejectDisposition"),
    ]
    assert (
        await carol.refused(ESCALATE, caseId=case_id, expectedVersion=3, reason="help")
        == "TRANSITION_NOT_ALLOWED"
    )
    assert await carol.refused(APPROVE, caseId="nope", expectedVersion=3) == "INVALID_INPUT"
    subject_gid = relay.to_base64("Subject", uuid.uuid4())
    assert await carol.refused(APPROVE, caseId=subject_gid, expectedVersion=3) == "INVALID_INPUT"
    assert await carol.refused(APPROVE, caseId=case_gid(uuid.uuid4()), expectedVersion=3) == (
        "NOT_FOUND"
    )


async def test_a_retried_mutation_gets_its_first_answer(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    (case_id,) = [case_gid(c) for c in await open_cases(uow_factory, tenant, transaction_event, 1)]
    alice = Reviewer(portal, settings, tenant, "alice", Role.ANALYST)
    bob = Reviewer(portal, settings, tenant, "bob", Role.SUPERVISOR)
    await alice.ok(CLAIM, caseId=case_id, expectedVersion=1)
    await alice.ok(
        PROPOSE, caseId=case_id, expectedVersion=2, disposition="FALSE_POSITIVE", rationale="ok"
    )

    first = await bob.call(APPROVE, caseId=case_id, expectedVersion=3, clientMutationId="a-1")
    again = await bob.call(APPROVE, caseId=case_id, expectedVersion=3, clientMutationId="a-1")
    fresh = await bob.call(APPROVE, caseId=case_id, expectedVersion=3, clientMutationId="a-2")

    assert again == first
    assert first["case"]["status"] == "CLOSED"
    assert [error["code"] for error in fresh["errors"]] == ["STALE_VERSION"]
    closes = await as_owner(
        owner_engine,
        "SELECT count(*) AS n FROM outbox WHERE tenant_id = :t AND message_type = 'case.closed'",
        t=tenant,
    )
    assert closes[0].n == 1


async def test_supervisors_assign_unassign_and_reopen_and_other_tenants_see_nothing(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    uow_factory: UnitOfWorkFactory,
    transaction_event: Any,
) -> None:
    (case_id,) = [case_gid(c) for c in await open_cases(uow_factory, tenant, transaction_event, 1)]
    bob = Reviewer(portal, settings, tenant, "bob", Role.SUPERVISOR)
    alice = Reviewer(portal, settings, tenant, "alice", Role.ANALYST)

    assigned = await bob.ok(ASSIGN, caseId=case_id, expectedVersion=1, assignee="erin")
    unassigned = await bob.ok(ASSIGN, caseId=case_id, expectedVersion=2, assignee=None)
    escalated = await alice.ok(ESCALATE, caseId=case_id, expectedVersion=3, reason="PEP link")
    assert [assigned["assignee"], unassigned["assignee"], escalated["status"]] == [
        "erin",
        None,
        "ESCALATED",
    ]
    assert await bob.refused(REOPEN, caseId=case_id, expectedVersion=4, reason="x") == (
        "TRANSITION_NOT_ALLOWED"
    )

    other = await create_tenant(owner_engine, f"t-{uuid.uuid4().hex[:12]}", "Other bank")
    stranger = Reviewer(portal, settings, other, "bob", Role.SUPERVISOR)
    assert await stranger.refused(ASSIGN, caseId=case_id, expectedVersion=4, assignee="x") == (
        "NOT_FOUND"
    )


async def test_case_mutations_need_a_token(portal: Portal) -> None:
    body = await portal.graphql(CLAIM, {"input": {"queue": "default"}})
    assert error_codes(body) == ["UNAUTHENTICATED"]


async def test_two_supervisors_approving_at_once_through_the_api_one_gets_a_conflict(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    transaction_event: Any,
) -> None:
    (case_id,) = [case_gid(c) for c in await open_cases(uow_factory, tenant, transaction_event, 1)]
    alice = Reviewer(portal, settings, tenant, "alice", Role.ANALYST)
    await alice.ok(CLAIM, caseId=case_id, expectedVersion=1)
    await alice.ok(
        PROPOSE, caseId=case_id, expectedVersion=2, disposition="SAR_FILED", rationale="mule"
    )
    bob = Reviewer(portal, settings, tenant, "bob", Role.SUPERVISOR)
    dora = Reviewer(portal, settings, tenant, "dora", Role.SUPERVISOR)

    answers = await asyncio.gather(
        bob.call(APPROVE, caseId=case_id, expectedVersion=3),
        dora.call(APPROVE, caseId=case_id, expectedVersion=3),
    )

    codes = sorted(error["code"] for answer in answers for error in answer["errors"])
    closed = [answer["case"] for answer in answers if answer["case"] is not None]
    assert codes == ["STALE_VERSION"]
    assert [case["status"] for case in closed] == ["CLOSED"]


async def test_a_bad_evidence_reference_is_refused_naming_its_field(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    transaction_event: Any,
) -> None:
    (case_id,) = [case_gid(c) for c in await open_cases(uow_factory, tenant, transaction_event, 1)]
    alice = Reviewer(portal, settings, tenant, "alice", Role.ANALYST)

    payload = await alice.call(
        COMMENT,
        caseId=case_id,
        expectedVersion=1,
        body="see attached",
        evidence=[{"documentId": "dms:1", "sha256": "ab" * 32}, {"url": "x", "sha256": "0"}],
    )

    assert payload["case"] is None
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [
        ("INVALID_INPUT", "evidence.1.url")
    ]


async def test_an_edited_comment_reads_as_its_latest_version_and_only_in_its_tenant(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    (case_id,) = [case_gid(c) for c in await open_cases(uow_factory, tenant, transaction_event, 1)]
    alice = Reviewer(portal, settings, tenant, "alice", Role.ANALYST)
    await alice.ok(CLAIM, caseId=case_id, expectedVersion=1)
    first = await alice.call(COMMENT, caseId=case_id, expectedVersion=2, body="first words")
    comment_id = first["comment"]["commentId"]
    await alice.ok(
        COMMENT, caseId=case_id, expectedVersion=3, body="second thoughts", commentId=comment_id
    )
    await alice.ok(COMMENT, caseId=case_id, expectedVersion=4, body="another note")

    query = "query($id: ID!) { case(id: $id) { comments { commentId body version } } }"
    read = await alice.read(query, id=case_id)
    assert read["case"]["comments"] == [
        {"commentId": comment_id, "body": "second thoughts", "version": 2},
        {
            "commentId": read["case"]["comments"][1]["commentId"],
            "body": "another note",
            "version": 1,
        },
    ]
    other = await create_tenant(owner_engine, f"t-{uuid.uuid4().hex[:12]}", "Other bank")
    stranger = Reviewer(portal, settings, other, "eve", Role.ANALYST)
    assert (await stranger.read(query, id=case_id))["case"] is None
