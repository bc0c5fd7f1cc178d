"""``vigil inbound`` as a process: it consumes what an integration publishes, logs it with
the tenant and correlation ids, and exits 0 when a supervisor stops it."""

from __future__ import annotations

import signal
import uuid
from typing import Any

import pytest
from aio_pika.abc import AbstractRobustConnection
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.broker import Names
from tests.e2e.conftest import StartVigil
from tests.integration.inbound_support import WAIT_SECONDS, Broker, cloud_event

pytestmark = pytest.mark.e2e

READY = "consuming the inbound queue"


async def events_of(owner_engine: AsyncEngine, tenant: uuid.UUID) -> list[tuple[str, str]]:
    async with owner_engine.connect() as connection:
        result = await connection.execute(
            text("SELECT idempotency_key, correlation_id FROM events WHERE tenant_id = :t"),
            {"t": tenant},
        )
        return [(row.idempotency_key, row.correlation_id) for row in result]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_vigil_inbound_stores_a_published_event_and_exits_0_when_stopped(
    signum: signal.Signals,
    start_vigil: StartVigil,
    amqp: AbstractRobustConnection,
    names: Names,
    owner_engine: AsyncEngine,
    tenant: uuid.UUID,
    transaction_event: Any,
) -> None:
    broker = Broker(amqp, names)
    await broker.purge()
    envelope = cloud_event(transaction_event(), tenant)
    process = await start_vigil("inbound", ready=READY)

    await broker.publish(envelope)
    accepted = await process.wait_logged("inbound event accepted", seconds=WAIT_SECONDS)
    process.send(signum)

    assert await process.wait() == 0
    assert process.logged("stopped")
    assert await events_of(owner_engine, tenant) == [(envelope["id"], envelope["correlationid"])]
    assert accepted["tenant_id"] == str(tenant)
    assert accepted["correlation_id"] == envelope["correlationid"]
    log_text = process.log_path.read_text()
    for party in ("originator", "beneficiary"):
        assert envelope["data"][party]["account"] not in log_text
    assert await broker.waiting(names.inbound) == 0
    assert await broker.waiting(names.inbound_dead) == 0
