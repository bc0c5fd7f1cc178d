"""Case review on the real database: concurrency, four eyes in the database itself,
append-only notes, the SLA sweep and retried client mutation ids."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.database import sqlstate
from domain import case_workflow as wf
from domain.case_workflow import ANALYST, SUPERVISOR, Actor
from domain.cases import CaseStatus, Disposition
from domain.errors import (
    CaseNotFound,
    FourEyes,
    InvalidCaseInput,
    StaleVersion,
    TransitionNotAllowed,
)
from services import cases as svc
from services.case_steps import StepResult
from services.cases import EvidenceRef
from tests.integration.case_support import (
    analyst,
    as_app,
    as_owner,
    audit_of_case,
    command,
    open_cases,
    outbox_types,
    supervisor,
)

ALICE, ERIN = analyst("alice"), analyst("erin")
BOB, DORA = supervisor("bob"), supervisor("dora")


async def _pending(uow_factory: Any, tenant: uuid.UUID, case_id: uuid.UUID) -> int:
    """Claim and propose as alice; the version the case is then at."""
    claimed = await svc.claim_case(uow_factory, command(tenant, ALICE, case_id, 1))
    proposed = await svc.propose_disposition(
        uow_factory,
        command(tenant, ALICE, case_id, claimed.case.version),
        Disposition.FALSE_POSITIVE,
        "salary from a known employer",
    )
    assert proposed.case.status is CaseStatus.PENDING_APPROVAL
    return proposed.case.version


async def test_each_step_writes_its_history_audit_record_and_message(
    uow_factory: Any, owner_engine: AsyncEngine, tenant: uuid.UUID, transaction_event: Any
) -> None:
    (case_id,) = await open_cases(uow_factory, tenant, transaction_event, 1)
    version = await _pending(uow_factory, tenant, case_id)

    closed = await svc.approve_disposition(uow_factory, command(tenant, BOB, case_id, version))

    assert (closed.case.status, closed.case.version) == (CaseStatus.CLOSED, 4)
    assert await audit_of_case(owner_engine, tenant, case_id) == [
        ("case.opened", "vigil:scoring"),
        ("case.claimed", "alice"),
        ("case.proposed", "alice"),
        ("case.closed", "bob"),
    ]
    assert await outbox_types(owner_engine, tenant) == [
        "case.opened",
        "case.claimed",
        "case.proposed",
        "case.closed",
    ]
    history = await as_owner(
        owner_engine,
        "SELECT version, action, from_status, to_status, actor, actor_roles"
        " FROM case_transitions WHERE tenant_id = :t ORDER BY version",
        t=tenant,
    )
    assert [tuple(row) for row in history] == [
        (2, "claim", "open", "in_review", "alice", ["analyst"]),
        (3, "propose", "in_review", "pending_approval", "alice", ["analyst"]),
        (4, "approve", "pending_approval", "closed", "bob", ["supervisor"]),
    ]
    (message,) = await as_owner(
        owner_engine,
        "SELECT envelope FROM outbox WHERE tenant_id = :t AND message_type = 'case.closed'",
        t=tenant,
    )
    data = message.envelope["data"]
    assert {key: data[key] for key in ("caseId", "status", "version", "assignee", "queue")} == {
        "caseId": str(case_id),
        "status": "closed",
        "version": 4,
        "assignee": "alice",
        "queue": "default",
    }
    assert {"band", "priority", "slaDueAt"} <= set(data)


async def test_two_analysts_claiming_at_once_get_different_cases(
    uow_factory: Any, tenant: uuid.UUID, transaction_event: Any
) -> None:
    opened = await open_cases(uow_factory, tenant, transaction_event, 6)
    analysts = [analyst(f"analyst-{n}") for n in range(6)]

    results = await asyncio.gather(
        *(svc.claim_next(uow_factory, command(tenant, who), None) for who in analysts)
    )

    claimed = {result.case.case_id: result.case.assignee for result in results}
    assert set(claimed) == set(opened)
    assert sorted(claimed.values()) == sorted(who.name for who in analysts)
    with pytest.raises(CaseNotFound):
        await svc.claim_next(uow_factory, command(tenant, ALICE), None)


async def test_claim_next_takes_the_highest_priority_then_the_earliest_due(
    uow_factory: Any, owner_engine: AsyncEngine, tenant: uuid.UUID, transaction_event: Any
) -> None:
    first, second, third = await open_cases(uow_factory, tenant, transaction_event, 3)
    await as_owner(
        owner_engine,
        "UPDATE cases SET priority = CASE case_id WHEN :a THEN 100 ELSE 900 END,"
        " sla_due_at = now() + CASE case_id WHEN :c THEN interval '1 hour'"
        " ELSE interval '2 hours' END WHERE tenant_id = :t",
        a=first,
        c=third,
        t=tenant,
    )

    order = [
        (await svc.claim_next(uow_factory, command(tenant, ALICE), None)).case.case_id
        for _ in range(3)
    ]

    assert order == [third, second, first]


async def test_scoring_routes_a_case_to_the_queue_of_its_typology(
    uow_factory: Any, owner_engine: AsyncEngine, tenant: uuid.UUID, transaction_event: Any
) -> None:
    policy = {"queues": [{"name": "geography", "typologies": ["high_risk_country"]}]}
    await svc.set_case_policy(uow_factory, tenant, policy, "admin")
    (case_id,) = await open_cases(uow_factory, tenant, transaction_event, 1)

    with pytest.raises(CaseNotFound):
        await svc.claim_next(uow_factory, command(tenant, ALICE), "default")
    taken = await svc.claim_next(uow_factory, command(tenant, ALICE), "geography")

    assert (taken.case.case_id, taken.case.queue) == (case_id, "geography")
    assert "high_risk_country" in taken.case.typologies


async def test_two_supervisors_approving_at_once_one_wins_the_other_is_stale(
    uow_factory: Any, owner_engine: AsyncEngine, tenant: uuid.UUID, transaction_event: Any
) -> None:
    (case_id,) = await open_cases(uow_factory, tenant, transaction_event, 1)
    version = await _pending(uow_factory, tenant, case_id)

    outcomes = await asyncio.gather(
        svc.approve_disposition(uow_factory, command(tenant, BOB, case_id, version)),
        svc.approve_disposition(uow_factory, command(tenant, DORA, case_id, version)),
        return_exceptions=True,
    )

    won = [outcome for outcome in outcomes if isinstance(outcome, StepResult)]
    lost = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert len(won) == 1
    assert [type(error) for error in lost] == [StaleVersion]
    assert (await outbox_types(owner_engine, tenant)).count("case.closed") == 1


async def test_a_write_at_a_stale_version_changes_nothing(
    uow_factory: Any, owner_engine: AsyncEngine, tenant: uuid.UUID, transaction_event: Any
) -> None:
    (case_id,) = await open_cases(uow_factory, tenant, transaction_event, 1)
    await svc.claim_case(uow_factory, command(tenant, ALICE, case_id, 1))

    with pytest.raises(StaleVersion):
        await svc.assign_case(uow_factory, command(tenant, BOB, case_id, 1), "erin")

    (row,) = await as_owner(
        owner_engine, "SELECT assignee, version FROM cases WHERE case_id = :c", c=case_id
    )
    assert tuple(row) == ("alice", 2)


async def test_the_proposer_cannot_approve_even_holding_both_roles(
    uow_factory: Any, tenant: uuid.UUID, transaction_event: Any
) -> None:
    (case_id,) = await open_cases(uow_factory, tenant, transaction_event, 1)
    both = Actor("carol", frozenset({ANALYST, SUPERVISOR}))
    claimed = await svc.claim_case(uow_factory, command(tenant, both, case_id, 1))
    proposed = await svc.propose_disposition(
        uow_factory,
        command(tenant, both, case_id, claimed.case.version),
        Disposition.NO_FURTHER_ACTION,
        "known customer",
    )

    with pytest.raises(FourEyes):
        await svc.approve_disposition(
            uow_factory, command(tenant, both, case_id, proposed.case.version)
        )


CLOSE = (
    "UPDATE cases SET status = 'closed', decision = 'approved', decided_by = :who,"
    " decided_roles = :roles, decided_at = now(), closed_at = now() WHERE case_id = :c"
)


async def test_the_database_refuses_an_approval_by_the_proposer_from_the_app_role(
    uow_factory: Any, app_engine: AsyncEngine, tenant: uuid.UUID, transaction_event: Any
) -> None:
    (case_id,) = await open_cases(uow_factory, tenant, transaction_event, 1)
    await _pending(uow_factory, tenant, case_id)

    refusals = []
    for who, roles in (("alice", ["supervisor"]), ("mallory", ["analyst"]), ("mallory", [])):
        with pytest.raises(DBAPIError) as refused:
            await as_app(app_engine, tenant, CLOSE, who=who, roles=roles, c=case_id)
        refusals.append(sqlstate(refused.value))
    assert refusals == ["VGFE1"] * 3

    # A supervisor other than the proposer passes the same guard.
    await as_app(app_engine, tenant, CLOSE, who="bob", roles=["supervisor"], c=case_id)


async def test_the_database_refuses_a_transition_outside_the_table_and_closing_alone(
    uow_factory: Any, app_engine: AsyncEngine, tenant: uuid.UUID, transaction_event: Any
) -> None:
    (case_id,) = await open_cases(uow_factory, tenant, transaction_event, 1)
    with pytest.raises(DBAPIError) as refused:
        await as_app(app_engine, tenant, CLOSE, who="bob", roles=["supervisor"], c=case_id)
    assert sqlstate(refused.value) == "VGTR1"

    await svc.claim_case(uow_factory, command(tenant, ALICE, case_id, 1))
    alone = (
        "UPDATE cases SET status = 'closed', disposition = 'false_positive', rationale = 'x',"
        " proposed_by = 'alice', decision = 'approved', decided_by = 'alice',"
        " decided_roles = '{analyst}', decided_at = now(), closed_at = now(),"
        " band = 'low' WHERE case_id = :c"
    )
    with pytest.raises(DBAPIError) as refused:
        await as_app(app_engine, tenant, alone, c=case_id)
    assert sqlstate(refused.value) == "VGFE1"


async def test_a_low_case_closes_alone_only_under_a_policy_that_says_so(
    uow_factory: Any, owner_engine: AsyncEngine, tenant: uuid.UUID, transaction_event: Any
) -> None:
    await svc.set_case_policy(uow_factory, tenant, {"lowClosesAlone": True}, "admin")
    low, high = await open_cases(uow_factory, tenant, transaction_event, 2)
    await as_owner(owner_engine, "UPDATE cases SET band = 'low' WHERE case_id = :c", c=low)

    outcomes = []
    for case_id in (low, high):
        claimed = await svc.claim_case(uow_factory, command(tenant, ALICE, case_id, 1))
        proposed = await svc.propose_disposition(
            uow_factory,
            command(tenant, ALICE, case_id, claimed.case.version),
            Disposition.FALSE_POSITIVE,
            "test transfer",
        )
        outcomes.append(proposed.case.status)

    assert outcomes == [CaseStatus.CLOSED, CaseStatus.PENDING_APPROVAL]
    assert ("case.closed", "alice") in await audit_of_case(owner_engine, tenant, low)


async def test_comments_and_evidence_cannot_be_changed_only_versioned(
    uow_factory: Any, app_engine: AsyncEngine, tenant: uuid.UUID, transaction_event: Any
) -> None:
    (case_id,) = await open_cases(uow_factory, tenant, transaction_event, 1)
    first = await svc.comment_on_case(
        uow_factory,
        command(tenant, ALICE, case_id, 1),
        "employer confirmed by phone",
        evidence=[EvidenceRef("dms:4711", None, "ab" * 32, "payslip")],
    )
    comment_id = uuid.UUID(first.extra["commentId"])
    second = await svc.comment_on_case(
        uow_factory, command(tenant, ALICE, case_id, 2), "employer confirmed", edits=comment_id
    )
    assert (second.extra["commentId"], second.extra["commentVersion"]) == (str(comment_id), 2)
    with pytest.raises(InvalidCaseInput):
        await svc.comment_on_case(
            uow_factory, command(tenant, ERIN, case_id, 3), "mine", edits=comment_id
        )

    for statement in (
        "UPDATE case_comments SET body = 'nothing to see' WHERE case_id = :c",
        "DELETE FROM case_comments WHERE case_id = :c",
        "UPDATE case_evidence SET sha256 = sha256(sha256) WHERE case_id = :c",
        "DELETE FROM case_evidence WHERE case_id = :c",
        "DELETE FROM case_transitions WHERE case_id = :c",
    ):
        with pytest.raises(DBAPIError) as refused:
            await as_app(app_engine, tenant, statement, c=case_id)
        assert sqlstate(refused.value) == "42501", statement


async def test_an_sla_breach_is_flagged_and_emitted_once_with_two_sweepers_at_once(
    uow_factory: Any, owner_engine: AsyncEngine, tenant: uuid.UUID, transaction_event: Any
) -> None:
    due = await open_cases(uow_factory, tenant, transaction_event, 4)
    await as_owner(
        owner_engine,
        "UPDATE cases SET sla_due_at = now() - interval '1 minute' WHERE case_id = ANY(:c)",
        c=due[:3],
    )

    counts = await asyncio.gather(
        svc.flag_sla_breaches(uow_factory, tenant), svc.flag_sla_breaches(uow_factory, tenant)
    )
    again = await svc.flag_sla_breaches(uow_factory, tenant)

    assert (sum(counts), again) == (3, 0)
    assert (await outbox_types(owner_engine, tenant)).count("case.sla_breached") == 3
    flagged = await as_owner(
        owner_engine,
        "SELECT case_id FROM cases WHERE tenant_id = :t AND sla_breached_at IS NOT NULL",
        t=tenant,
    )
    assert {row.case_id for row in flagged} == set(due[:3])


async def test_a_step_taken_while_the_sweeper_runs_keeps_the_case_s_sla_flag(
    uow_factory: Any, owner_engine: AsyncEngine, tenant: uuid.UUID, transaction_event: Any
) -> None:
    """The flag changes no version, so a step that read the case before it was flagged
    and saved every column after would clear it; the next sweep would flag and emit the
    breach a second time."""
    (case_id,) = await open_cases(uow_factory, tenant, transaction_event, 1)
    await as_owner(
        owner_engine,
        "UPDATE cases SET sla_due_at = now() - interval '1 minute' WHERE case_id = :c",
        c=case_id,
    )

    async with uow_factory(tenant) as uow:
        case = await uow.cases.get(case_id)
        assert case is not None
        flagged_meanwhile = await svc.flag_sla_breaches(uow_factory, tenant)
        claimed = wf.claim(case, ALICE, case.version)
        assert await uow.cases.save(claimed, case.version, datetime.now(UTC))
        await uow.commit()
    flagged_after = await svc.flag_sla_breaches(uow_factory, tenant)

    assert flagged_meanwhile + flagged_after == 1
    assert (await outbox_types(owner_engine, tenant)).count("case.sla_breached") == 1
    (row,) = await as_owner(
        owner_engine, "SELECT sla_breached_at, status FROM cases WHERE case_id = :c", c=case_id
    )
    assert row.sla_breached_at is not None
    assert row.status == "in_review"


async def test_a_retried_client_mutation_id_gets_the_first_answer_and_acts_once(
    uow_factory: Any, owner_engine: AsyncEngine, tenant: uuid.UUID, transaction_event: Any
) -> None:
    first_case, _ = await open_cases(uow_factory, tenant, transaction_event, 2)
    call = command(tenant, ALICE, first_case, 1, client_mutation_id="m-1")

    answers = await asyncio.gather(*(svc.claim_case(uow_factory, call) for _ in range(3)))
    again = await svc.claim_case(uow_factory, call)

    assert {answer.case.version for answer in [*answers, again]} == {2}
    assert [answer.replayed for answer in answers].count(False) == 1
    assert again.replayed
    assert (await outbox_types(owner_engine, tenant)).count("case.claimed") == 1
    with pytest.raises(InvalidCaseInput):
        await svc.escalate_case(
            uow_factory, command(tenant, ALICE, first_case, 2, client_mutation_id="m-1"), "x"
        )


async def test_a_client_mutation_id_answers_only_the_case_it_was_first_sent_for(
    uow_factory: Any, owner_engine: AsyncEngine, tenant: uuid.UUID, transaction_event: Any
) -> None:
    first, second = await open_cases(uow_factory, tenant, transaction_event, 2)
    sam = supervisor("sam")
    await svc.assign_case(
        uow_factory, command(tenant, sam, first, 1, client_mutation_id="m-1"), "alice"
    )

    with pytest.raises(InvalidCaseInput) as refused:
        await svc.assign_case(
            uow_factory, command(tenant, sam, second, 1, client_mutation_id="m-1"), "alice"
        )

    assert refused.value.field == "clientMutationId"
    (row,) = await as_owner(owner_engine, "SELECT status FROM cases WHERE case_id = :c", c=second)
    assert row.status == "open"


async def test_reject_sends_back_and_reopen_brings_a_closed_case_back(
    uow_factory: Any, owner_engine: AsyncEngine, tenant: uuid.UUID, transaction_event: Any
) -> None:
    (case_id,) = await open_cases(uow_factory, tenant, transaction_event, 1)
    version = await _pending(uow_factory, tenant, case_id)
    rejected = await svc.reject_disposition(
        uow_factory, command(tenant, BOB, case_id, version), "check the counterparty"
    )
    assert (rejected.case.status, rejected.case.assignee) == (CaseStatus.IN_REVIEW, "alice")
    proposed = await svc.propose_disposition(
        uow_factory,
        command(tenant, ALICE, case_id, rejected.case.version),
        Disposition.SAR_FILED,
        "counterparty is a shell company",
    )
    closed = await svc.approve_disposition(
        uow_factory, command(tenant, DORA, case_id, proposed.case.version)
    )
    with pytest.raises(TransitionNotAllowed):
        await svc.escalate_case(
            uow_factory, command(tenant, ALICE, case_id, closed.case.version), "late"
        )

    reopened = await svc.reopen_case(
        uow_factory, command(tenant, BOB, case_id, closed.case.version), "new facts"
    )

    assert (reopened.case.status, reopened.case.assignee) == (CaseStatus.OPEN, None)
    actions = [action for action, _ in await audit_of_case(owner_engine, tenant, case_id)]
    assert actions[-4:] == ["case.rejected", "case.proposed", "case.closed", "case.reopened"]


CASE_TABLES = (
    "cases",
    "case_policies",
    "case_transitions",
    "case_comments",
    "case_evidence",
    "case_mutations",
)


async def test_another_tenant_sees_none_of_a_cases_review(
    uow_factory: Any,
    app_engine: AsyncEngine,
    owner_engine: AsyncEngine,
    tenant: uuid.UUID,
    transaction_event: Any,
) -> None:
    await svc.set_case_policy(uow_factory, tenant, {"lowClosesAlone": False}, "admin")
    (case_id,) = await open_cases(uow_factory, tenant, transaction_event, 1)
    await svc.comment_on_case(
        uow_factory,
        command(tenant, ALICE, case_id, 1, client_mutation_id="c-1"),
        "seen",
        evidence=[EvidenceRef(None, "https://x.example/a", "cd" * 32)],
    )
    other = uuid.uuid4()

    async with app_engine.connect() as connection:
        await connection.execute(
            text("SELECT set_config('vigil.tenant_id', :t, true)"), {"t": str(other)}
        )
        for table in CASE_TABLES:
            seen = (await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
            assert seen == 0, table
        await connection.rollback()
    for table in CASE_TABLES:
        (row,) = await as_owner(
            owner_engine, f"SELECT count(*) AS n FROM {table} WHERE tenant_id = :t", t=tenant
        )
        assert row.n >= 1, table


async def test_comments_are_append_only_even_for_the_owner(
    uow_factory: Any, owner_engine: AsyncEngine, tenant: uuid.UUID, transaction_event: Any
) -> None:
    (case_id,) = await open_cases(uow_factory, tenant, transaction_event, 1)
    await svc.comment_on_case(uow_factory, command(tenant, ALICE, case_id, 1), "first look")

    with pytest.raises(DBAPIError, match="append-only"):
        await as_owner(
            owner_engine, "UPDATE case_comments SET body = 'x' WHERE case_id = :c", c=case_id
        )
