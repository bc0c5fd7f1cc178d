"""``vigil demo``: start the processes and send real transfers through both doors.

It creates (or reuses) the tenant ``demo`` with the default ruleset, starts the relay,
the inbound consumer, the dispatcher, a scoring worker and the portal, sends the first
transfers of the AMLSim sample bank through the GraphQL mutation and a few as
CloudEvents through the inbound queue, sends one batch again to show that it is
answered as duplicates, waits until every event is assessed, verifies the audit chain
and prints what happened: assessments by band, alerts by typology, cases opened.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import aio_pika
import httpx
from sqlalchemy import text

from adapters.audit_trail import verify
from adapters.auth import Role, mint_token
from adapters.broker import Names, declare_topology
from adapters.database import make_engine
from adapters.settings import Settings, get_settings
from vigil import amlsim
from vigil.processes import Processes, child_environment, wait_until_ready
from vigil.provisioning import provision_tenant

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


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    data: Path = args.data or amlsim.default_data()
    if not (data / "transactions.csv").exists():
        raise SystemExit(f"no transactions.csv in {data}: pass --data DIR or set VIGIL_DEMO_DATA")
    tenant_id = asyncio.run(_tenant(settings))
    token = mint_token(
        settings, subject="demo-integration", tenant_id=tenant_id, roles=[Role.INGEST]
    )
    base = f"http://{settings.portal_host}:{settings.portal_port}"

    processes = Processes(child_environment(), Path(".cache/demo-logs"))
    try:
        for command in ("relay", "inbound", "dispatcher", "worker", "portal"):
            processes.start(command)
        wait_until_ready(f"{base}/health/ready")
        print(f"portal ready at {base}/graphql; tenant demo = {tenant_id}")

        events = list(amlsim.transfers(data, args.limit))
        by_queue, by_graphql = events[:10], events[10:]
        counts = _send_graphql(base, token, by_graphql)
        print(f"GraphQL: {counts}")
        again = _send_graphql(base, token, by_graphql[:100])
        print(f"the first batch again: {again}")
        asyncio.run(_send_queue(settings, tenant_id, by_queue))
        print(f"inbound queue: {len(by_queue)} CloudEvents published")

        summary = asyncio.run(_wait_and_summarise(settings, tenant_id, len(events)))
        for line in summary:
            print(line)
        if args.keep_running:
            print("processes left running; logs in .cache/demo-logs; Ctrl-C to stop")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        processes.stop()
    return 0


async def _tenant(settings: Settings) -> uuid.UUID:
    return await provision_tenant(settings, "demo", "Demo bank")


def _send_graphql(base: str, token: str, events: list[dict[str, Any]]) -> dict[str, int]:
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60.0) as client:
        for start in range(0, len(events), 100):
            batch = events[start : start + 100]
            response = client.post(
                "/graphql",
                json={"query": MUTATION, "variables": {"input": {"events": batch}}},
            )
            response.raise_for_status()
            body = response.json()
            if body.get("errors"):
                raise RuntimeError(f"the portal refused the batch: {body['errors']}")
            for result in body["data"]["ingestEvents"]["results"]:
                if result["__typename"] == "EventRejected":
                    counts["rejected"] += 1
                else:
                    counts["duplicate" if result["duplicate"] else "accepted"] += 1
    return counts


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


PROGRESS = text(
    "SELECT (SELECT count(*) FROM events WHERE tenant_id = :t) AS events,"
    " (SELECT count(*) FROM assessments WHERE tenant_id = :t) AS assessed,"
    " (SELECT count(*) FROM scoring_failures WHERE tenant_id = :t) AS failed,"
    " (SELECT count(*) FROM outbox WHERE tenant_id = :t AND published_at IS NULL) AS pending,"
    " (SELECT count(*) FROM outbox WHERE tenant_id = :t) AS messages"
)
BANDS = text(
    "SELECT band, count(*) AS n FROM assessments WHERE tenant_id = :t GROUP BY band ORDER BY band"
)
TYPOLOGIES = text(
    "SELECT typology, count(*) AS n FROM alerts, unnest(typologies) AS typology"
    " WHERE tenant_id = :t GROUP BY typology ORDER BY n DESC"
)
CASES = text("SELECT count(*) FROM cases WHERE tenant_id = :t")


async def _wait_and_summarise(settings: Settings, tenant_id: uuid.UUID, expected: int) -> list[str]:
    engine = make_engine(settings.owner_database_url, pool_size=1)
    deadline = time.monotonic() + timedelta(minutes=5).total_seconds()
    try:
        while True:
            async with engine.connect() as connection:
                row = (await connection.execute(PROGRESS, {"t": tenant_id})).one()
            done = row.events >= expected and row.assessed + row.failed >= row.events
            if (done and row.pending == 0) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        async with engine.connect() as connection:
            chained = await verify(connection, tenant_id)
            bands = (await connection.execute(BANDS, {"t": tenant_id})).all()
            typologies = (await connection.execute(TYPOLOGIES, {"t": tenant_id})).all()
            cases = (await connection.execute(CASES, {"t": tenant_id})).scalar_one()
    finally:
        await engine.dispose()
    return [
        f"events stored: {row.events} (of {expected} sent)",
        f"assessed: {row.assessed}, failed: {row.failed}",
        "assessments by band: " + ", ".join(f"{b.band} {b.n}" for b in bands),
        "alerts by typology: " + (", ".join(f"{t.typology} {t.n}" for t in typologies) or "none"),
        f"cases: {cases}",
        f"messages published: {row.messages - row.pending} of {row.messages}",
        f"audit chain verified: {chained} records",
    ]
