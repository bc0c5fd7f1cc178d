"""Live review queues across portal replicas: two ``vigil portal`` processes on two
ports, with the relay, the dispatcher and a scoring worker running. A subscriber on one
portal receives the case opened by an event ingested through the other, and picks up
on the other replica, with its cursor, what it missed while away."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from adapters.auth import Role
from adapters.settings import Settings
from domain.ports import UnitOfWorkFactory
from tests.e2e.conftest import StartVigil, VigilProcess
from tests.e2e.test_scoring_processes import process_env
from tests.integration.live_support import free_port, live_client
from tests.integration.portal_support import INGEST, token
from tests.integration.scoring_support import (
    activate_default_ruleset,
    alerting,
    scoring_settings,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("quiet_outbox")]

CONSUMING = "consuming case events"


async def start_portal(start_vigil: StartVigil, env: dict[str, str]) -> tuple[VigilProcess, int]:
    port = free_port()
    portal = await start_vigil(
        "portal", env={**env, "VIGIL_PORTAL_PORT": str(port)}, ready=CONSUMING
    )
    return portal, port


async def ingest_through(port: int, bearer: str, event: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
        response = await client.post(
            "/graphql",
            json={"query": INGEST, "variables": {"input": {"events": [event]}}},
            headers={"Authorization": f"Bearer {bearer}"},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    assert body["data"]["ingestEvents"]["acceptedCount"] == 1, body


async def test_a_subscriber_on_one_portal_receives_a_case_ingested_through_another(
    start_vigil: StartVigil,
    settings: Settings,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    transaction_event: Any,
) -> None:
    env = process_env(scoring_settings(settings))
    # The periodic look would find the case by itself: only the message path may.
    env["VIGIL_LIVE_POLL_SECONDS"] = "3600"
    await activate_default_ruleset(uow_factory, tenant)
    first, first_port = await start_portal(start_vigil, env)
    second, second_port = await start_portal(start_vigil, env)
    await start_vigil("relay", env=env, ready="broker connected")
    await start_vigil("dispatcher", env=env, ready="consuming the dispatch queue")
    await start_vigil("worker", env=env, ready="scoring worker ready")

    analyst = token(settings, tenant, Role.ANALYST, subject="analyst-1")
    ingest = token(settings, tenant, Role.INGEST)
    async with live_client(f"ws://127.0.0.1:{first_port}/graphql", analyst) as client:
        await client.subscribe("q")
        await ingest_through(second_port, ingest, alerting(transaction_event, originator="ACC-1"))
        opened = await client.item("q", seconds=30)
        # A replica stopping closes its subscribers' connections ("service restart"),
        # and they come back on another replica with their cursors.
        assert await first.stop() == 0, first.output()
        assert await client.closed_with() == 1012
    assert opened["type"] == "case.opened"
    assert opened["status"] == "OPEN"

    # Away from the queue, a second case is opened; back on the other replica with the
    # cursor, the client is sent it once (replayed, or live if scoring is still at it).
    await ingest_through(second_port, ingest, alerting(transaction_event, originator="ACC-2"))
    async with live_client(f"ws://127.0.0.1:{second_port}/graphql", analyst) as client:
        await client.subscribe("again", after=opened["cursor"])
        missed = await client.item("again", seconds=30)
        assert missed["type"] == "case.opened", missed
        assert missed["caseId"] != opened["caseId"]
        assert await client.silent(1.0)

    assert await second.stop() == 0, second.output()
    assert analyst not in first.log_path.read_text()
