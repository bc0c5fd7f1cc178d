"""The whole pipeline: the sustained end-to-end rate, and latency at half of it.

The real processes run (portal, relay, dispatcher and ``VIGIL_BENCH_WORKERS`` scoring
workers, as ``vigil demo`` starts them) and AMLSim transfers are offered through the
GraphQL door at a stepped rate, doubling each step until one falls behind, then halving
the gap between the last step that kept up and the first that did not, twice. A step
holds its rate for ``STEP_SECONDS``; the backlog (events stored but not yet assessed) is
read from the database a third of the way in (what is merely in flight by then is not a
backlog) and at its end. The sustained rate is the highest step whose backlog did not
grow by more than ``GROWTH_SECONDS`` of its own rate in between; after each step the
backlog is left to drain, so steps do not inherit each other's queue. Then the pipeline is driven
at half the sustained rate and the latency from an event's ``received_at`` to its
assessment's ``scored_at`` is read for the events of that phase (p50, p99).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.auth import Role, mint_token
from adapters.database import make_engine
from adapters.settings import Settings
from vigil import amlsim
from vigil.datasource import locate
from vigil.demo import MUTATION, vacuum_queues_without_autovacuum
from vigil.processes import Processes, child_environment, wait_until_ready
from vigil.provisioning import install_default_ruleset

STEP_SECONDS = float(os.environ.get("VIGIL_BENCH_STEP_SECONDS", "15"))
FIRST_RATE = float(os.environ.get("VIGIL_BENCH_FIRST_RATE", "25"))
MAX_RATE = 3200.0
GROWTH_SECONDS = 0.5
REFINEMENTS = 2
DRAIN_SECONDS = 120.0
TICK = 0.2

BACKLOG = text(
    "SELECT (SELECT count(*) FROM events WHERE tenant_id = :t)"
    " - (SELECT count(*) FROM assessments WHERE tenant_id = :t)"
)
LATENCY = text(
    "SELECT count(*) AS n,"
    " percentile_cont(0.5) WITHIN GROUP (ORDER BY a.scored_at - e.received_at) AS p50,"
    " percentile_cont(0.99) WITHIN GROUP (ORDER BY a.scored_at - e.received_at) AS p99"
    " FROM events e JOIN assessments a USING (tenant_id, event_id)"
    " WHERE e.tenant_id = :t AND e.received_at >= :since AND e.received_at < :until"
)


@dataclass(frozen=True, slots=True)
class Step:
    rate: float
    achieved: float
    growth: int

    @property
    def kept_up(self) -> bool:
        return self.growth <= self.rate * GROWTH_SECONDS


async def _backlog(engine: AsyncEngine, tenant_id: uuid.UUID) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(BACKLOG, {"t": tenant_id})).scalar_one())


async def _offer(
    client: httpx.AsyncClient, events: Iterator[dict[str, Any]], rate: float, seconds: float
) -> float:
    """Send events at ``rate`` per second for ``seconds``; the rate actually sent."""
    per_tick = rate * TICK
    owed, sent = 0.0, 0
    started = time.monotonic()
    in_flight: set[asyncio.Task[None]] = set()
    while (elapsed := time.monotonic() - started) < seconds:
        owed = rate * elapsed - sent
        count = int(max(0.0, owed))
        if count:
            batch = list(itertools.islice(events, min(count, 1000)))
            if not batch:
                break
            sent += len(batch)
            task = asyncio.create_task(_post(client, batch))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.sleep(min(TICK, per_tick and TICK))
    await asyncio.gather(*in_flight)
    return sent / max(time.monotonic() - started, 1e-9)


async def _post(client: httpx.AsyncClient, batch: list[dict[str, Any]]) -> None:
    response = await client.post(
        "/graphql", json={"query": MUTATION, "variables": {"input": {"events": batch}}}
    )
    response.raise_for_status()
    if response.json().get("errors"):
        raise RuntimeError(f"the portal refused a batch: {response.json()['errors']}")


async def _drain(engine: AsyncEngine, tenant_id: uuid.UUID) -> None:
    for _ in range(int(DRAIN_SECONDS / 0.5)):
        if await _backlog(engine, tenant_id) <= 0:
            return
        await asyncio.sleep(0.5)


async def _measure(settings: Settings, tenant_id: uuid.UUID, base: str) -> list[list[str]]:
    await install_default_ruleset(settings, tenant_id)
    data = locate(None)
    # Keys of this run only, so that a second run is never answered as duplicates.
    run = uuid.uuid4().hex[:8]
    events = (
        {**event, "idempotencyKey": f"{run}-{event['idempotencyKey']}"}
        for event in itertools.cycle(list(amlsim.transfers(data)))
    )
    token = mint_token(settings, subject="bench", tenant_id=tenant_id, roles=[Role.INGEST])
    engine = make_engine(settings.owner_database_url, pool_size=2)
    # As autovacuum would: the outbox's dead rows otherwise pile up over the steps and
    # slow every claim of the phase the latency is read from, which comes last.
    upkeep = asyncio.create_task(vacuum_queues_without_autovacuum(engine, "the benchmark"))
    steps: list[Step] = []
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as client:

            async def step_at(rate: float) -> Step:
                offering = asyncio.create_task(_offer(client, events, rate, STEP_SECONDS))
                # The events in flight when the step starts are not a backlog: growth is
                # read from a third of the way in, once the pipeline runs at this rate.
                await asyncio.sleep(STEP_SECONDS / 3)
                before = await _backlog(engine, tenant_id)
                achieved = await offering
                step = Step(rate, achieved, await _backlog(engine, tenant_id) - before)
                print(
                    f"  offered {rate:6.0f}/s (sent {achieved:6.0f}/s): backlog"
                    f" {'+' if step.growth >= 0 else ''}{step.growth}"
                    f" -> {'kept up' if step.kept_up else 'fell behind'}",
                    flush=True,
                )
                await _drain(engine, tenant_id)
                return step

            # Doubling until a step falls behind, then halving the gap a few times.
            rate, good, bad = FIRST_RATE, 0.0, 0.0
            while rate <= MAX_RATE:
                steps.append(step := await step_at(rate))
                if not step.kept_up:
                    bad = rate
                    break
                good, rate = rate, rate * 2
            for _ in range(REFINEMENTS if bad else 0):
                steps.append(step := await step_at((good + bad) / 2))
                good, bad = (step.rate, bad) if step.kept_up else (good, step.rate)
            sustained = max((s.achieved for s in steps if s.kept_up), default=0.0)
            half = sustained / 2
            since = datetime.now().astimezone()
            if half > 0:
                await _offer(client, events, half, STEP_SECONDS * 2)
            until = datetime.now().astimezone()
            await _drain(engine, tenant_id)
        async with engine.connect() as connection:
            latency = (
                await connection.execute(LATENCY, {"t": tenant_id, "since": since, "until": until})
            ).one()
    finally:
        upkeep.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await upkeep
        await engine.dispose()
    p50 = latency.p50.total_seconds() * 1000 if latency.p50 else 0.0
    p99 = latency.p99.total_seconds() * 1000 if latency.p99 else 0.0
    return [
        ["pipeline: sustained end-to-end events/s", f"{sustained:,.0f}", "-", "-"],
        [
            f"pipeline: ingest->assessed at {half:,.0f}/s, p50 / p99 ms ({latency.n:,} events)",
            f"{p50:,.0f} / {p99:,.0f}",
            "-",
            "-",
        ],
    ]


def compare(settings: Settings, tenant_id: uuid.UUID, port: int, workers: int) -> list[list[str]]:
    """Start the pipeline's processes, measure, stop them."""
    processes = Processes(
        # No periodic reconciler pass: it is there for recovery, and in this database it
        # would take up the events the other benchmarks stored and never scored.
        child_environment(
            VIGIL_PORTAL_PORT=str(port),
            VIGIL_ENVIRONMENT="test",
            VIGIL_RECONCILE_INTERVAL_SECONDS="0",
        ),
        Path(".cache/bench-logs"),
    )
    try:
        for command in ("relay", "dispatcher", "portal"):
            processes.start(command, name=f"pipeline-{command}")
        for number in range(workers):
            processes.start("worker", name=f"pipeline-worker-{number + 1}")
        wait_until_ready(f"http://127.0.0.1:{port}/health/ready", timeout=120.0)
        return asyncio.run(_measure(settings, tenant_id, f"http://127.0.0.1:{port}"))
    finally:
        processes.stop()
