"""Ingest through the GraphQL mutation (a real ``vigil portal`` process) beside asyncpg
writing the same rows with no Vigil code in the way."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from adapters.auth import Role, mint_token
from adapters.database import plain_url
from adapters.settings import Settings
from bench import raw

MUTATION = (
    "mutation($input: IngestEventsInput!) { ingestEvents(input: $input) "
    "{ acceptedCount rejectedCount } }"
)


def events(count: int, run: str, accounts: int = 20_000) -> list[dict[str, Any]]:
    rng = random.Random(count)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    made = []
    for index in range(count):
        source, target = rng.sample(range(accounts), 2)
        made.append(
            {
                "idempotencyKey": f"bench-{run}-{index}",
                "type": "transaction",
                "occurredAt": (start + timedelta(seconds=index)).isoformat(),
                "data": {
                    "amount": f"{rng.randint(100, 99_999)}.{rng.randint(0, 99):02d}",
                    "currency": "EUR",
                    "originator": {"account": f"BENCH{source:06d}", "country": "NL"},
                    "beneficiary": {"account": f"BENCH{target:06d}", "country": "BE"},
                    "channel": "sepa",
                },
            }
        )
    return made


async def graphql_rate(
    base_url: str, token: str, items: list[dict[str, Any]], batch: int, concurrency: int
) -> float:
    batches = [items[i : i + batch] for i in range(0, len(items), batch)]
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for item in batches:
        queue.put_nowait(item)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {token}"}

    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=60
    ) as client:

        async def worker() -> None:
            while not queue.empty():
                chunk = queue.get_nowait()
                response = await client.post(
                    "/graphql", json={"query": MUTATION, "variables": {"input": {"events": chunk}}}
                )
                body = response.json()
                if body.get("errors") or body["data"]["ingestEvents"]["acceptedCount"] != len(
                    chunk
                ):
                    raise RuntimeError(f"ingest failed: {body}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(items) / (time.perf_counter() - started)


ROUNDS = 3
# (events per request, events per round, requests in flight)
SHAPES = ((1, 1_000, 16), (100, 10_000, 4))
MAX_IN_FLIGHT = max(concurrency for _, _, concurrency in SHAPES)


async def compare(
    settings: Settings, tenant_id: uuid.UUID, base_url: str, workers: int
) -> list[list[str]]:
    """Alternate the portal and the baseline for a few rounds of each shape and report
    the medians, so that a burst of load does not land on one side only."""
    token = mint_token(settings, subject="bench", tenant_id=tenant_id, roles=[Role.INGEST])
    # The baseline writes audit records and moves the chain head itself, which only the
    # owner role may do now (the application role goes through vigil_append_audit). The
    # owner also skips row-level security, so the baseline is, if anything, faster.
    dsn = plain_url(settings.owner_database_url)
    rows = []
    for batch, count, concurrency in SHAPES:
        ours: list[float] = []
        baseline: list[float] = []
        for _ in range(ROUNDS):
            run = uuid.uuid4().hex[:8]
            ours.append(
                await graphql_rate(base_url, token, events(count, f"g{run}"), batch, concurrency)
            )
            baseline.append(
                await raw.ingest_rate(dsn, tenant_id, events(count, f"r{run}"), batch, concurrency)
            )
        ratios = [mine / theirs for mine, theirs in zip(ours, baseline, strict=True)]
        rows.append(
            [
                f"ingest, batches of {batch}, {concurrency} in flight (portal: {workers} "
                f"workers; raw: {concurrency} connections), x {ROUNDS}",
                f"{statistics.median(ours):,.0f} events/s",
                f"{statistics.median(baseline):,.0f} events/s",
                f"{statistics.median(ratios):.2f}",
            ]
        )
    return rows
