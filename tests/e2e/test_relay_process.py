"""``vigil relay`` as a process: killed between the broker's confirm and the mark,
stopped with SIGTERM mid-stream, and left without its broker for a while."""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.broker import Names
from adapters.database import plain_url
from adapters.settings import Settings
from domain.ports import UnitOfWorkFactory
from services.ingest import Caller, Outcome, ingest_events
from tests.e2e.conftest import StartVigil, VigilProcess
from tests.integration.relay_support import outbox_rows, tap, until

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("quiet_outbox")]

RELAY_ENV = {"VIGIL_RELAY_POLL_SECONDS": "0.2"}
CONSUMER = "test-relay-e2e"


async def start_relay(start_vigil: StartVigil, **env: str) -> VigilProcess:
    return await start_vigil("relay", env={**RELAY_ENV, **env}, ready="broker connected")


async def ingest(
    uow_factory: UnitOfWorkFactory, tenant: uuid.UUID, events: list[dict[str, Any]]
) -> None:
    for first in range(0, len(events), 1000):
        results = await ingest_events(
            uow_factory, Caller(tenant, "core-banking", "test"), events[first : first + 1000]
        )
        assert {result.outcome for result in results} == {Outcome.ACCEPTED}


async def first_sight(uow_factory: UnitOfWorkFactory, tenant: uuid.UUID, message_id: str) -> bool:
    """What a consumer does with a message id: record it in its inbox, in the tenant's
    unit of work; False means it was seen before and the message is to be dropped."""
    async with uow_factory(tenant) as uow:
        first = await uow.inbox.first_sight(CONSUMER, message_id)
        await uow.commit()
    return first


@asynccontextmanager
async def marks_held_back(
    owner_engine: AsyncEngine, settings: Settings, tenant: uuid.UUID
) -> AsyncIterator[int]:
    """Make every update of the tenant's outbox rows wait for an advisory lock, held
    until the block ends; yield the lock's key."""
    name = f"test_hold_marks_{secrets.token_hex(4)}"
    key = secrets.randbelow(2**31)
    holder = await asyncpg.connect(plain_url(settings.owner_database_url))
    await holder.execute("SELECT pg_advisory_lock($1)", key)
    async with owner_engine.begin() as connection:
        await connection.execute(
            text(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql"
                f" SET lock_timeout = 0 AS $$"
                f" BEGIN PERFORM pg_advisory_xact_lock({key}); RETURN NEW; END $$"
            )
        )
        await connection.execute(
            text(
                f"CREATE TRIGGER {name} BEFORE UPDATE ON outbox FOR EACH ROW"
                f" WHEN (NEW.tenant_id = '{tenant}'::uuid) EXECUTE FUNCTION {name}()"
            )
        )
    try:
        yield key
    finally:
        await holder.close()
        async with owner_engine.begin() as connection:
            await connection.execute(text(f"DROP TRIGGER {name} ON outbox"))
            await connection.execute(text(f"DROP FUNCTION {name}()"))


async def waiting_for_advisory_lock(owner_engine: AsyncEngine, key: int) -> bool:
    """Whether a session waits for the advisory lock ``key`` (below 2**31: it is all in
    ``objid``)."""
    async with owner_engine.connect() as connection:
        waiting = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND classid = 0 AND objid = :key AND objsubid = 1"
            ),
            {"key": key},
        )
    return bool(waiting)


async def test_a_relay_killed_after_the_confirm_publishes_again_and_the_inbox_drops_it(
    start_vigil: StartVigil,
    settings: Settings,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    transaction_event: Any,
    owner_engine: AsyncEngine,
    amqp: AbstractRobustConnection,
    names: Names,
) -> None:
    async with tap(amqp, names, tenant) as queue:
        async with marks_held_back(owner_engine, settings, tenant) as key:
            await ingest(uow_factory, tenant, [transaction_event()])
            relay = await start_relay(start_vigil)
            await until(lambda: len(queue.messages) == 1)
            (message_id,) = queue.ids
            assert await first_sight(uow_factory, tenant, message_id)

            # The relay has its confirm and now waits inside the update that marks the row.
            for _ in range(100):
                if await waiting_for_advisory_lock(owner_engine, key):
                    break
                await asyncio.sleep(0.05)
            assert await waiting_for_advisory_lock(owner_engine, key)
            relay.send(signal.SIGKILL)
            assert await relay.wait() == -signal.SIGKILL

        assert (await outbox_rows(owner_engine, tenant))[message_id].published_at is None
        relay = await start_relay(start_vigil)
        await until(lambda: len(queue.messages) == 2)
        assert queue.ids == [message_id, message_id]
        assert not await first_sight(uow_factory, tenant, message_id)
        assert await relay.stop() == 0

    row = (await outbox_rows(owner_engine, tenant))[message_id]
    assert row.published_at is not None


