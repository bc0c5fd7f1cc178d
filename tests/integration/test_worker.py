"""The scoring worker (arq) and the reconciler against the real Redis and PostgreSQL.

Each test has a score queue of its own, runs arq workers in this process, and counts
what scoring left in the database: assessments, alerts, cases, audit records, outbox
messages and failures.
"""

from __future__ import annotations

import asyncio
import tracemalloc
import uuid
from datetime import timedelta
from typing import Any

import pytest
from arq.connections import ArqRedis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.audit_trail import verify
from adapters.score_queue import (
    MAX_BATCH,
    batch_job_id,
    connect,
    enqueue_batch,
    enqueue_score,
    job_id,
)
from adapters.settings import Settings
from adapters.tenants import create_tenant
from domain.ports import UnitOfWorkFactory
from tests.integration.inbound_support import TcpProxy
from tests.integration.scoring_support import (
    ONE_ALERT,
    Counter,
    Effects,
    activate_default_ruleset,
    alerting,
    assessed,
    audit_head_locked,
    effects,
    eventually,
    forget_jobs,
    ingest,
    queued_job_ids,
    score_queue,
    scoring_settings,
    sessions_waiting_for_locks,
    working,
)
from workers.reconciler import Reconciler, list_failures, redrive
from workers.scoring import CONNECTION_NAME


def reconciler(scoring: Settings, app_engine: AsyncEngine, queue: ArqRedis) -> Reconciler:
    return Reconciler.from_settings(scoring, app_engine, queue)


