"""The ``vigil portal`` process, started and stopped as an operator would."""

from __future__ import annotations

import asyncio
import socket
import sys
import uuid
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
