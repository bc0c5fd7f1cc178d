"""What the app role may not do to a case by SQL of its own: the review guard, attacked
with every column the role may update."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.database import sqlstate
from domain.cases import Disposition
from services import cases as svc
from tests.integration.case_support import analyst, as_app, close_case, command, open_cases

ALICE = analyst("alice")


async def _refused(
    app_engine: AsyncEngine, tenant: uuid.UUID, statement: str, **values: Any
) -> str:
    with pytest.raises(DBAPIError) as refused:
        await as_app(app_engine, tenant, statement, **values)
    return str(sqlstate(refused.value))


async def _pending(uow_factory: Any, tenant: uuid.UUID, case_id: uuid.UUID) -> None:
    claimed = await svc.claim_case(uow_factory, command(tenant, ALICE, case_id, 1))
    await svc.propose_disposition(
        uow_factory,
        command(tenant, ALICE, case_id, claimed.case.version),
        Disposition.FALSE_POSITIVE,
        "a known supplier",
    )


CLOSE_ALONE = (
    "UPDATE cases SET status = 'closed', band = 'low', disposition = 'false_positive',"
    " rationale = 'x', proposed_by = 'alice', decision = 'approved', decided_by = 'alice',"
    " decided_roles = '{analyst}', decided_at = now(), closed_at = now() WHERE case_id = :c"
)


async def test_a_high_case_does_not_close_alone_by_lowering_its_band_in_the_same_update(
    uow_factory: Any, app_engine: AsyncEngine, tenant: uuid.UUID, transaction_event: Any
) -> None:
    await svc.set_case_policy(uow_factory, tenant, {"lowClosesAlone": True}, "admin")
    (case_id,) = await open_cases(uow_factory, tenant, transaction_event, 1)
    await svc.claim_case(uow_factory, command(tenant, ALICE, case_id, 1))

    assert await _refused(app_engine, tenant, CLOSE_ALONE, c=case_id) == "VGFE1"


DECIDE = (
    "UPDATE cases SET status = :status, decision = :decision, decided_by = :who,"
    " decided_roles = :roles, decided_at = now(), closed_at = :closed,"
    " decision_reason = 'r' WHERE case_id = :c"
)


@pytest.mark.parametrize(
    ("who", "roles"),
    [
        pytest.param("Alice", ["supervisor"], id="another case"),
        pytest.param(" alice", ["supervisor"], id="a leading space"),
        pytest.param("\uff41\uff4c\uff49\uff43\uff45", ["supervisor"], id="full-width"),
        pytest.param("bob", ["supervisor", "regulator"], id="a regulator"),
    ],
)
@pytest.mark.parametrize("decision", ["approved", "rejected"])
async def test_the_database_knows_the_proposer_in_any_spelling_and_no_regulator_decides(
    uow_factory: Any,
    app_engine: AsyncEngine,
    tenant: uuid.UUID,
    transaction_event: Any,
    who: str,
    roles: list[str],
    decision: str,
) -> None:
    (case_id,) = await open_cases(uow_factory, tenant, transaction_event, 1)
    await _pending(uow_factory, tenant, case_id)
    status, closed = ("closed", "now") if decision == "approved" else ("in_review", None)
    statement = DECIDE.replace(":closed", "now()" if closed else "NULL")

    refusal = await _refused(
        app_engine,
        tenant,
        statement,
        status=status,
        decision=decision,
        who=who,
        roles=roles,
        c=case_id,
    )
    assert refusal == "VGFE1"


async def test_a_rejection_is_recorded_as_a_rejection(
    uow_factory: Any, app_engine: AsyncEngine, tenant: uuid.UUID, transaction_event: Any
) -> None:
    (case_id,) = await open_cases(uow_factory, tenant, transaction_event, 1)
    await _pending(uow_factory, tenant, case_id)
    statement = DECIDE.replace(":closed", "NULL")

    refusal = await _refused(
        app_engine,
        tenant,
        statement,
        status="in_review",
        decision="approved",
        who="bob",
        roles=["supervisor"],
        c=case_id,
    )
    assert refusal == "VGFE1"


@pytest.mark.parametrize(
    "change",
    [
        "rationale = 'rewritten later'",
        "decided_roles = '{supervisor,admin}'",
        "decision_reason = 'rewritten later'",
        "decided_at = now() - interval '1 day'",
        "closed_at = now() - interval '1 day'",
        "proposed_by = 'mallory'",
        "proposed_at = now() - interval '1 day'",
    ],
)
async def test_a_closed_case_s_proposal_and_decision_are_not_rewritten(
    uow_factory: Any,
    app_engine: AsyncEngine,
    tenant: uuid.UUID,
    transaction_event: Any,
    change: str,
) -> None:
    (case_id,) = await open_cases(uow_factory, tenant, transaction_event, 1)
    await close_case(uow_factory, tenant, case_id)

    statement = f"UPDATE cases SET {change} WHERE case_id = :c"
    assert await _refused(app_engine, tenant, statement, c=case_id) == "VGFE1"
