"""Scoring as processes: ``vigil dispatcher``, ``vigil worker``, ``vigil reconcile`` and
the operators' commands, started as an operator would, with a worker killed mid-job and
Redis losing its queue."""

from __future__ import annotations

import signal
import uuid
from typing import Any

import pytest
import redis.asyncio
from aio_pika.abc import AbstractRobustConnection
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.audit_trail import verify
from adapters.broker import Names
from adapters.score_queue import enqueue_score, job_id
from adapters.settings import Settings
from domain.ports import UnitOfWorkFactory
from tests.e2e.conftest import StartVigil
from tests.integration.scoring_support import (
    ONE_ALERT,
    Effects,
    activate_default_ruleset,
    alerting,
    assessed,
    assessment_held,
    audit_head_locked,
    effects,
    eventually,
    ingest,
    queued_job_ids,
    score_queue,
    scoring_settings,
    sessions_of,
    sessions_waiting_for_locks,
)
from workers.scoring import CONNECTION_NAME

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("quiet_outbox")]

READY = "scoring worker ready"
# FLUSHDB empties a whole Redis database: this test has one to itself.
FLUSHED_REDIS = "redis://127.0.0.1:6379/14"


def process_env(scoring: Settings) -> dict[str, str]:
    """Settings for the processes: the test's score queue, no metrics ports, and no
    periodic reconciling (it covers every tenant; tests run one pass for their own)."""
    return {
        "VIGIL_ARQ_QUEUE": scoring.score_queue,
        "VIGIL_REDIS_URL": scoring.redis_url,
        "VIGIL_WORKER_METRICS_PORT": "0",
        "VIGIL_DISPATCH_METRICS_PORT": "0",
        "VIGIL_RECONCILE_INTERVAL_SECONDS": "0",
        "VIGIL_WORKER_JOB_TIMEOUT_SECONDS": "20",
        "VIGIL_WORKER_STOP_GRACE_SECONDS": "5",
        "VIGIL_RELAY_POLL_SECONDS": "0.2",
    }


async def vigil(start_vigil: StartVigil, env: dict[str, str], *argv: str) -> list[str]:
    """Run a one-shot command; return what it printed (its log lines left out)."""
    command = await start_vigil(*argv, env=env)
    assert await command.wait() == 0, command.output()
    return [
        line
        for line in command.log_path.read_text().splitlines()
        if line and not line.startswith("{")
    ]


async def _kill_a_waiting_worker(
    start_vigil: StartVigil, env: dict[str, str], owner_engine: AsyncEngine
) -> None:
    """Start a worker, wait until its job waits on a lock, and SIGKILL it there."""
    worker = await start_vigil("worker", env=env, ready=READY)
    await eventually(
        lambda: _at_least(sessions_waiting_for_locks(owner_engine, CONNECTION_NAME), 1),
        what="the job waiting on a lock",
    )
    worker.send(signal.SIGKILL)
    assert await worker.wait() == -signal.SIGKILL


@pytest.fixture
def scoring(settings: Settings) -> Settings:
    return scoring_settings(settings)


