"""``make bench``: Vigil beside raw baselines, run in the same script on the same machine.

It uses a database of its own (``vigil_bench``, or ``VIGIL_BENCH_DATABASE``) and a
broker prefix of its own (``vigilbench``, or ``VIGIL_BENCH_PREFIX``), so it neither reads
nor disturbs a running Vigil. Results are ratios: ours / raw. ``python -m bench read``
runs only the parts named (ingest, read, relay, scoring).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid

os.environ.setdefault("VIGIL_BENCH_DATABASE", "vigil_bench")
_DB = os.environ["VIGIL_BENCH_DATABASE"]
os.environ["VIGIL_DATABASE_URL"] = f"postgresql://vigil_app@127.0.0.1:5432/{_DB}"
os.environ["VIGIL_RELAY_DATABASE_URL"] = f"postgresql://vigil_relay@127.0.0.1:5432/{_DB}"
os.environ["VIGIL_OWNER_DATABASE_URL"] = f"postgresql://vigil_owner@127.0.0.1:5432/{_DB}"
os.environ["VIGIL_AMQP_PREFIX"] = os.environ.get("VIGIL_BENCH_PREFIX", "vigilbench")
os.environ.setdefault("VIGIL_LOG_LEVEL", "WARNING")

from pathlib import Path  # noqa: E402

from adapters.broker import Names, declare_topology, delete_topology  # noqa: E402
from adapters.database import make_engine  # noqa: E402
from adapters.settings import get_settings  # noqa: E402
from adapters.tenants import create_tenant  # noqa: E402
from bench import ingest, read, relay, scoring  # noqa: E402
from vigil.processes import Processes, child_environment, wait_until_ready  # noqa: E402

HEADER = ["what", "Vigil", "raw baseline", "ratio"]
# The portal runs as it would in production on this machine: one worker per core. The
# baseline gets as many connections as the portal has requests in flight.
PORTAL_WORKERS = int(os.environ.get("VIGIL_PORTAL_WORKERS", str(os.cpu_count() or 1)))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _print(rows: list[list[str]]) -> None:
    table = [HEADER, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    for index, row in enumerate(table):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


async def _setup() -> uuid.UUID:
    import aio_pika

    settings = get_settings()
    owner = make_engine(settings.owner_database_url, pool_size=1)
    try:
        tenant_id = await create_tenant(owner, f"bench-{uuid.uuid4().hex[:8]}", "Benchmark bank")
    finally:
        await owner.dispose()
    connection = await aio_pika.connect_robust(settings.amqp_url.get_secret_value())
    async with connection, connection.channel() as channel:
        await declare_topology(channel, Names(settings.amqp_prefix))
    return tenant_id


async def _teardown() -> None:
    import aio_pika

    settings = get_settings()
    connection = await aio_pika.connect_robust(settings.amqp_url.get_secret_value())
    async with connection, connection.channel() as channel:
        await delete_topology(channel, Names(settings.amqp_prefix))


PARTS = ("ingest", "read", "relay", "scoring")


def main(argv: list[str] | None = None) -> int:
    """Run every part, or only those named: ``python -m bench ingest relay``."""
    from vigil.cli import main as vigil

    parts = argv if argv else list(PARTS)
    unknown = set(parts) - set(PARTS)
    if unknown:
        print(f"unknown part(s): {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
        return 2

    vigil(["migrate"])
    settings = get_settings()
    tenant_id = asyncio.run(_setup())
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    processes = Processes(
        child_environment(
            VIGIL_PORTAL_PORT=str(port),
            VIGIL_ENVIRONMENT="test",
            VIGIL_PORTAL_WORKERS=str(PORTAL_WORKERS),
            # Enough idle connections for the most requests in flight, spread over the
            # workers; the database server is shared, and the baseline opens its own.
            VIGIL_DATABASE_POOL_SIZE=str(
                -(-max(ingest.MAX_IN_FLIGHT, read.CLIENTS) // PORTAL_WORKERS)
            ),
            # The benchmark is one tenant sending as fast as it can: no rate limit.
            VIGIL_RATE_LIMIT_REQUESTS="0",
        ),
        Path(".cache/bench-logs"),
    )
    rows: list[list[str]] = []

    def add(new: list[list[str]]) -> None:
        # Shown as soon as measured, so that a later part failing loses nothing.
        for row in new:
            print(" | ".join(row), flush=True)
        rows.extend(new)

    try:
        if "ingest" in parts or "read" in parts:
            processes.start("portal")
            wait_until_ready(f"{base_url}/health/ready")
        if "ingest" in parts:
            add(asyncio.run(ingest.compare(settings, tenant_id, base_url, PORTAL_WORKERS)))
        if "read" in parts:
            add(asyncio.run(read.compare(settings, base_url)))
        processes.stop()
        if "relay" in parts:
            add(asyncio.run(relay.compare(settings, tenant_id)))
        if "scoring" in parts:
            add(asyncio.run(scoring.compare(settings, tenant_id)))
    finally:
        processes.stop()
        asyncio.run(_teardown())
    _print(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
