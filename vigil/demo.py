"""``vigil demo``: replay a labelled bank through Vigil, as an operator would run it.

It finds the AMLSim sample bank (see :mod:`vigil.datasource`), creates a tenant of its
own for this run with the default ruleset, starts the relay, the inbound consumer, the
dispatcher, the scoring workers and the portal, and replays the transfers through both
doors: a few as CloudEvents on the inbound queue, the rest as GraphQL batches, one batch
twice to show that it is answered as duplicates. A progress bar on stderr follows the
events stored and assessed. When every stored event is assessed it prints the report of
:mod:`vigil.report`, read from the database: the end-to-end rate, the latency from
ingest to assessment, assessments, alerts and cases by band and typology, detection
quality per account against the labels beside the naive floor, each process's memory,
and the top case's explanation as a regulator reads it (:mod:`vigil.casefile`).

With ``--keep-running`` the processes stay up and it prints the GraphiQL address and an
analyst token.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.audit_trail import verify
from adapters.auth import Role, mint_token
from adapters.broker import Names, declare_topology
from adapters.database import make_engine
from adapters.settings import Settings, get_settings
from vigil import amlsim, casefile
from vigil.datasource import DataUnavailable, locate
from vigil.processes import Processes, child_environment, wait_until_ready
from vigil.provisioning import provision_tenant
from vigil.quality import measure, naive_flags
from vigil.report import PROGRESS, STORED, Memory, Report, read_report

MUTATION = """
mutation Ingest($input: IngestEventsInput!) {
  ingestEvents(input: $input) {
    results {
      __typename
      ... on EventAccepted { index eventId duplicate }
      ... on EventRejected { index code field message }
    }
  }
}
"""
BY_QUEUE = 10
# Memory is compared after this many transfers and at the end, to show it is bounded.
EARLY_MEMORY_AT = 10_000
# A score job lost with Redis's data or a killed worker is enqueued again by the
# reconciler after its deadline; the demo shortens both (unless the operator set them)
# so that a replay recovers within its own run, and waits longer than that before it
# gives up on an event.
#
# The dispatcher hands a worker batches of up to VIGIL_DISPATCH_BATCH_SIZE events, each
# scored in one transaction; one tenant's transactions commit one after another (each
# moves its audit-chain head), so a few jobs at once per worker keep it busy.
CHILD_DEFAULTS = {
    "VIGIL_RECONCILE_DEADLINE_SECONDS": "60",
    "VIGIL_RECONCILE_INTERVAL_SECONDS": "15",
    "VIGIL_WORKER_CONCURRENCY": "4",
}
# A batch the portal could not take for a passing reason (the database out of
# connections, say) is sent again: its keys make a second delivery harmless.
SEND_TRIES = 6
STALL_SECONDS = 180.0
POLL_SECONDS = 0.5
QUEUE_VACUUM_SECONDS = 15.0
# The monitor waits at least this many times as long as its last look took, so that
# counting a table grown large never takes more than a small share of a core from the
# processes being measured.
MONITOR_SPACING = 20
READY_SECONDS = 120.0


@dataclass(slots=True)
class Sent:
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    codes: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Progress:
    """What the monitor saw last, and each process's memory along the way."""

    stored: int = 0
    assessed: int = 0
    failed: int = 0
    # Set once every transfer has been sent: how many should be stored. The transfers
    # sent through the inbound queue are stored when its consumer gets to them, maybe
    # after the last GraphQL batch was answered, so the stored count is final only once
    # it reaches this number.
    expected: int | None = None
    stored_final: bool = False
    early: dict[str, float] = field(default_factory=dict)
    last: dict[str, tuple[float, float]] = field(default_factory=dict)


def run(args: argparse.Namespace) -> int:
    # Line by line even into a pipe or a file: a kept-running demo's address and token
    # must reach whoever reads its output while it runs, not when it exits.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    settings = get_settings()
    try:
        data = locate(args.data, cache=args.cache)
    except DataUnavailable as error:
        raise SystemExit(f"no sample bank: {error}") from None
    events = list(amlsim.transfers(data, args.limit))
    slug = f"demo-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    tenant_id = asyncio.run(provision_tenant(settings, slug, "Demo bank"))
    base = f"http://{settings.portal_host}:{settings.portal_port}"
    print(f"replaying {len(events):,} transfers from {data} as tenant {slug} ({tenant_id})")

    environment = child_environment()
    for name, value in CHILD_DEFAULTS.items():
        environment.setdefault(name, value)
    processes = Processes(environment, Path(".cache/demo-logs"))
    # A stop by SIGTERM (a timeout, a supervisor) or SIGINT stops the children too; SIGINT
    # is set here as well because a shell starting the demo in the background ignores it.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        for command in ("relay", "inbound", "dispatcher", "portal"):
            processes.start(command)
        for number in range(args.workers):
            # Each worker serves its metrics on a port of its own (0 stays "none").
            port = settings.worker_metrics_port and settings.worker_metrics_port + number
            name = f"worker-{number + 1}" if args.workers > 1 else "worker"
            processes.start("worker", name=name, VIGIL_WORKER_METRICS_PORT=str(port))
        # Generous: on a busy machine the portal and its probes start slowly.
        wait_until_ready(f"{base}/health/ready", timeout=READY_SECONDS)
        report = asyncio.run(_replay(settings, args, base, tenant_id, events, data, processes))
        for line in report.lines():
            print(line)
        if args.report_json:
            args.report_json.write_text(json.dumps(report.as_json(), indent=2, default=str))
        complete = report.exactly_once and report.events == report.sent - report.refused
        if args.keep_running:
            analyst = mint_token(
                settings, subject="demo-analyst", tenant_id=tenant_id, roles=[Role.ANALYST]
            )
            print(f"GraphiQL: {base}/graphql")
            print(f"analyst token (8 hours): {analyst}")
            print("processes left running; logs in .cache/demo-logs; Ctrl-C to stop")
            while True:
                time.sleep(3600)
        return 0 if complete else 1
    except KeyboardInterrupt:
        return 0
    finally:
        processes.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


