"""Raw baselines: asyncpg writing the rows ingest writes, and aio-pika publishing with
confirms, with none of Vigil's code in the way."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg

from domain.ids import new_id

_UPSERT = """
INSERT INTO subjects (tenant_id, subject_id, kind, external_ref, attributes)
SELECT $1, s.id, 'account', s.ref, s.attrs::jsonb
FROM unnest($2::uuid[], $3::text[], $4::text[]) AS s(id, ref, attrs)
ON CONFLICT (tenant_id, kind, external_ref)
DO UPDATE SET attributes = subjects.attributes || excluded.attributes, updated_at = now()
RETURNING subject_id, external_ref
"""
_EVENT = """
INSERT INTO events (tenant_id, event_id, idempotency_key, event_type, occurred_at, received_at,
    subject_id, counterparty_id, amount, currency, payload, payload_hash, door, actor)
SELECT $1, e.id, e.key, 'transaction', e.at, now(), e.subject, e.counterparty, e.amount, 'EUR',
    e.payload::jsonb, e.hash, 'raw', 'bench'
FROM unnest($2::uuid[], $3::text[], $4::timestamptz[], $5::uuid[], $6::uuid[], $7::numeric[],
    $8::text[], $9::bytea[]) AS e(id, key, at, subject, counterparty, amount, payload, hash)
ON CONFLICT DO NOTHING
"""
_OUTBOX = """
INSERT INTO outbox (tenant_id, message_id, ordering_key, message_type, envelope)
SELECT $1, o.id, o.key, 'event.received', o.envelope::jsonb
FROM unnest($2::uuid[], $3::uuid[], $4::text[]) AS o(id, key, envelope)
"""
_HEAD = "SELECT last_seq, last_hash FROM audit_heads WHERE tenant_id = $1 FOR UPDATE"
_AUDIT = """
INSERT INTO audit_records (tenant_id, seq, record_id, recorded_at, actor, action, entity_type,
    entity_id, details, prev_hash, hash)
SELECT $1, a.seq, a.id, now(), 'bench', 'event.accepted', 'event', a.entity, '{}'::jsonb,
    a.prev, a.hash
FROM unnest($2::bigint[], $3::uuid[], $4::text[], $5::bytea[], $6::bytea[])
    AS a(seq, id, entity, prev, hash)
"""
_MOVE_HEAD = "UPDATE audit_heads SET last_seq = $2, last_hash = $3 WHERE tenant_id = $1"


async def write_batch(
    connection: asyncpg.Connection, tenant_id: uuid.UUID, events: list[dict[str, Any]]
) -> None:
    """One transaction: the subjects, events, outbox rows and chained audit records."""
    async with connection.transaction():
        await connection.execute("SELECT set_config('vigil.tenant_id', $1, true)", str(tenant_id))
        refs = sorted(
            {e["data"][p]["account"] for e in events for p in ("originator", "beneficiary")}
        )
        rows = await connection.fetch(
            _UPSERT, tenant_id, [new_id() for _ in refs], refs, ['{"country": "NL"}'] * len(refs)
        )
        ids = {row["external_ref"]: row["subject_id"] for row in rows}
        event_ids = [new_id() for _ in events]
        payloads = [json.dumps(e, sort_keys=True) for e in events]
        await connection.execute(
            _EVENT,
            tenant_id,
            event_ids,
            [e["idempotencyKey"] for e in events],
            [datetime.fromisoformat(e["occurredAt"]) for e in events],
            [ids[e["data"]["originator"]["account"]] for e in events],
            [ids[e["data"]["beneficiary"]["account"]] for e in events],
            [e["data"]["amount"] for e in events],
            payloads,
            [hashlib.sha256(p.encode()).digest() for p in payloads],
        )
        await connection.execute(
            _OUTBOX,
            tenant_id,
            [new_id() for _ in events],
            [ids[e["data"]["originator"]["account"]] for e in events],
            [json.dumps({"id": str(i), "data": {"eventId": str(i)}}) for i in event_ids],
        )
        head = await connection.fetchrow(_HEAD, tenant_id)
        seq, prev = head["last_seq"], bytes(head["last_hash"])
        seqs, prevs, hashes = [], [], []
        for event_id in event_ids:
            seq += 1
            digest = hashlib.sha256(prev + str(event_id).encode()).digest()
            seqs.append(seq)
            prevs.append(prev)
            hashes.append(digest)
            prev = digest
        await connection.execute(
            _AUDIT,
            tenant_id,
            seqs,
            [new_id() for _ in events],
            [str(i) for i in event_ids],
            prevs,
            hashes,
        )
        await connection.execute(_MOVE_HEAD, tenant_id, seq, prev)


async def ingest_rate(
    dsn: str, tenant_id: uuid.UUID, events: list[dict[str, Any]], batch: int, concurrency: int
) -> float:
    """Events per second written by ``concurrency`` connections, ``batch`` per transaction."""
    pool = await asyncpg.create_pool(dsn, min_size=concurrency, max_size=concurrency)
    batches = [events[i : i + batch] for i in range(0, len(events), batch)]
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for item in batches:
        queue.put_nowait(item)

    async def worker() -> None:
        async with pool.acquire() as connection:
            while not queue.empty():
                await write_batch(connection, tenant_id, queue.get_nowait())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await pool.close()
    return len(events) / elapsed


async def publish_rate(
    url: str, exchange_name: str, routing_key: str, count: int, window: int
) -> float:
    """Confirmed, persistent, mandatory publishes per second, ``window`` in flight at once."""
    connection = await aio_pika.connect_robust(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(exchange_name)
        body = json.dumps({"specversion": "1.0", "id": "x", "data": {"eventId": "y"}}).encode()
        started = time.perf_counter()
        for start in range(0, count, window):
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            body,
                            message_id=str(new_id()),
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            content_type="application/cloudevents+json",
                            timestamp=datetime.now(UTC),
                        ),
                        routing_key=routing_key,
                        mandatory=True,
                    )
                    for _ in range(min(window, count - start))
                )
            )
        return count / (time.perf_counter() - started)
