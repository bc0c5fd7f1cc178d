"""The ``vigil portal`` process, started and stopped as an operator would."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.settings import Settings
from tests.e2e.conftest import StartVigil, VigilProcess

pytestmark = pytest.mark.e2e

STARTUP_SECONDS = 30.0

INGEST = """
mutation($input: IngestEventsInput!) {
  ingestEvents(input: $input) {
    acceptedCount
    results { ... on EventAccepted { eventId duplicate } }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def _vigil_token(tenant: uuid.UUID) -> str:
    """A bearer token, minted the way an operator mints one."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vigil",
        "token",
        "--tenant",
        str(tenant),
        "--roles",
        "ingest",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, err.decode()
    return out.decode().strip().splitlines()[-1]


async def _wait_until_live(portal: VigilProcess, client: httpx.AsyncClient) -> None:
    deadline = asyncio.get_running_loop().time() + STARTUP_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        assert portal.running, portal.output()
        try:
            if (await client.get("/health/live")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"the portal did not come up: {portal.output()}")


async def test_the_portal_process_ingests_and_stops_cleanly_on_sigterm(
    start_vigil: StartVigil,
    tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    bearer = await _vigil_token(tenant)
    port = _free_port()
    portal = await start_vigil("portal", env={"VIGIL_PORTAL_PORT": str(port)})

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
        await _wait_until_live(portal, client)
        response = await client.post(
            "/graphql",
            json={"query": INGEST, "variables": {"input": {"events": [transaction_event()]}}},
            headers={"Authorization": f"Bearer {bearer}", "X-Correlation-ID": "e2e-1"},
        )
    returncode = await portal.stop()

    assert response.status_code == 200, portal.output()
    assert response.headers["X-Correlation-ID"] == "e2e-1"
    payload = response.json()["data"]["ingestEvents"]
    assert payload["acceptedCount"] == 1, response.text
    async with owner_engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT * FROM events WHERE tenant_id = :t AND event_id = :e"),
                {"t": tenant, "e": uuid.UUID(payload["results"][0]["eventId"])},
            )
        ).one()
    assert (row.door, row.actor, row.correlation_id) == ("graphql", "local-user", "e2e-1")

    assert returncode == 0, portal.output()
    assert any(
        line.get("correlation_id") == "e2e-1" and line.get("tenant_id") == str(tenant)
        for line in portal.logged("request answered")
    ), portal.output()
    assert bearer not in portal.log_path.read_text()


async def test_the_portal_refuses_to_start_in_production_with_the_default_secret(
    start_vigil: StartVigil,
) -> None:
    default_secret = Settings.model_fields["jwt_secret"].get_default().get_secret_value()
    production = {
        "VIGIL_ENVIRONMENT": "production",
        "VIGIL_JWT_SECRET": default_secret,
        "VIGIL_JWT_ISSUER": "https://idp.bank.example",
        "VIGIL_JWT_AUDIENCE": "vigil-api",
        "VIGIL_PORTAL_PORT": "1",
    }

    portal = await start_vigil("portal", env=production)

    assert await portal.wait() == 1
    assert portal.logged("refusing to start"), portal.output()
    assert "VIGIL_JWT_SECRET" in portal.output()


def _workers(pid: int) -> set[int]:
    """The worker processes whose parent is ``pid`` (Linux /proc): multiprocessing's
    spawned children, not its resource tracker."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
            if int(fields[1]) == pid and b"spawn_main" in command:
                found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _ingested(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("vigil_events_ingested_total{") and 'outcome="accepted"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no accepted counter in {metrics[:2000]}")


async def test_several_workers_serve_count_together_and_stop_cleanly(
    start_vigil: StartVigil, tenant: uuid.UUID, owner_engine: AsyncEngine, transaction_event: Any
) -> None:
    bearer = await _vigil_token(tenant)
    port = _free_port()
    portal = await start_vigil("portal", "--workers", "2", env={"VIGIL_PORTAL_PORT": str(port)})
    headers = {"Authorization": f"Bearer {bearer}"}

    def batch(size: int) -> dict[str, Any]:
        events = [transaction_event() for _ in range(size)]
        return {"query": INGEST, "variables": {"input": {"events": events}}}

    workers: set[int] = set()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client:
            await _wait_until_live(portal, client)
            workers = _workers(portal.pid)
            # A connection of its own per request, so that both workers get some.
            for _ in range(10):
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as single:
                    answered = await single.post("/graphql", json=batch(1), headers=headers)
                    assert answered.json()["data"]["ingestEvents"]["acceptedCount"] == 1
            # Whichever worker answers the scrape, it counts what every worker did.
            for _ in range(4):
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as single:
                    assert _ingested((await single.get("/metrics")).text) == 10

            # Requests in flight when the stop comes are answered before the workers go.
            in_flight = [
                asyncio.create_task(client.post("/graphql", json=batch(200), headers=headers))
                for _ in range(6)
            ]
            await asyncio.sleep(0.2)
            portal.send(signal.SIGTERM)
            responses = await asyncio.gather(*in_flight)
            returncode = await portal.wait()
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    assert returncode == 0, portal.output()
    answers = [r.json() for r in responses]
    assert [a["data"]["ingestEvents"]["acceptedCount"] for a in answers] == [200] * 6, answers
    assert len(workers) == 2, workers
    assert not any(_alive(pid) for pid in workers), portal.output()
    async with owner_engine.connect() as connection:
        stored = (
            await connection.execute(
                text("SELECT count(*) FROM events WHERE tenant_id = :t"), {"t": tenant}
            )
        ).scalar_one()
    assert stored == 10 + 6 * 200


def _listening_sockets(port: int) -> set[int]:
    """The inodes of the sockets listening on ``port`` (Linux /proc/net/tcp)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    found.add(int(fields[9]))
    return found


def _sockets_of(pid: int) -> set[int]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                found.add(int(target[len("socket:[") : -1]))
    return found


async def test_each_worker_accepts_on_a_listening_socket_of_its_own(
    start_vigil: StartVigil,
) -> None:
    """One listening socket shared by the workers let the first to wake accept a whole
    burst of connections, and a client's pool of keep-alive connections then kept one
    core busy and the other idle; with a socket per worker the kernel spreads them."""
    port = _free_port()
    portal = await start_vigil("portal", "--workers", "2", env={"VIGIL_PORTAL_PORT": str(port)})
    workers: set[int] = set()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
            await _wait_until_live(portal, client)
        # The first worker may answer before the second has started.
        deadline = asyncio.get_running_loop().time() + STARTUP_SECONDS
        while len(_listening_sockets(port)) < 2:
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
        workers = _workers(portal.pid)
        listening = _listening_sockets(port)
        held = {pid: _sockets_of(pid) & listening for pid in workers}
    finally:
        portal.send(signal.SIGTERM)
        await portal.wait()

    assert len(workers) == 2, workers
    assert len(listening) == 2, listening
    assert all(len(sockets) == 1 for sockets in held.values()), held
    assert set.union(*held.values()) == listening, held


async def test_a_worker_whose_supervisor_is_killed_stops(
    start_vigil: StartVigil,
) -> None:
    port = _free_port()
    portal = await start_vigil("portal", "--workers", "2", env={"VIGIL_PORTAL_PORT": str(port)})
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
        await _wait_until_live(portal, client)
    workers = _workers(portal.pid)
    try:
        portal.send(signal.SIGKILL)
        await portal.wait()
        deadline = asyncio.get_running_loop().time() + STARTUP_SECONDS
        while any(_alive(pid) for pid in workers):
            assert asyncio.get_running_loop().time() < deadline, "a worker outlived its supervisor"
            await asyncio.sleep(0.2)
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