async def _replay(
    settings: Settings,
    args: argparse.Namespace,
    base: str,
    tenant_id: uuid.UUID,
    events: list[dict[str, Any]],
    data: Path,
    processes: Processes,
) -> Report:
    engine = make_engine(settings.owner_database_url, pool_size=2)
    ingest = mint_token(
        settings, subject="demo-integration", tenant_id=tenant_id, roles=[Role.INGEST]
    )
    progress = Progress()
    started = time.monotonic()
    monitor = asyncio.create_task(_monitor(engine, tenant_id, len(events), progress, processes))
    upkeep = asyncio.create_task(vacuum_queues_without_autovacuum(engine))
    try:
        await _send_queue(settings, tenant_id, events[:BY_QUEUE])
        sent = await _send_graphql(base, ingest, events[BY_QUEUE:], args.batch, args.senders)
        again = await _send_graphql(
            base, ingest, events[BY_QUEUE : BY_QUEUE + args.batch], args.batch, 1
        )
        expected = len(events) - sent.rejected
        progress.expected = expected
        await _wait_for_assessments(progress, expected, monitor)
        wall = time.monotonic() - started
    finally:
        for task in (monitor, upkeep):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    _bar(progress, len(events), wall, final=True)
    await _analyze(engine)

    try:
        regulator = mint_token(
            settings, subject="demo-regulator", tenant_id=tenant_id, roles=[Role.REGULATOR]
        )
        async with engine.connect() as connection:
            report = await read_report(
                connection,
                tenant_id,
                sent=len(events),
                refused=sent.rejected,
                duplicates=again.duplicate,
                wall_seconds=wall,
            )
            labelled = amlsim.laundering_accounts(data)
            universe = {account for event in events for account in amlsim.parties(event)}
            report.quality = measure(report.flagged, labelled, universe)
            report.floor = measure(
                naive_flags(amlsim.parties(event) for event in events), labelled, universe
            )
            report.readme_floor = amlsim.README_FLOOR
            report.memory = _memory(progress, processes)
            chained = await verify(connection, tenant_id)
            report.top_case = [f"audit chain verified: {chained:,} records"]
            if report.top_case_id is not None:
                headers = {"Authorization": f"Bearer {regulator}"}
                async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
                    case, source = await casefile.fetch_case(
                        client, connection, tenant_id, report.top_case_id
                    )
                report.top_case += casefile.render(case, source)
    finally:
        await engine.dispose()
    if sent.codes:
        print(f"refused at the door: {sent.codes}", file=sys.stderr)
    return report


async def _send_graphql(
    base: str, token: str, events: Sequence[dict[str, Any]], batch: int, senders: int
) -> Sent:
    """Send ``events`` in batches, ``senders`` requests at a time, in file order per
    sender (a sender takes the next batch when its last one is answered)."""
    sent = Sent()
    batches = iter(range(0, len(events), batch))
    headers = {"Authorization": f"Bearer {token}"}

    async def sender(client: httpx.AsyncClient) -> None:
        for start in batches:
            body = await _post_batch(client, list(events[start : start + batch]))
            for result in body["data"]["ingestEvents"]["results"]:
                if result["__typename"] == "EventRejected":
                    sent.rejected += 1
                    sent.codes[result["code"]] = sent.codes.get(result["code"], 0) + 1
                elif result["duplicate"]:
                    sent.duplicate += 1
                else:
                    sent.accepted += 1

    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120.0) as client:
        await asyncio.gather(*(sender(client) for _ in range(senders)))
    return sent


async def _post_batch(client: httpx.AsyncClient, chunk: list[dict[str, Any]]) -> Any:
    """The portal's answer to one batch, sent again after a transient failure."""
    payload = {"query": MUTATION, "variables": {"input": {"events": chunk}}}
    for attempt in range(1, SEND_TRIES + 1):
        try:
            response = await client.post("/graphql", json=payload)
            if response.status_code < 500:
                response.raise_for_status()
                body = response.json()
                codes = {e.get("extensions", {}).get("code") for e in body.get("errors") or []}
                if not codes:
                    return body
                if codes - {"INTERNAL", "UNAVAILABLE"} or attempt == SEND_TRIES:
                    raise RuntimeError(f"the portal refused a batch: {body['errors']}")
            elif attempt == SEND_TRIES:
                response.raise_for_status()
        except httpx.TransportError:
            if attempt == SEND_TRIES:
                raise
        await asyncio.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


