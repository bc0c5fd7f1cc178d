"""Helpers for the portal's tests: the real application, served in-process with its
lifespan run, and a few ways to call it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from litestar import Litestar
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.auth import Role, mint_token
from adapters.settings import Settings
from portal.app import create_app

INGEST = """
mutation Ingest($input: IngestEventsInput!) {
  ingestEvents(input: $input) {
    clientMutationId
    acceptedCount
    duplicateCount
    rejectedCount
    results {
      __typename
      ... on EventAccepted { index eventId duplicate }
      ... on EventRejected { index code field message }
    }
  }
}
"""

VIEWER = "query { viewer { subject tenantId roles } }"


def token(
    settings: Settings,
    tenant: uuid.UUID,
    *roles: Role,
    subject: str = "core-banking",
    lifetime: timedelta = timedelta(minutes=5),
) -> str:
    return mint_token(
        settings,
        subject=subject,
        tenant_id=tenant,
        roles=list(roles or (Role.INGEST,)),
        lifetime=lifetime,
    )


@dataclass
class Portal:
    client: httpx.AsyncClient
    app: Litestar | None = None

    async def post(
        self, body: object, *, token: str | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        return await self.client.post("/graphql", json=body, headers=sent)

    async def graphql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The JSON body of a GraphQL answer, which always comes with status 200."""
        response = await self.post(
            {"query": query, "variables": variables or {}}, token=token, headers=headers
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def ingest(
        self, events: Sequence[object], *, token: str, **headers: str
    ) -> dict[str, Any]:
        body = await self.graphql(
            INGEST, {"input": {"events": list(events)}}, token=token, headers=headers
        )
        assert "errors" not in body, body
        payload: dict[str, Any] = body["data"]["ingestEvents"]
        return payload


@asynccontextmanager
async def open_portal(settings: Settings) -> AsyncIterator[Portal]:
    """The application with its lifespan run, as a server would run it.

    The lifespan is held by a task of its own: pytest tears a fixture down in another
    task than the one that set it up, and the lifespan must end where it began.
    """
    app = create_app(settings)
    started, stop = asyncio.Event(), asyncio.Event()

    async def hold_lifespan() -> None:
        async with app.lifespan():
            started.set()
            await stop.wait()

    lifespan = asyncio.create_task(hold_lifespan())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({lifespan, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if lifespan.done():
        lifespan.result()  # the startup failed: raise its error here
    try:
        # Litestar types the ASGI callables more narrowly than httpx does.
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://portal.test") as client:
            yield Portal(client, app)
    finally:
        stop.set()
        await lifespan


def error_codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


async def count_rows(owner_engine: AsyncEngine, table: str, tenant: uuid.UUID) -> int:
    """Rows of one tenant, counted as the owner (which row-level security does not limit)."""
    assert table in {"events", "outbox", "audit_records", "subjects"}
    async with owner_engine.connect() as connection:
        result = await connection.execute(
            text(f"SELECT count(*) FROM {table} WHERE tenant_id = :t"), {"t": tenant}
        )
        return int(result.scalar_one())


async def stored_nothing(owner_engine: AsyncEngine, tenant: uuid.UUID) -> bool:
    """Only the tenant's creation is on record: no event, subject, message or audit."""
    counts = [
        await count_rows(owner_engine, table, tenant)
        for table in ("events", "subjects", "outbox", "audit_records")
    ]
    return counts == [0, 0, 0, 1]
