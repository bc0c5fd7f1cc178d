"""The relay's publish rate beside aio-pika publishing the same number of confirmed,
persistent, mandatory messages with the same number in flight."""

from __future__ import annotations

import asyncio
import time
import uuid

from sqlalchemy import text

from adapters.broker import Names
from adapters.database import make_engine
from adapters.settings import Settings
from bench import raw
from domain.messages import EVENT_RECEIVED
from outbox.relay import Relay

FILL = """
INSERT INTO outbox (tenant_id, message_id, ordering_key, message_type, envelope)
SELECT :tenant, gen_random_uuid(), (CAST(:keys AS uuid[]))[1 + (i % 2000)], 'event.received',
       jsonb_build_object('specversion', '1.0', 'id', i::text, 'type', 'event.received',
                          'data', jsonb_build_object('eventId', i::text))
FROM generate_series(1, :count) AS i
"""


async def compare(settings: Settings, tenant_id: uuid.UUID, count: int = 20_000) -> list[list[str]]:
    owner = make_engine(settings.owner_database_url, pool_size=1)
    engine = make_engine(settings.relay_database_url, pool_size=settings.relay_concurrency + 1)
    relays = [Relay.from_settings(settings, engine) for _ in range(settings.relay_concurrency)]
    try:
        await _drain(relays)  # whatever earlier benchmarks left pending
        async with owner.begin() as connection:
            keys = [uuid.uuid4() for _ in range(2_000)]
            await connection.execute(
                text(FILL), {"tenant": tenant_id, "keys": keys, "count": count}
            )

        started = time.perf_counter()
        published = await _drain(relays)
        ours = published / (time.perf_counter() - started)
    finally:
        for relay in relays:
            await relay.close()
        await engine.dispose()
        await owner.dispose()

    names = Names(settings.amqp_prefix)
    baseline = await raw.publish_rate(
        settings.amqp_url.get_secret_value(),
        names.events_exchange,
        EVENT_RECEIVED,
        count,
        settings.relay_batch_size,
    )
    return [
        [
            f"relay, {published:,} messages, {settings.relay_concurrency} claim loops",
            f"{ours:,.0f} msg/s",
            f"{baseline:,.0f} msg/s",
            f"{ours / baseline:.2f}",
        ]
    ]


async def _drain(relays: list[Relay]) -> int:
    """Run the relays' claim loops side by side, as ``vigil relay`` does, until empty."""

    async def loop(relay: Relay) -> int:
        total = 0
        while published := await relay.run_once():
            total += published
        return total

    return sum(await asyncio.gather(*(loop(relay) for relay in relays)))