async def _send_queue(
    settings: Settings, tenant_id: uuid.UUID, events: list[dict[str, Any]]
) -> None:
    names = Names(settings.amqp_prefix)
    connection = await aio_pika.connect_robust(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await declare_topology(channel, names)
        for event in events:
            envelope = {
                "specversion": "1.0",
                "id": event["idempotencyKey"],
                "source": "urn:demo:core-banking",
                "type": event["type"],
                "time": event["occurredAt"],
                "datacontenttype": "application/json",
                "tenantid": str(tenant_id),
                "data": event["data"],
            }
            await channel.default_exchange.publish(
                aio_pika.Message(
                    json.dumps(envelope).encode(),
                    content_type="application/cloudevents+json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=names.inbound,
            )


async def vacuum_queues_without_autovacuum(engine: AsyncEngine, who: str = "the demo") -> None:
    """On a server with autovacuum off, vacuum the queue tables now and then, as
    autovacuum would (migration 0011 asks it to, often): every published outbox row
    leaves a dead row and dead index entries behind, and a relay's claim, which reads
    the pending rows from the oldest, slowed from under a millisecond to ten as they
    piled up over a few replays."""
    async with engine.connect() as connection:
        if (await connection.scalar(text("SHOW autovacuum"))) != "off":
            return
    print(
        f"autovacuum is off on this server: {who} vacuums the outbox itself"
        f" every {QUEUE_VACUUM_SECONDS:.0f} s",
        file=sys.stderr,
    )
    while True:
        async with engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("VACUUM (ANALYZE) outbox, audit_pending"))
        await asyncio.sleep(QUEUE_VACUUM_SECONDS)


async def _analyze(engine: AsyncEngine) -> None:
    """Statistics for the tenant's new rows before the report reads them whole: a plan
    made from statistics taken before the replay expected a few rows and joined
    20,000 events to 20,000 assessments row by row (53 s)."""
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("ANALYZE events, assessments, alerts, cases, subjects"))


async def _monitor(
    engine: AsyncEngine,
    tenant_id: uuid.UUID,
    total: int,
    progress: Progress,
    processes: Processes,
) -> None:
    started = time.monotonic()
    while True:
        looked = time.monotonic()
        async with engine.connect() as connection:
            if not progress.stored_final:
                progress.stored = int(await connection.scalar(STORED, {"t": tenant_id}) or 0)
                expected = progress.expected
                progress.stored_final = expected is not None and progress.stored >= expected
            row = (await connection.execute(PROGRESS, {"t": tenant_id})).one()
        progress.assessed, progress.failed = row.assessed, row.failed
        took = time.monotonic() - looked
        progress.last = processes.memory() or progress.last
        if not progress.early and total > EARLY_MEMORY_AT <= progress.assessed:
            progress.early = {name: rss for name, (_, rss) in progress.last.items()}
        if stopped := processes.exited():
            raise RuntimeError(f"a process stopped during the replay: {', '.join(stopped)}")
        _bar(progress, total, time.monotonic() - started)
        await asyncio.sleep(max(POLL_SECONDS, MONITOR_SPACING * took))


async def _wait_for_assessments(
    progress: Progress, expected: int, monitor: asyncio.Task[None]
) -> None:
    last_change, seen = time.monotonic(), -1
    while progress.stored < expected or progress.assessed + progress.failed < progress.stored:
        if monitor.done():
            monitor.result()  # raises what stopped it
        if progress.assessed != seen:
            last_change, seen = time.monotonic(), progress.assessed
        elif time.monotonic() - last_change > STALL_SECONDS:
            print(f"\nnothing assessed for {STALL_SECONDS:.0f} s: reporting", file=sys.stderr)
            return
        await asyncio.sleep(POLL_SECONDS)
    # One more look after the last assessment, so the memory at the end is taken late.
    await asyncio.sleep(POLL_SECONDS * 2)


def _bar(progress: Progress, total: int, elapsed: float, *, final: bool = False) -> None:
    width = 30
    done = min(width, width * progress.assessed // max(total, 1))
    rate = progress.assessed / elapsed if elapsed > 0 else 0.0
    sys.stderr.write(
        f"\r[{'#' * done}{'.' * (width - done)}] stored {progress.stored:,}/{total:,}"
        f"  assessed {progress.assessed:,}  failed {progress.failed:,}"
        f"  {rate:,.0f}/s  {timedelta(seconds=int(elapsed))}"
    )
    if final:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _memory(progress: Progress, processes: Processes) -> dict[str, Memory]:
    now = processes.memory() or progress.last
    return {
        name: Memory(peak=peak, early=progress.early.get(name), end=rss)
        for name, (peak, rss) in now.items()
    }
