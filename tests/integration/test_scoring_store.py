"""The scoring store against the real PostgreSQL: ruleset versions, idempotent
assessments, one open case per subject, failures, and tenant isolation."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.cel_rules import CachedScorers
from adapters.database import sqlstate
from adapters.tenants import create_tenant
from domain.canonical import digest
from domain.cases import CaseStatus, join_alert, open_case
from domain.default_ruleset import DEFAULT_RULESET
from domain.ids import new_id
from domain.rules import Band, Evaluation, Party, RuleOutcome
from domain.scoring import AlertRecord, AssessmentRecord, StoredRuleset
from services.ingest import Caller, ingest_events
from services.scoring import install_ruleset

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def ruleset(version: int, name: str = "scorecard") -> StoredRuleset:
    document = {"name": f"{name} v{version}", "alertThreshold": 50, "rules": []}
    return StoredRuleset(version, document, digest(document))


def evaluation(score: int = 60) -> Evaluation:
    outcome = RuleOutcome(
        code="LARGE_TRANSACTION",
        typology="large_value",
        concerns=Party.ORIGINATOR,
        fired=True,
        points=score,
        observed={"event.amount_minor": 1_250_000},
        thresholds={"limit_minor": 1_000_000},
        reason="12,500.00 EUR is above the limit",
    )
    return Evaluation(score=score, band=Band.HIGH, outcomes=(outcome,), alert=True)


async def stored_event(uow_factory: Any, tenant: uuid.UUID, transaction_event: Any) -> uuid.UUID:
    (result,) = await ingest_events(
        uow_factory, Caller(tenant, "test", "graphql"), [transaction_event()]
    )
    assert result.event_id is not None
    return result.event_id


async def with_active_ruleset(uow_factory: Any, tenant: uuid.UUID) -> None:
    async with uow_factory(tenant) as uow:
        await uow.scoring.add_ruleset(ruleset(1), "alice")
        await uow.scoring.activate(1, "bob")
        await uow.commit()


async def statuses(uow_factory: Any, tenant: uuid.UUID) -> dict[int, str]:
    async with uow_factory(tenant) as uow:
        rows = await uow.connection.execute(text("SELECT version, status FROM rulesets"))
        return {row.version: row.status for row in rows}


async def test_a_loaded_event_carries_both_parties_attributes(
    uow_factory: Any, tenant: uuid.UUID, transaction_event: Any
) -> None:
    event_id = await stored_event(uow_factory, tenant, transaction_event)

    async with uow_factory(tenant) as uow:
        event = await uow.scoring.load_event(event_id)
        missing = await uow.scoring.load_event(new_id())

    assert missing is None
    assert event.event_type == "transaction"
    assert (event.amount, event.currency) == (Decimal("125.50"), "EUR")
    assert event.occurred_at == datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
    assert event.subject_attributes == {"country": "DE"}
    assert event.counterparty_attributes == {"country": "FR"}
    assert event.payload["data"]["reference"] == "invoice 42"


# -- ruleset versions --------------------------------------------------------------------


async def test_activating_a_version_retires_the_one_before(
    uow_factory: Any, tenant: uuid.UUID
) -> None:
    async with uow_factory(tenant) as uow:
        assert await uow.scoring.latest_version() == 0
        assert await uow.scoring.active_ruleset() is None
        await uow.scoring.add_ruleset(ruleset(1), "alice")
        await uow.scoring.add_ruleset(ruleset(2), "alice")
        await uow.scoring.activate(1, "bob")
        await uow.commit()
    assert await statuses(uow_factory, tenant) == {1: "active", 2: "validated"}

    async with uow_factory(tenant) as uow:
        await uow.scoring.activate(2, "carol")
        await uow.commit()

    async with uow_factory(tenant) as uow:
        active = await uow.scoring.active_ruleset()
        first = await uow.scoring.ruleset(1)
        latest = await uow.scoring.latest_version()
        row = (
            await uow.connection.execute(
                text("SELECT activated_by, activated_at FROM rulesets WHERE version = 2")
            )
        ).one()
    assert active == ruleset(2)
    assert first == ruleset(1)
    assert latest == 2
    assert row.activated_by == "carol"
    assert row.activated_at is not None
    assert await statuses(uow_factory, tenant) == {1: "retired", 2: "active"}


async def test_a_retired_version_can_be_activated_again(
    uow_factory: Any, tenant: uuid.UUID
) -> None:
    async with uow_factory(tenant) as uow:
        for version in (1, 2):
            await uow.scoring.add_ruleset(ruleset(version), "alice")
            await uow.scoring.activate(version, "bob")
        await uow.scoring.activate(1, "bob")
        await uow.commit()

    assert await statuses(uow_factory, tenant) == {1: "active", 2: "retired"}


async def test_activating_an_unknown_version_is_refused(
    uow_factory: Any, tenant: uuid.UUID
) -> None:
    async with uow_factory(tenant) as uow:
        with pytest.raises(LookupError):
            await uow.scoring.activate(9, "bob")


async def test_the_schema_allows_one_active_version(uow_factory: Any, tenant: uuid.UUID) -> None:
    await with_active_ruleset(uow_factory, tenant)

    async with uow_factory(tenant) as uow:
        await uow.scoring.add_ruleset(ruleset(2), "alice")
        with pytest.raises(IntegrityError):
            await uow.connection.execute(
                text("UPDATE rulesets SET status = 'active' WHERE version = 2")
            )


async def test_a_stored_ruleset_document_cannot_change(
    uow_factory: Any, owner_engine: AsyncEngine, tenant: uuid.UUID
) -> None:
    await with_active_ruleset(uow_factory, tenant)
    change = text(
        'UPDATE rulesets SET document = \'{"name": "edited"}\' '
        "WHERE tenant_id = :tenant AND version = 1"
    )

    # The application role may not even try: it has no UPDATE on the document.
    async with uow_factory(tenant) as uow:
        with pytest.raises(DBAPIError) as refused:
            await uow.connection.execute(change, {"tenant": tenant})
    assert sqlstate(refused.value) == "42501"

    # The owner may, and the trigger refuses it.
    with pytest.raises(DBAPIError, match="a ruleset version is immutable"):
        async with owner_engine.begin() as connection:
            await connection.execute(change, {"tenant": tenant})
    async with uow_factory(tenant) as uow:
        assert await uow.scoring.ruleset(1) == ruleset(1)


# -- assessments, alerts and cases -------------------------------------------------------


async def test_an_event_is_assessed_once_per_ruleset_version(
    uow_factory: Any, tenant: uuid.UUID, transaction_event: Any
) -> None:
    event_id = await stored_event(uow_factory, tenant, transaction_event)
    await with_active_ruleset(uow_factory, tenant)
    context = {"event": {"amount_minor": 1_250_000, "cross_border": True, "type": "transaction"}}
    first = AssessmentRecord(new_id(), event_id, 1, "rules", evaluation(), context, NOW)
    again = replace(first, assessment_id=new_id())

    async with uow_factory(tenant) as uow:
        assert not await uow.scoring.has_assessment(event_id, 1)
        assert await uow.scoring.add_assessment(first) is True
        await uow.commit()
    async with uow_factory(tenant) as uow:
        assert await uow.scoring.has_assessment(event_id, 1)
        assert await uow.scoring.add_assessment(again) is False
        row = (
            await uow.connection.execute(
                text(
                    "SELECT assessment_id, score, band, alert, explanation, context"
                    " FROM assessments"
                )
            )
        ).one()

    assert (row.assessment_id, row.score, row.band, row.alert) == (
        first.assessment_id,
        60,
        "high",
        True,
    )
    assert row.context == context
    assert row.explanation == {
        "score": 60,
        "band": "high",
        "alert": True,
        "rules": [
            {
                "code": "LARGE_TRANSACTION",
                "typology": "large_value",
                "concerns": "originator",
                "fired": True,
                "points": 60,
                "observed": {"event.amount_minor": 1_250_000},
                "thresholds": {"limit_minor": 1_000_000},
                "reason": "12,500.00 EUR is above the limit",
                "error": None,
            }
        ],
    }


async def test_a_subject_has_one_case_that_is_not_closed(
    uow_factory: Any, tenant: uuid.UUID, transaction_event: Any
) -> None:
    event_id = await stored_event(uow_factory, tenant, transaction_event)
    await with_active_ruleset(uow_factory, tenant)
    async with uow_factory(tenant) as uow:
        subject_id = (await uow.scoring.load_event(event_id)).subject_id
        assessment = AssessmentRecord(new_id(), event_id, 1, "rules", evaluation(), {}, NOW)
        await uow.scoring.add_assessment(assessment)
        case = open_case(new_id(), subject_id, Band.HIGH, 60, NOW)
        assert await uow.scoring.add_case(case) is True
        second = open_case(new_id(), subject_id, Band.LOW, 10, NOW)
        assert await uow.scoring.add_case(second) is False
        alert = AlertRecord(
            new_id(),
            assessment.assessment_id,
            event_id,
            subject_id,
            case.case_id,
            60,
            "high",
            ("large_value",),
            NOW,
        )
        await uow.scoring.add_alert(alert)
        await uow.commit()

    later = NOW + timedelta(hours=1)
    async with uow_factory(tenant) as uow:
        found = await uow.scoring.open_case(subject_id)
        assert found == case
        graver = join_alert(found, Band.CRITICAL, 90, later)
        await uow.scoring.save_case(graver)
        await uow.commit()

    async with uow_factory(tenant) as uow:
        assert await uow.scoring.open_case(subject_id) == graver
        typologies = (
            await uow.connection.execute(text("SELECT typologies FROM alerts"))
        ).scalar_one()
        assert typologies == ["large_value"]
        # Once closed (along the review path, which the database holds to), the subject
        # may have a new case.
        for step in (
            "status = 'in_review', assignee = 'alice'",
            "status = 'pending_approval', disposition = 'false_positive', rationale = 'ok',"
            " proposed_by = 'alice', proposed_at = now()",
            "status = 'closed', decision = 'approved', decided_by = 'bob',"
            " decided_roles = '{supervisor}', decided_at = now(), closed_at = now()",
        ):
            await uow.connection.execute(
                text(f"UPDATE cases SET {step} WHERE case_id = :case"), {"case": case.case_id}
            )
        assert await uow.scoring.open_case(subject_id) is None
        assert await uow.scoring.add_case(second) is True
        assert (await uow.scoring.open_case(subject_id)).status is CaseStatus.OPEN
        await uow.commit()


async def test_a_failure_is_recorded_updated_and_cleared(
    uow_factory: Any, tenant: uuid.UUID, transaction_event: Any
) -> None:
    event_id = await stored_event(uow_factory, tenant, transaction_event)
    query = text("SELECT attempts, reason FROM scoring_failures WHERE event_id = :event")

    async with uow_factory(tenant) as uow:
        await uow.scoring.record_failure(event_id, 3, "timeout")
        await uow.scoring.record_failure(event_id, 5, "rule engine down")
        failure = (await uow.connection.execute(query, {"event": event_id})).one()
        assert (failure.attempts, failure.reason) == (5, "rule engine down")
        assert (await uow.scoring.load_event(event_id)).scoring_failed is True
        await uow.scoring.clear_failure(event_id)
        assert (await uow.connection.execute(query, {"event": event_id})).first() is None
        assert (await uow.scoring.load_event(event_id)).scoring_failed is False
        await uow.scoring.clear_failure(event_id)  # clearing nothing is fine


# -- tenant isolation --------------------------------------------------------------------


async def test_another_tenant_sees_none_of_it(
    uow_factory: Any, owner_engine: AsyncEngine, tenant: uuid.UUID, transaction_event: Any
) -> None:
    event_id = await stored_event(uow_factory, tenant, transaction_event)
    await with_active_ruleset(uow_factory, tenant)
    async with uow_factory(tenant) as uow:
        subject_id = (await uow.scoring.load_event(event_id)).subject_id
        assessment = AssessmentRecord(new_id(), event_id, 1, "rules", evaluation(), {}, NOW)
        await uow.scoring.add_assessment(assessment)
        case = open_case(new_id(), subject_id, Band.HIGH, 60, NOW)
        await uow.scoring.add_case(case)
        await uow.scoring.add_alert(
            AlertRecord(
                new_id(),
                assessment.assessment_id,
                event_id,
                subject_id,
                case.case_id,
                60,
                "high",
                ("large_value",),
                NOW,
            )
        )
        await uow.scoring.record_failure(event_id, 1, "test")
        await uow.commit()
    other = await create_tenant(owner_engine, f"t-{uuid.uuid4().hex[:12]}", "Other bank")

    async with uow_factory(other) as uow:
        store = uow.scoring
        assert await store.load_event(event_id) is None
        assert await store.active_ruleset() is None
        assert await store.ruleset(1) is None
        assert await store.latest_version() == 0
        assert await store.has_assessment(event_id, 1) is False
        assert await store.open_case(subject_id) is None
        for table in ("rulesets", "assessments", "alerts", "cases", "scoring_failures"):
            count = (await uow.connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar()
            assert count == 0, table
        # Nor can it write into the first tenant's rows.
        await uow.scoring.clear_failure(event_id)
        await uow.scoring.save_case(replace(case, alert_count=9))
        await uow.commit()

    async with uow_factory(tenant) as uow:
        assert await uow.scoring.open_case(subject_id) == case
        remaining = await uow.connection.execute(text("SELECT count(*) FROM scoring_failures"))
        assert remaining.scalar() == 1


async def test_concurrent_installs_take_distinct_versions(
    uow_factory: Any, owner_engine: AsyncEngine, tenant: uuid.UUID
) -> None:
    scorers = CachedScorers()

    versions = await asyncio.gather(
        *(
            install_ruleset(uow_factory, scorers, tenant, DEFAULT_RULESET, "ops", activate=True)
            for _ in range(5)
        )
    )

    assert sorted(versions) == [1, 2, 3, 4, 5]
    async with owner_engine.connect() as connection:
        active = (
            await connection.execute(
                text("SELECT count(*) FROM rulesets WHERE tenant_id = :t AND status = 'active'"),
                {"t": tenant},
            )
        ).scalar_one()
    assert active == 1
