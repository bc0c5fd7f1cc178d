"""The dispatcher against the real RabbitMQ, PostgreSQL and Redis.

Each test runs a dispatcher in-process on its own connection and a score queue of its
own, publishes ``event.received`` messages as the relay does (to the events exchange,
whose binding routes them to the dispatch queue), and checks the jobs it enqueued, its
inbox, and what a worker made of the jobs.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection
from aiormq.abc import ChannelFrame
from arq.connections import ArqRedis
from pamqp.commands import Basic
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.broker import Names
from adapters.score_queue import batch_job_id, connect
from adapters.settings import Settings
from adapters.tenants import create_tenant
from domain.messages import EVENT_RECEIVED
from domain.ports import UnitOfWorkFactory
from tests.integration.scoring_support import (
    ONE_ALERT,
    Counter,
    Effects,
    activate_default_ruleset,
    alerting,
    assessed,
    effects,
    eventually,
    ingest,
    queued_job_ids,
    received_envelopes,
    sessions_waiting_for_locks,
    working,
)
from workers.consumer import Backoff
from workers.dispatcher import CONSUMER, Dispatcher, read_received

FAST = Backoff(first_seconds=0.05, max_seconds=0.2)


@pytest.fixture
async def publish(amqp: AbstractRobustConnection, names: Names) -> Callable[..., Any]:
    """Publish to the events exchange as the relay does; the dispatch queue starts empty."""
    async with amqp.channel() as channel:
        await (await channel.get_queue(names.dispatch)).purge()
        await (await channel.get_queue(names.dispatch_dead)).purge()

    async def send(envelope: Mapping[str, Any] | bytes, routing_key: str = EVENT_RECEIVED) -> None:
        body = envelope if isinstance(envelope, bytes) else json.dumps(envelope).encode()
        message_id = None if isinstance(envelope, bytes) else str(envelope.get("id"))
        async with amqp.channel() as channel:
            exchange = await channel.get_exchange(names.events_exchange)
            await exchange.publish(
                aio_pika.Message(
                    body,
                    message_id=message_id,
                    content_type="application/cloudevents+json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=routing_key,
            )

    return send


@pytest.fixture
def dispatching(
    settings: Settings, names: Names, uow_factory: UnitOfWorkFactory
) -> Callable[..., Any]:
    """``async with dispatching(redis): ...`` runs a dispatcher for the block."""

    @asynccontextmanager
    async def run(redis: ArqRedis, **options: Any) -> AsyncIterator[Dispatcher]:
        connection = await aio_pika.connect_robust(settings.amqp_url.get_secret_value())
        chosen: dict[str, Any] = {"prefetch": 10, "concurrency": 4, "backoff": FAST}
        dispatcher = Dispatcher(connection, uow_factory, redis, names, **(chosen | options))
        try:
            await dispatcher.start()
            yield dispatcher
        finally:
            await dispatcher.stop()
            await connection.close()

    return run


async def events_in_jobs(queue: ArqRedis, scoring: Settings, tenant: uuid.UUID) -> list[str]:
    """The event ids the queued batch jobs of the tenant carry, one entry per job holding
    the event."""
    found = []
    for job in await queue.queued_jobs(queue_name=scoring.score_queue):
        assert job.function == "score_events"
        if job.args[0] == str(tenant):
            found += [event for event, _ in job.args[1]]
    return found


async def waiting_in(amqp: AbstractRobustConnection, name: str) -> int:
    async with amqp.channel() as channel:
        queue = await channel.get_queue(name)
        return queue.declaration_result.message_count or 0


async def inbox_has(owner_engine: AsyncEngine, tenant: uuid.UUID, message_id: str) -> bool:
    async with owner_engine.connect() as connection:
        found = await connection.scalar(
            text(
                "SELECT count(*) FROM inbox WHERE tenant_id = :t AND consumer = :c"
                " AND message_id = :m"
            ),
            {"t": tenant, "c": CONSUMER, "m": message_id},
        )
    return bool(found)


async def test_an_ingested_event_is_dispatched_once_and_scored(
    scoring: Settings,
    queue: ArqRedis,
    publish: Any,
    dispatching: Any,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    transaction_event: Any,
    amqp: AbstractRobustConnection,
    names: Names,
) -> None:
    await activate_default_ruleset(uow_factory, tenant)
    (event,) = await ingest(uow_factory, tenant, [alerting(transaction_event)])
    (envelope,) = await received_envelopes(owner_engine, tenant)
    outcomes = Counter("vigil_dispatch_messages_total", "outcome")

    async with dispatching(queue):
        await publish(envelope)
        await eventually(lambda: _equals(outcomes.since, {"enqueued": 1}), what="enqueued")

    (job,) = await queue.queued_jobs(queue_name=scoring.score_queue)
    assert job.job_id == batch_job_id(tenant, [event])
    assert (job.function, list(job.args)) == (
        "score_events",
        [str(tenant), [[str(event), envelope["correlationid"]]]],
    )
    assert await inbox_has(owner_engine, tenant, envelope["id"])
    assert await waiting_in(amqp, names.dispatch) == 0

    async with working(scoring):
        await eventually(lambda: _assessed(owner_engine, tenant), what="assessed")
    assert await effects(owner_engine, tenant) == Effects(**ONE_ALERT)


async def test_the_same_message_delivered_twice_has_one_effect(
    scoring: Settings,
    queue: ArqRedis,
    publish: Any,
    dispatching: Any,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    await activate_default_ruleset(uow_factory, tenant)
    await ingest(uow_factory, tenant, [alerting(transaction_event)])
    (envelope,) = await received_envelopes(owner_engine, tenant)
    outcomes = Counter("vigil_dispatch_messages_total", "outcome")

    async with dispatching(queue), working(scoring):
        await publish(envelope)
        await eventually(lambda: _assessed(owner_engine, tenant), what="assessed")
        await publish(envelope)  # the relay published it again
        await eventually(
            lambda: _equals(outcomes.since, {"enqueued": 1, "duplicate": 1}), what="dropped"
        )
        await asyncio.sleep(0.2)  # room for a job the duplicate should not have made

    assert await queued_job_ids(queue, scoring.score_queue) == []
    assert await effects(owner_engine, tenant) == Effects(**ONE_ALERT)


async def test_two_copies_at_once_enqueue_one_job(
    scoring: Settings,
    queue: ArqRedis,
    publish: Any,
    dispatching: Any,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    events = await ingest(uow_factory, tenant, [transaction_event() for _ in range(20)])
    envelopes = await received_envelopes(owner_engine, tenant)
    outcomes = Counter("vigil_dispatch_messages_total", "outcome")

    # Two dispatchers, every message twice: each copy lands on either.
    async with dispatching(queue), dispatching(queue):
        for envelope in envelopes:
            await publish(envelope)
            await publish(envelope)
        await eventually(
            lambda: _equals(outcomes.since, {"enqueued": 20, "duplicate": 20}), what="settled"
        )

    # Every event in exactly one job, however the copies were batched.
    assert sorted(await events_in_jobs(queue, scoring, tenant)) == sorted(map(str, events))


async def test_a_message_that_is_not_an_event_received_is_dead_lettered(
    queue: ArqRedis,
    publish: Any,
    dispatching: Any,
    tenant: uuid.UUID,
    amqp: AbstractRobustConnection,
    names: Names,
) -> None:
    outcomes = Counter("vigil_dispatch_messages_total", "outcome")
    good = {
        "id": str(uuid.uuid4()),
        "type": EVENT_RECEIVED,
        "tenantid": str(tenant),
        "data": {"eventId": str(uuid.uuid4())},
    }

    async with dispatching(queue):
        await publish(b"{not json")
        await publish({**good, "tenantid": "acme"})
        await publish({**good, "data": {}})
        await publish({**good, "id": ""})
        await publish({**good, "type": "event.accepted"})
        await publish(b"[" * 5000 + b"]" * 5000)
        await eventually(lambda: _equals(outcomes.since, {"rejected": 6}), what="rejected")
        await eventually(lambda: _count(waiting_in(amqp, names.dispatch_dead), 6), what="dead")

    assert await waiting_in(amqp, names.dispatch) == 0


async def test_while_redis_is_away_a_message_is_requeued_and_not_marked_seen(
    settings: Settings,
    scoring: Settings,
    queue: ArqRedis,
    publish: Any,
    dispatching: Any,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    (event,) = await ingest(uow_factory, tenant, [transaction_event()])
    (envelope,) = await received_envelopes(owner_engine, tenant)
    outcomes = Counter("vigil_dispatch_messages_total", "outcome")
    nowhere = connect(scoring.model_copy(update={"redis_url": "redis://127.0.0.1:9/15"}))

    try:
        async with dispatching(nowhere):
            await publish(envelope)
            await eventually(lambda: _at_least(outcomes.since, "retried", 2), what="retried")
    finally:
        await nowhere.aclose(close_connection_pool=True)
    # Not acknowledged, and not in the inbox: a later delivery is not taken as a copy.
    assert not await inbox_has(owner_engine, tenant, envelope["id"])

    async with dispatching(queue):
        await eventually(lambda: _at_least(outcomes.since, "enqueued", 1), what="enqueued")
    assert await queued_job_ids(queue, scoring.score_queue) == [batch_job_id(tenant, [event])]
    assert await inbox_has(owner_engine, tenant, envelope["id"])


# -- helpers ------------------------------------------------------------------------------


async def _equals(read: Callable[[], dict[str, int]], expected: dict[str, int]) -> bool:
    return read() == expected


async def _at_least(read: Callable[[], dict[str, int]], name: str, count: int) -> bool:
    return read().get(name, 0) >= count


async def _count(value: Any, expected: int) -> bool:
    return int(await value) == expected


async def _all_acked(acks_per_write: list[int], expected: int) -> bool:
    return sum(acks_per_write) == expected


async def _assessed(owner_engine: AsyncEngine, tenant: uuid.UUID) -> bool:
    return await assessed(owner_engine, tenant) == 1


async def test_an_unexpected_failure_gives_the_message_back_to_the_queue(
    scoring: Settings,
    queue: ArqRedis,
    publish: Any,
    dispatching: Any,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    transaction_event: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await activate_default_ruleset(uow_factory, tenant)
    await ingest(uow_factory, tenant, [transaction_event()])
    (envelope,) = await received_envelopes(owner_engine, tenant)
    failures = iter([RuntimeError("a defect outside the dispatch step")])

    def read_once_failing(body: bytes) -> Any:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return read_received(body)

    monkeypatch.setattr("workers.dispatcher.read_received", read_once_failing)
    outcomes = Counter("vigil_dispatch_messages_total", "outcome")

    async with dispatching(queue), working(scoring):
        await publish(envelope)
        await eventually(lambda: _assessed(owner_engine, tenant), what="assessed")

    assert outcomes.since() == {"retried": 1, "enqueued": 1}


async def test_messages_that_arrive_together_share_a_job_per_tenant(
    scoring: Settings,
    queue: ArqRedis,
    publish: Any,
    dispatching: Any,
    tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    uow_factory: UnitOfWorkFactory,
    transaction_event: Any,
) -> None:
    other = await create_tenant(owner_engine, f"t-{uuid.uuid4().hex[:12]}", "Other bank")
    mine = await ingest(uow_factory, tenant, [transaction_event() for _ in range(30)])
    theirs = await ingest(uow_factory, other, [transaction_event() for _ in range(5)])
    envelopes = await received_envelopes(owner_engine, tenant)
    envelopes += await received_envelopes(owner_engine, other)
    outcomes = Counter("vigil_dispatch_messages_total", "outcome")

    # Batches of ten, and a linger long enough that only a full batch closes early.
    async with dispatching(queue, prefetch=100, batch_size=10, linger_seconds=5.0):
        for envelope in envelopes:
            await publish(envelope)
        await eventually(lambda: _equals(outcomes.since, {"enqueued": 35}), what="enqueued")

    jobs = await queue.queued_jobs(queue_name=scoring.score_queue)
    sizes = sorted((job.args[0], len(job.args[1])) for job in jobs)
    assert sizes == sorted([(str(tenant), 10)] * 3 + [(str(other), 5)])
    assert sorted(await events_in_jobs(queue, scoring, tenant)) == sorted(map(str, mine))
    assert sorted(await events_in_jobs(queue, scoring, other)) == sorted(map(str, theirs))
    for job in jobs:
        assert job.job_id == batch_job_id(
            uuid.UUID(job.args[0]), [uuid.UUID(event) for event, _ in job.args[1]]
        )


async def test_while_a_tenants_batch_runs_its_next_messages_gather_into_one_batch(
    scoring: Settings,
    queue: ArqRedis,
    publish: Any,
    dispatching: Any,
    tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    uow_factory: UnitOfWorkFactory,
    amqp: AbstractRobustConnection,
    names: Names,
    transaction_event: Any,
) -> None:
    await ingest(uow_factory, tenant, [transaction_event() for _ in range(21)])
    first, *rest = await received_envelopes(owner_engine, tenant)
    outcomes = Counter("vigil_dispatch_messages_total", "outcome")

    async with dispatching(
        queue, prefetch=100, batch_size=100, linger_seconds=0.01, tenant_batches=1
    ):
        # Another transaction holds the first message's inbox row: its batch waits.
        async with uow_factory(tenant) as blocker:
            assert await blocker.inbox.first_sights(CONSUMER, [first["id"]]) == {first["id"]}
            await publish(first)
            await eventually(lambda: _waiting(owner_engine, 1), what="the first batch waiting")
            # Each message comes long after the linger of the one before.
            for envelope in rest:
                await publish(envelope)
                await asyncio.sleep(0.03)
            await eventually(lambda: _none_ready(amqp, names), what="all delivered")
            assert await queue.queued_jobs(queue_name=scoring.score_queue) == []
            await blocker.commit()
        await eventually(
            lambda: _equals(outcomes.since, {"duplicate": 1, "enqueued": 20}), what="settled"
        )

    jobs = await queue.queued_jobs(queue_name=scoring.score_queue)
    assert [len(job.args[1]) for job in jobs] == [20]
    assert sorted(await events_in_jobs(queue, scoring, tenant)) == sorted(
        envelope["data"]["eventId"] for envelope in rest
    )


async def _none_ready(amqp: AbstractRobustConnection, names: Names) -> bool:
    return await waiting_in(amqp, names.dispatch) == 0


async def test_batches_holding_copies_in_opposite_orders_do_not_deadlock(
    tenant: uuid.UUID, uow_factory: UnitOfWorkFactory, owner_engine: AsyncEngine
) -> None:
    ids = [f"message-{i:05d}" for i in range(2_000)]
    middle = ids[1_000]

    async def first_sights(message_ids: list[str]) -> set[str]:
        async with uow_factory(tenant) as uow:
            seen = await uow.inbox.first_sights(CONSUMER, message_ids)
            await uow.commit()
        return seen

    # A third transaction holds the middle row; two batches run into it from either end.
    async with uow_factory(tenant) as blocker:
        assert await blocker.inbox.first_sights(CONSUMER, [middle]) == {middle}
        forward = asyncio.create_task(first_sights(ids))
        backward = asyncio.create_task(first_sights(ids[::-1]))
        await eventually(lambda: _waiting(owner_engine, 2), what="both batches waiting")
        await blocker.commit()
    seen = await asyncio.gather(forward, backward)

    # Each message was new to exactly one of them; neither was chosen as a deadlock victim.
    assert seen[0] | seen[1] | {middle} == set(ids)
    assert not seen[0] & seen[1]


async def _waiting(owner_engine: AsyncEngine, count: int) -> bool:
    return await sessions_waiting_for_locks(owner_engine, "vigil") >= count


async def test_the_acks_of_a_batch_go_to_the_broker_in_one_write(
    queue: ArqRedis,
    publish: Any,
    dispatching: Any,
    tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    uow_factory: UnitOfWorkFactory,
    transaction_event: Any,
    names: Names,
    amqp: AbstractRobustConnection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One ack frame per write woke the broker once per message; a batch settles its
    # messages together, so their acks can leave together, each for its own delivery.
    await ingest(uow_factory, tenant, [transaction_event() for _ in range(12)])
    envelopes = await received_envelopes(owner_engine, tenant)
    outcomes = Counter("vigil_dispatch_messages_total", "outcome")
    acks_per_write: list[int] = []
    marshall = ChannelFrame.marshall

    def counting(*args: Any, **kwargs: Any) -> ChannelFrame:
        frames = kwargs.get("frames", args[1] if len(args) > 1 else [])
        acks = [frame for frame in frames if isinstance(frame, Basic.Ack)]
        if acks:
            assert not any(frame.multiple for frame in acks)
            acks_per_write.append(len(acks))
        return marshall(*args, **kwargs)

    monkeypatch.setattr(ChannelFrame, "marshall", counting)
    async with dispatching(queue, prefetch=100, batch_size=12, linger_seconds=5.0):
        for envelope in envelopes:
            await publish(envelope)
        await eventually(lambda: _equals(outcomes.since, {"enqueued": 12}), what="enqueued")
        await eventually(lambda: _all_acked(acks_per_write, 12), what="acked")

    assert acks_per_write == [12]
    # Every delivery was settled: none comes back to the queue once the consumer is gone.
    assert await waiting_in(amqp, names.dispatch) == 0
