"""Scoring several events of a tenant in one transaction, against the real database:
each event gets exactly what scoring it alone gives, and a batch that fails keeps
nothing and leaves each event to be scored alone."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.cel_rules import CachedScorers
from domain.default_ruleset import DEFAULT_RULESET
from domain.ports import UnitOfWorkFactory
from domain.scoring import HISTORY_FIELDS, StoredRuleset
from services.scoring import EventNotFound, ScoreOutcome, score_events
from tests.integration.scoring_support import (
    activate_default_ruleset,
    alerting,
    assessed,
    effects,
    ingest,
)
from workers.consumer import Backoff
from workers.scoring import Batches, ScoringJobs


async def test_a_batch_gives_each_event_what_scoring_it_alone_gives(
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    await activate_default_ruleset(uow_factory, tenant)
    # Two alerting transfers from one sender: the first opens its case, the second,
    # in the same transaction, joins it.
    events = await ingest(
        uow_factory,
        tenant,
        [alerting(transaction_event), alerting(transaction_event), transaction_event()],
    )

    results = await score_events(
        uow_factory, CachedScorers(), tenant, [(event, None) for event in events]
    )
    again = await score_events(
        uow_factory, CachedScorers(), tenant, [(event, None) for event in events]
    )

    assert [r.outcome for r in results] == [ScoreOutcome.ASSESSED] * 3
    assert [r.outcome for r in again] == [ScoreOutcome.ALREADY_ASSESSED] * 3
    # Every effect is written whole: each assessment, alert and case change with its
    # audit record and its message, one case for the sender however many alerts.
    found = await effects(owner_engine, tenant)
    assert found.assessments == 3
    assert found.audit["risk.assessed"] == found.outbox["risk.assessed"] == 3
    assert found.alerts >= 2
    assert found.audit["alert.raised"] == found.alerts
    assert found.audit["case.opened"] == found.outbox["case.opened"] == found.cases
    assert found.audit.get("case.updated", 0) == found.outbox.get("case.updated", 0)
    assert found.alerts == found.cases + found.audit.get("case.updated", 0)
    assert found.failures == 0


async def test_a_batch_that_fails_keeps_nothing(
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    await activate_default_ruleset(uow_factory, tenant)
    (event,) = await ingest(uow_factory, tenant, [alerting(transaction_event)])

    with pytest.raises(EventNotFound):
        await score_events(
            uow_factory, CachedScorers(), tenant, [(event, None), (uuid.uuid4(), None)]
        )

    assert await assessed(owner_engine, tenant) == 0


async def test_jobs_batched_together_each_settle_their_own_event(
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    await activate_default_ruleset(uow_factory, tenant)
    # Accounts of their own: scored alone at once, the two never meet on a case.
    first, second = await ingest(
        uow_factory,
        tenant,
        [
            transaction_event(originator="NL20ABNA0000000020", beneficiary="NL21RABO0000000021"),
            alerting(transaction_event),
        ],
    )
    scorers = CachedScorers()
    jobs = ScoringJobs(
        uow_factory,
        scorers,
        max_tries=3,
        backoff=Backoff(first_seconds=0.01, max_seconds=0.01),
        batches=Batches(uow_factory, scorers, size=8, linger=0.05),
    )

    # Three jobs at once, one naming an event that does not exist: their batch fails
    # whole, and each job then scores its event alone.
    outcomes = await asyncio.gather(
        jobs.score(tenant, first, None, 1),
        jobs.score(tenant, uuid.uuid4(), None, 1),
        jobs.score(tenant, second, None, 1),
    )

    assert outcomes == ["assessed", "event_not_found", "assessed"]
    assert await assessed(owner_engine, tenant) == 2


async def test_a_full_batch_is_scored_without_waiting_for_the_linger(
    tenant: uuid.UUID, uow_factory: UnitOfWorkFactory, transaction_event: Any
) -> None:
    await activate_default_ruleset(uow_factory, tenant)
    # Accounts of their own, so that two batches running at once never meet on a case.
    events = await ingest(
        uow_factory,
        tenant,
        [
            transaction_event(
                originator=f"NL{n:02d}ABNA0000000{n:03d}",
                beneficiary=f"NL{n:02d}RABO0000000{n:03d}",
            )
            for n in range(10, 14)
        ],
    )
    batches = Batches(uow_factory, CachedScorers(), size=2, linger=60.0)

    results = await asyncio.wait_for(
        asyncio.gather(*(batches.score(tenant, event, None) for event in events)), timeout=30
    )

    assert [r.outcome if r else None for r in results] == [ScoreOutcome.ASSESSED] * 4


async def test_an_assessment_keeps_the_facts_its_ruleset_reads_and_no_others(
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    await activate_default_ruleset(uow_factory, tenant)
    (event,) = await ingest(uow_factory, tenant, [alerting(transaction_event)])
    await score_events(uow_factory, CachedScorers(), tenant, [(event, None)])

    async with owner_engine.connect() as connection:
        stored = (
            await connection.execute(
                text("SELECT context FROM assessments WHERE tenant_id = :t AND event_id = :e"),
                {"t": tenant, "e": event},
            )
        ).scalar_one()
    needs = CachedScorers().scorer_for(tenant, StoredRuleset(1, DEFAULT_RULESET, b"x")).needs
    attributes = {"country", "risk_rating", "pep", "sanctions_hit"}
    assert set(stored["originator"]) == attributes | needs.originator
    assert set(stored["beneficiary"]) == attributes | needs.beneficiary
    assert needs.union() < HISTORY_FIELDS


async def test_a_batch_takes_its_cases_in_account_order_whatever_the_events_order(
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    # Two batches locking the same cases in opposite orders deadlocked (and were retried
    # event by event after a second's wait): every batch now takes its cases in the
    # order of their accounts. The accounts are met first in reverse, so that their ids
    # run against the order of the alerting events.
    await activate_default_ruleset(uow_factory, tenant)
    accounts = [f"ACCOUNT-{n:02d}" for n in range(6)]
    await ingest(uow_factory, tenant, [transaction_event(originator=a) for a in reversed(accounts)])
    alerting_events = await ingest(
        uow_factory, tenant, [alerting(transaction_event, originator=a) for a in accounts]
    )
    await score_events(
        uow_factory, CachedScorers(), tenant, [(event, None) for event in alerting_events]
    )

    async with owner_engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT a.subject_id FROM audit_records r"
                " JOIN alerts a ON a.tenant_id = r.tenant_id AND a.alert_id::text = r.entity_id"
                " WHERE r.tenant_id = :t AND r.action = 'alert.raised' ORDER BY r.seq"
            ),
            {"t": tenant},
        )
        in_order = [row.subject_id for row in rows]
    assert len(in_order) >= len(accounts)
    assert in_order == sorted(in_order, key=lambda subject: subject.bytes)
    assert in_order != sorted(in_order, key=lambda subject: subject.bytes, reverse=True)