async def test_two_workers_on_the_same_event_at_once_leave_one_of_each_effect(
    scoring: Settings,
    queue: ArqRedis,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    await activate_default_ruleset(uow_factory, tenant)
    (event,) = await ingest(uow_factory, tenant, [alerting(transaction_event)])
    jobs = Counter("vigil_scoring_jobs_total", "outcome")

    # Two jobs for one event (the dispatcher's and a re-drive), one on each worker (a
    # worker runs one job at a time here). With the audit chain's head held, the first
    # waits just before its commit and the second behind the first's assessment: both
    # are in the middle of scoring at once.
    async with working(scoring, max_jobs=1) as one, working(scoring, max_jobs=1) as other:
        async with audit_head_locked(owner_engine, tenant):
            assert await enqueue_score(queue, tenant, event)
            assert await enqueue_score(queue, tenant, event, job=f"{job_id(tenant, event)}:r1")
            await eventually(
                lambda: _at_least(sessions_waiting_for_locks(owner_engine, CONNECTION_NAME), 2),
                what="both workers waiting inside their transactions",
            )
        await eventually(lambda: _no_jobs(queue, scoring), what="the queue drained")
        assert (one.jobs_complete, other.jobs_complete) == (1, 1)

    assert await effects(owner_engine, tenant) == Effects(**ONE_ALERT)
    assert jobs.since() == {"assessed": 1, "already_assessed": 1}


async def test_a_job_id_is_free_again_once_its_job_has_run(
    scoring: Settings,
    queue: ArqRedis,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    await activate_default_ruleset(uow_factory, tenant)
    (event,) = await ingest(uow_factory, tenant, [alerting(transaction_event)])
    jobs = Counter("vigil_scoring_jobs_total", "outcome")

    async with working(scoring):
        assert await enqueue_score(queue, tenant, event)
        await eventually(lambda: _no_jobs(queue, scoring), what="the first job done")
        # No result is kept, so arq takes the same id again rather than refusing it.
        assert await enqueue_score(queue, tenant, event)
        await eventually(lambda: _no_jobs(queue, scoring), what="the second job done")

    assert jobs.since() == {"assessed": 1, "already_assessed": 1}
    assert await effects(owner_engine, tenant) == Effects(**ONE_ALERT)
    assert await queue.keys(f"arq:result:{job_id(tenant, event)}") == []


async def test_a_reconciler_redrive_runs_while_a_dead_workers_job_holds_the_id(
    scoring: Settings,
    queue: ArqRedis,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    app_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    await activate_default_ruleset(uow_factory, tenant)
    (event,) = await ingest(uow_factory, tenant, [alerting(transaction_event)])
    primary = job_id(tenant, event)

    # What a worker killed mid-job leaves: the job queued, and its in-progress key.
    assert await enqueue_score(queue, tenant, event)
    await queue.psetex(f"arq:in-progress:{primary}", 60_000, b"1")

    async with working(scoring):
        await asyncio.sleep(0.5)
        assert await assessed(owner_engine, tenant) == 0
        assert not await enqueue_score(queue, tenant, event)  # the dispatcher is refused

        assert await reconciler(scoring, app_engine, queue).run_once(tenant) == 1
        await eventually(lambda: _assessed(owner_engine, tenant, 1), what="assessed")

    assert await queued_job_ids(queue, scoring.score_queue) == [primary]
    assert await effects(owner_engine, tenant) == Effects(**ONE_ALERT)


async def test_the_reconciler_leaves_alone_an_event_whose_job_is_waiting(
    scoring: Settings,
    queue: ArqRedis,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    app_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    waiting, lost = await ingest(uow_factory, tenant, [transaction_event(), transaction_event()])
    assert await enqueue_score(queue, tenant, waiting)

    assert await reconciler(scoring, app_engine, queue).run_once(tenant) == 1

    queued = await queued_job_ids(queue, scoring.score_queue)
    assert len(queued) == 2
    assert job_id(tenant, waiting) in queued
    assert any(job.startswith(f"{job_id(tenant, lost)}:r") for job in queued)


async def test_the_reconciler_enqueues_again_every_interval_until_assessed(
    settings: Settings,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    app_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    # The periodic pass covers every tenant: a short lookback, and a wait as long,
    # keep other tests' events out of this one.
    lookback = timedelta(seconds=2)
    await asyncio.sleep(lookback.total_seconds())
    scoring = scoring_settings(settings)
    await activate_default_ruleset(uow_factory, tenant)
    events = await ingest(uow_factory, tenant, [transaction_event() for _ in range(3)])

    async with score_queue(scoring) as queue:
        passes = Reconciler(
            app_engine,
            queue,
            deadline=timedelta(0),
            lookback=lookback,
            batch_size=100,
            interval_seconds=0.1,
        )
        stop = asyncio.Event()
        loop = asyncio.create_task(passes.run(stop))
        try:
            await eventually(lambda: _queued(queue, scoring, 3), what="three re-drives")
            # Redis loses them: a later pass enqueues them again.
            await forget_jobs(queue, scoring.score_queue)
            await eventually(lambda: _queued(queue, scoring, 3), what="re-driven again")
            async with working(scoring):
                await eventually(lambda: _assessed(owner_engine, tenant, 3), what="assessed")
                await asyncio.sleep(0.3)  # passes that find nothing to do
        finally:
            stop.set()
            await loop

    assert len(events) == 3
    assert await assessed(owner_engine, tenant) == 3


async def test_an_event_without_an_active_ruleset_fails_visibly_and_is_redriven(
    scoring: Settings,
    queue: ArqRedis,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    app_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    (event,) = await ingest(uow_factory, tenant, [alerting(transaction_event)])
    jobs = Counter("vigil_scoring_jobs_total", "outcome")

    async with working(scoring):
        assert await enqueue_score(queue, tenant, event)
        await eventually(lambda: _no_jobs(queue, scoring), what="the job done")

        (failure,) = await list_failures(app_engine, tenant)
        assert failure.event_id == event
        assert failure.reason == "NO_ACTIVE_RULESET: the tenant has no active ruleset"
        assert failure.attempts == 1
        # A failed event is the operator's to re-drive, not the reconciler's.
        assert await reconciler(scoring, app_engine, queue).run_once(tenant) == 0

        await activate_default_ruleset(uow_factory, tenant)
        assert await redrive(app_engine, queue, tenant, actor="ops-anna") == [event]
        await eventually(lambda: _assessed(owner_engine, tenant, 1), what="assessed")

    assert await list_failures(app_engine, tenant) == []
    assert jobs.since() == {"failed": 1, "assessed": 1}
    assert await effects(owner_engine, tenant) == Effects(**ONE_ALERT)
    async with owner_engine.connect() as connection:
        await verify(connection, tenant)
        redriven = await connection.scalar(
            text(
                "SELECT details->>'previousReason' FROM audit_records WHERE tenant_id = :t"
                " AND action = 'scoring.redriven' AND actor = 'ops-anna'"
            ),
            {"t": tenant},
        )
    assert redriven == failure.reason


async def test_redriving_an_unknown_event_is_refused(
    queue: ArqRedis, tenant: uuid.UUID, app_engine: AsyncEngine
) -> None:
    with pytest.raises(LookupError):
        await redrive(app_engine, queue, tenant, actor="ops", event_id=uuid.uuid4())


async def test_a_transient_database_failure_is_retried_until_it_passes(
    settings: Settings,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    await activate_default_ruleset(uow_factory, tenant)
    (event,) = await ingest(uow_factory, tenant, [alerting(transaction_event)])
    database = make_url(settings.database_url)
    proxy = TcpProxy(database.host or "127.0.0.1", database.port or 5432)
    await proxy.open()
    through_proxy = database.set(host="127.0.0.1", port=proxy.port)
    scoring = scoring_settings(
        settings,
        database_url=through_proxy.render_as_string(hide_password=False),
        worker_max_tries=50,
    )
    jobs = Counter("vigil_scoring_jobs_total", "outcome")

    async with score_queue(scoring) as queue, working(scoring):
        await proxy.close()  # the database goes away
        assert await enqueue_score(queue, tenant, event)
        await eventually(lambda: _true(jobs.since().get("retried", 0) >= 2), what="retries")
        assert await assessed(owner_engine, tenant) == 0

        await proxy.open()  # and comes back
        await eventually(lambda: _assessed(owner_engine, tenant, 1), what="assessed")
    await proxy.close()

    assert jobs.since().get("assessed") == 1
    assert "failed" not in jobs.since()
    assert await effects(owner_engine, tenant) == Effects(**ONE_ALERT)


async def test_a_batch_job_scores_its_events_in_one_go(
    scoring: Settings,
    queue: ArqRedis,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    await activate_default_ruleset(uow_factory, tenant)
    events = await ingest(uow_factory, tenant, [alerting(transaction_event)] * 1)
    events += await ingest(uow_factory, tenant, [transaction_event() for _ in range(9)])
    jobs = Counter("vigil_scoring_jobs_total", "outcome")

    async with working(scoring):
        assert await enqueue_batch(queue, tenant, [(event, "corr-1") for event in events])
        await eventually(lambda: _assessed(owner_engine, tenant, 10), what="assessed")
        await eventually(lambda: _no_jobs(queue, scoring), what="the job done")

    assert jobs.since() == {"assessed": 10}
    found = await effects(owner_engine, tenant)
    assert found.audit["risk.assessed"] == found.outbox["risk.assessed"] == 10
    assert found.alerts >= 1
    assert found.failures == 0


async def test_a_batch_job_that_fails_goes_on_as_one_job_per_event(
    scoring: Settings,
    queue: ArqRedis,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    await activate_default_ruleset(uow_factory, tenant)
    events = await ingest(uow_factory, tenant, [transaction_event() for _ in range(3)])
    unknown = uuid.uuid4()  # one event of the batch does not exist: the batch fails
    jobs = Counter("vigil_scoring_jobs_total", "outcome")

    async with working(scoring):
        assert await enqueue_batch(queue, tenant, [(event, None) for event in [*events, unknown]])
        await eventually(lambda: _assessed(owner_engine, tenant, 3), what="assessed")
        await eventually(lambda: _no_jobs(queue, scoring), what="the jobs done")

    # Single jobs running at once may race to open the same account's case: one of
    # them is then retried, which is their ordinary way.
    settled = {outcome: count for outcome, count in jobs.since().items() if outcome != "retried"}
    assert settled == {"split": 4, "assessed": 3, "event_not_found": 1}
    found = await effects(owner_engine, tenant)
    assert found.assessments == found.audit["risk.assessed"] == 3


async def test_a_batch_job_with_a_malformed_batch_is_dropped(
    scoring: Settings, queue: ArqRedis, tenant: uuid.UUID, owner_engine: AsyncEngine
) -> None:
    jobs = Counter("vigil_scoring_jobs_total", "outcome")
    malformed: list[Any] = [
        [],
        "not a list",
        [["not-a-uuid", None]],
        [[str(uuid.uuid4())]],
        [[str(uuid.uuid4()), None]] * (MAX_BATCH + 1),
    ]

    async with working(scoring):
        for number, events in enumerate(malformed):
            await queue.enqueue_job("score_events", str(tenant), events, _job_id=f"bad-{number}")
        await eventually(lambda: _no_jobs(queue, scoring), what="the jobs done")

    assert jobs.since() == {"invalid": len(malformed)}
    assert await assessed(owner_engine, tenant) == 0


async def test_the_reconciler_leaves_alone_an_event_whose_batch_is_waiting(
    scoring: Settings,
    queue: ArqRedis,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    app_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    events = await ingest(uow_factory, tenant, [transaction_event() for _ in range(4)])
    waiting, lost = events[:3], events[3]
    assert await enqueue_batch(queue, tenant, [(event, None) for event in waiting])

    assert await reconciler(scoring, app_engine, queue).run_once(tenant) == 1

    queued = await queued_job_ids(queue, scoring.score_queue)
    assert batch_job_id(tenant, waiting) in queued
    assert len(queued) == 2
    assert any(job.startswith(f"{job_id(tenant, lost)}:r") for job in queued)


async def test_a_reconciler_pass_holds_no_more_for_a_long_backlog_than_for_a_short_one(
    scoring: Settings,
    queue: ArqRedis,
    owner_engine: AsyncEngine,
    uow_factory: UnitOfWorkFactory,
    app_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    async def peak_of_a_pass(backlog: int) -> int:
        tenant = await create_tenant(owner_engine, f"t-{uuid.uuid4().hex[:12]}", "Backlog bank")
        for _ in range(backlog // 500):
            await ingest(uow_factory, tenant, [transaction_event() for _each in range(500)])
        tracemalloc.start()
        try:
            enqueued = await reconciler(scoring, app_engine, queue).run_once(tenant)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert enqueued == backlog
        await forget_jobs(queue, scoring.score_queue)
        return peak

    short, long = await peak_of_a_pass(500), await peak_of_a_pass(2_500)

    # Five times the backlog: the rows read grow with it, but not the ids, replies and
    # tasks of the checks and enqueues, which a pass holds a slice of at a time.
    assert long < 2.5 * short, (short, long)


async def test_more_enqueues_at_once_than_the_pool_has_connections_wait_for_one(
    scoring: Settings,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    app_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    # A reconciler pass enqueues many events at once; a client with fewer connections
    # than that makes the rest wait rather than refuse them ("too many connections").
    events = await ingest(uow_factory, tenant, [transaction_event() for _ in range(120)])
    small = connect(scoring, max_connections=3)
    try:
        assert await reconciler(scoring, app_engine, small).run_once(tenant) == len(events)
        assert len(await queued_job_ids(small, scoring.score_queue)) == len(events)
    finally:
        await small.aclose(close_connection_pool=True)


# -- helpers ------------------------------------------------------------------------------


async def _true(value: bool) -> bool:
    return value


async def _at_least(count: Any, minimum: int) -> bool:
    return int(await count) >= minimum


async def _no_jobs(queue: ArqRedis, scoring: Settings) -> bool:
    return await queue.zcard(scoring.score_queue) == 0


async def _queued(queue: ArqRedis, scoring: Settings, count: int) -> bool:
    return await queue.zcard(scoring.score_queue) == count


async def _assessed(owner_engine: AsyncEngine, tenant: uuid.UUID, count: int) -> bool:
    return await assessed(owner_engine, tenant) == count
