"""The relay's publish rate beside aio-pika publishing the same number of confirmed,
persistent, mandatory messages with the same number in flight. The ratio is the median
of the ratios of alternating rounds."""

from __future__ import annotations

import asyncio
import statistics
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


ROUNDS = 3


async def compare(settings: Settings, tenant_id: uuid.UUID, count: int = 10_000) -> list[list[str]]:
    """Alternate Vigil and the baseline for a few rounds and report the medians, so that
    a burst of load on a shared machine does not land on one side only."""
    owner = make_engine(settings.owner_database_url, pool_size=1)
    engine = make_engine(settings.relay_database_url, pool_size=settings.relay_concurrency + 1)
    relays = [Relay.from_settings(settings, engine) for _ in range(settings.relay_concurrency)]
    names = Names(settings.amqp_prefix)
    ours: list[float] = []
    baseline: list[float] = []
    try:
        await _drain(relays)  # whatever earlier benchmarks left pending
        for _ in range(ROUNDS):
            async with owner.begin() as connection:
                keys = [uuid.uuid4() for _ in range(2_000)]
                await connection.execute(
                    text(FILL), {"tenant": tenant_id, "keys": keys, "count": count}
                )
            started = time.perf_counter()
            published = await _drain(relays)
            ours.append(published / (time.perf_counter() - started))
            baseline.append(
                await raw.publish_rate(
                    settings.amqp_url.get_secret_value(),
                    names.events_exchange,
                    EVENT_RECEIVED,
                    count,
                    settings.relay_batch_size,
                )
            )
    finally:
        for relay in relays:
            await relay.close()
        await engine.dispose()
        await owner.dispose()

    ratios = sorted(mine / theirs for mine, theirs in zip(ours, baseline, strict=True))
    return [
        [
            f"relay, {count:,} messages x {ROUNDS}, {settings.relay_concurrency} claim loops",
            f"{statistics.median(ours):,.0f} msg/s",
            f"{statistics.median(baseline):,.0f} msg/s",
            f"{statistics.median(ratios):.2f}",
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