async def test_sigterm_finishes_the_batch_in_flight_and_exits_cleanly(
    start_vigil: StartVigil,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    transaction_event: Any,
    owner_engine: AsyncEngine,
    amqp: AbstractRobustConnection,
    names: Names,
) -> None:
    events = [
        transaction_event(originator=f"ACC-{n % 40:03d}", beneficiary=f"BEN-{n % 7}")
        for n in range(3000)
    ]
    await ingest(uow_factory, tenant, events)

    async with tap(amqp, names, tenant) as queue:
        relay = await start_relay(start_vigil, VIGIL_RELAY_BATCH_SIZE="20")
        await until(lambda: len(queue.messages) >= 200)
        assert await relay.stop() == 0
        await asyncio.sleep(0.5)

    assert relay.logged("relay stopped")
    rows = await outbox_rows(owner_engine, tenant)
    published = {key for key, row in rows.items() if row.published_at is not None}
    pending = {key for key, row in rows.items() if row.published_at is None}
    assert pending, "the relay should have been stopped mid-stream"
    # Every message that went out is marked, and nothing marked went missing.
    assert sorted(queue.ids) == sorted(published)
    assert all(rows[key].attempts == 0 and rows[key].last_error is None for key in pending)


@pytest.mark.disruptive
async def test_the_backlog_drains_after_the_broker_comes_back(
    start_vigil: StartVigil,
    settings: Settings,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    transaction_event: Any,
    owner_engine: AsyncEngine,
    amqp: AbstractRobustConnection,
    names: Names,
) -> None:
    # A durable queue of its own: an exclusive one would go with the broker.
    queue_name = f"{names.prefix}.test.outage.{secrets.token_hex(4)}"
    try:
        async with broker_channel(settings) as channel:
            queue = await channel.declare_queue(queue_name, durable=True)
            await queue.bind(names.events_exchange, routing_key="event.received")
        relay = await start_relay(start_vigil)
        await rabbitmqctl("stop_app")
        try:
            await ingest(uow_factory, tenant, [transaction_event() for _ in range(300)])
            await until(lambda: bool(relay.logged("relay waiting for the broker or the database")))
            assert relay.running
        finally:
            await rabbitmqctl("start_app")
            await rabbitmqctl("await_startup")
            await reconnected(amqp)

        rows = await outbox_rows(owner_engine, tenant)
        await until_published(owner_engine, tenant, len(rows))
        assert relay.running
        assert await relay.stop() == 0
        async with broker_channel(settings) as channel:
            ids = await drain(channel, queue_name)
        assert sorted(ids) == sorted(rows)
    finally:
        async with broker_channel(settings) as channel:
            await channel.queue_delete(queue_name)


async def rabbitmqctl(*args: str) -> None:
    completed = await asyncio.to_thread(
        subprocess.run, ["rabbitmqctl", *args], capture_output=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr.decode()


async def reconnected(amqp: AbstractRobustConnection) -> None:
    """Wait for the session's connection to come back (it retries every few seconds):
    the tests after this one and the session's teardown use it."""
    async with asyncio.timeout(60):
        while True:
            await amqp.connected.wait()
            try:
                async with amqp.channel():
                    return
            except aio_pika.exceptions.AMQPError:
                await asyncio.sleep(0.5)


@asynccontextmanager
async def broker_channel(settings: Settings) -> AsyncIterator[AbstractChannel]:
    """A channel on a connection of its own, once the broker takes connections again."""
    async with asyncio.timeout(60):
        while True:
            try:
                connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
                break
            except (ConnectionError, OSError):
                await asyncio.sleep(0.5)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


async def until_published(engine: AsyncEngine, tenant: uuid.UUID, count: int) -> None:
    async with asyncio.timeout(90):
        while True:
            rows = await outbox_rows(engine, tenant)
            if sum(row.published_at is not None for row in rows.values()) == count:
                return
            await asyncio.sleep(0.2)


async def drain(channel: AbstractChannel, queue_name: str) -> list[str]:
    queue = await channel.declare_queue(queue_name, passive=True)
    ids = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        ids.append(str(message.message_id))
    return ids