async def test_a_worker_killed_mid_job_leaves_exactly_one_assessment(
    start_vigil: StartVigil,
    scoring: Settings,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    env = process_env(scoring)
    version = await activate_default_ruleset(uow_factory, tenant)
    (event,) = await ingest(uow_factory, tenant, [alerting(transaction_event)])

    async with score_queue(scoring) as queue:
        # Scoring waits before its commit, on an assessment of the same event that the
        # test holds uncommitted: the worker is killed there, its transaction open.
        async with assessment_held(owner_engine, tenant, event, version):
            assert await enqueue_score(queue, tenant, event)
            await _kill_a_waiting_worker(start_vigil, env, owner_engine)
        await eventually(
            lambda: _none(sessions_of(owner_engine, CONNECTION_NAME)),
            what="the killed worker's sessions gone",
        )
        assert await assessed(owner_engine, tenant) == 0
        # Its job is still queued, held by the in-progress key the dead worker left.
        assert await queued_job_ids(queue, scoring.score_queue) == [job_id(tenant, event)]
        assert await queue.exists(f"arq:in-progress:{job_id(tenant, event)}")

        worker = await start_vigil("worker", env=env, ready=READY)
        printed = await vigil(
            start_vigil, env, "reconcile", "--tenant", str(tenant), "--deadline", "0"
        )
        assert printed == ["1 events enqueued again"]
        await eventually(lambda: _assessed(owner_engine, tenant, 1), what="assessed")
        assert await worker.stop() == 0

    assert await effects(owner_engine, tenant) == Effects(**ONE_ALERT)
    async with owner_engine.connect() as connection:
        await verify(connection, tenant)


async def test_a_worker_killed_in_its_commit_leaves_exactly_one_assessment(
    start_vigil: StartVigil,
    scoring: Settings,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    """Killed once its COMMIT is sent (waiting there for the audit chain's head, which the
    commit seals onto), the worker never learns the outcome: the database commits, and
    the job, run again, finds the event assessed and adds nothing."""
    env = process_env(scoring)
    await activate_default_ruleset(uow_factory, tenant)
    (event,) = await ingest(uow_factory, tenant, [alerting(transaction_event)])

    async with score_queue(scoring) as queue:
        async with audit_head_locked(owner_engine, tenant):
            assert await enqueue_score(queue, tenant, event)
            await _kill_a_waiting_worker(start_vigil, env, owner_engine)
        await eventually(lambda: _assessed(owner_engine, tenant, 1), what="the commit done")
        await eventually(
            lambda: _none(sessions_of(owner_engine, CONNECTION_NAME)),
            what="the killed worker's sessions gone",
        )
        assert await queued_job_ids(queue, scoring.score_queue) == [job_id(tenant, event)]

        worker = await start_vigil("worker", env=env, ready=READY)
        printed = await vigil(
            start_vigil, env, "reconcile", "--tenant", str(tenant), "--deadline", "0"
        )
        assert printed == ["0 events enqueued again"]
        assert await worker.stop() == 0

    assert await assessed(owner_engine, tenant) == 1
    assert await effects(owner_engine, tenant) == Effects(**ONE_ALERT)
    async with owner_engine.connect() as connection:
        await verify(connection, tenant)


async def test_after_redis_lost_its_queue_every_accepted_event_is_assessed(
    start_vigil: StartVigil,
    settings: Settings,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    transaction_event: Any,
    amqp: AbstractRobustConnection,
    names: Names,
) -> None:
    scoring = scoring_settings(settings, redis_url=FLUSHED_REDIS)
    env = process_env(scoring)
    async with amqp.channel() as channel:
        await (await channel.get_queue(names.dispatch)).purge()
    await activate_default_ruleset(uow_factory, tenant)

    relay = await start_vigil("relay", env=env, ready="broker connected")
    dispatcher = await start_vigil("dispatcher", env=env, ready="consuming the dispatch queue")
    events = await ingest(
        uow_factory, tenant, [transaction_event(originator=f"ACC-{n:03d}") for n in range(30)]
    )
    async with score_queue(scoring) as queue:
        await eventually(lambda: _events_queued(queue, scoring, 30), what="30 events queued")
        assert await relay.stop() == 0

        await _flush(FLUSHED_REDIS)  # Redis restarts without its data
        assert await queue.zcard(scoring.score_queue) == 0

        printed = await vigil(
            start_vigil, env, "reconcile", "--tenant", str(tenant), "--deadline", "0"
        )
        assert printed == ["30 events enqueued again"]
        worker = await start_vigil("worker", env=env, ready=READY)
        await eventually(lambda: _assessed(owner_engine, tenant, 30), what="all assessed")
        assert await worker.stop() == 0
    assert await dispatcher.stop() == 0

    async with owner_engine.connect() as connection:
        scored = await connection.scalar(
            text("SELECT count(DISTINCT event_id) FROM assessments WHERE tenant_id = :t"),
            {"t": tenant},
        )
    assert scored == len(events) == 30


async def test_operators_list_failed_events_and_redrive_them_once_fixed(
    start_vigil: StartVigil,
    scoring: Settings,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    env = process_env(scoring)
    (event,) = await ingest(uow_factory, tenant, [alerting(transaction_event)])

    async with score_queue(scoring) as queue:
        worker = await start_vigil("worker", env=env, ready=READY)
        assert await enqueue_score(queue, tenant, event)  # the tenant has no ruleset yet
        await eventually(lambda: _failed(owner_engine, tenant, 1), what="marked failed")

        (listed,) = await vigil(start_vigil, env, "failures", str(tenant))
        event_id, attempts, _, reason = listed.split("\t")
        assert (event_id, attempts) == (str(event), "1")
        assert reason == "NO_ACTIVE_RULESET: the tenant has no active ruleset"

        installed = await vigil(start_vigil, env, "ruleset", str(tenant), "--activate")
        assert installed == ["ruleset version 1 installed (active)"]
        redriven = await vigil(start_vigil, env, "redrive", str(tenant), "--actor", "ops-anna")
        assert redriven == ["1 events enqueued again"]
        await eventually(lambda: _assessed(owner_engine, tenant, 1), what="assessed")
        assert await worker.stop() == 0

    assert await effects(owner_engine, tenant) == Effects(**ONE_ALERT)
    assert await vigil(start_vigil, {}, "failures", str(tenant)) == []


async def test_a_new_tenant_gets_the_default_ruleset_active(
    start_vigil: StartVigil, owner_engine: AsyncEngine
) -> None:
    slug = f"t-{uuid.uuid4().hex[:12]}"

    (printed,) = await vigil(start_vigil, {}, "tenant", slug)
    again = await vigil(start_vigil, {}, "tenant", slug)

    assert again == [printed]
    async with owner_engine.connect() as connection:
        rows = (
            await connection.execute(
                text("SELECT version, status, document FROM rulesets WHERE tenant_id = :t"),
                {"t": uuid.UUID(printed)},
            )
        ).all()
    assert [(row.version, row.status) for row in rows] == [(1, "active")]
    assert rows[0].document["name"] == "default"


# -- helpers ------------------------------------------------------------------------------


async def _flush(url: str) -> None:
    client = redis.asyncio.Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


async def _at_least(count: Any, minimum: int) -> bool:
    return int(await count) >= minimum


async def _none(count: Any) -> bool:
    return int(await count) == 0


async def _events_queued(queue: Any, scoring: Settings, count: int) -> bool:
    """Whether the dispatcher's batch jobs in the queue hold ``count`` events in all."""
    jobs = await queue.queued_jobs(queue_name=scoring.score_queue)
    return sum(len(job.args[1]) for job in jobs if job.function == "score_events") == count


async def _assessed(owner_engine: AsyncEngine, tenant: uuid.UUID, count: int) -> bool:
    return await assessed(owner_engine, tenant) == count


async def _failed(owner_engine: AsyncEngine, tenant: uuid.UUID, count: int) -> bool:
    async with owner_engine.connect() as connection:
        found = await connection.scalar(
            text("SELECT count(*) FROM scoring_failures WHERE tenant_id = :t"), {"t": tenant}
        )
    return found == count
