"""Helpers for the live review queue's tests: the real portal served by uvicorn on a
free port of 127.0.0.1, a ``graphql-transport-ws`` client, and cases opened by scoring
events whose messages the relay then publishes."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from litestar import Litestar
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from adapters.cel_rules import CachedScorers
from adapters.settings import Settings
from domain.ports import UnitOfWorkFactory
from portal.app import MAX_WEBSOCKET_FRAME_BYTES, create_app
from portal.resources import Resources, resources_of
from services.scoring import score_event
from tests.integration.relay_support import MakeRelay, until
from tests.integration.scoring_support import alerting, ingest

PROTOCOL = "graphql-transport-ws"
WAIT_SECONDS = 20.0

REVIEW_QUEUE = """
subscription($filter: ReviewQueueFilter, $after: String) {
  reviewQueue(filter: $filter, after: $after) {
    __typename
    ... on CaseChanged { cursor type caseId status band priority version data }
    ... on ReviewQueueResync { cursor reason }
  }
}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class ServedPortal:
    app: Litestar
    url: str

    @property
    def resources(self) -> Resources:
        return resources_of(self.app.state)

    async def subscribers(self, count: int) -> None:
        """Wait until the hub holds ``count`` subscribers."""
        await until(lambda: self.resources.hub.subscriber_count() == count)


@asynccontextmanager
async def served_portal(settings: Settings) -> AsyncIterator[ServedPortal]:
    """The portal served as ``vigil portal`` serves it, until the block ends; its case
    events consumer is consuming when the block starts."""
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            lifespan="on",
            log_config=None,
            access_log=False,
            ws_max_size=MAX_WEBSOCKET_FRAME_BYTES,
        )
    )
    serving = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started or serving.done())
        if serving.done():
            serving.result()
        portal = ServedPortal(app, f"ws://127.0.0.1:{port}/graphql")
        await asyncio.wait_for(portal.resources.case_events.consuming.wait(), WAIT_SECONDS)
        yield portal
    finally:
        server.should_exit = True
        await serving


class LiveClient:
    """One WebSocket connection speaking graphql-transport-ws."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket

    async def send(self, message: dict[str, Any]) -> None:
        await self.socket.send(json.dumps(message))

    async def receive(self, *, seconds: float = WAIT_SECONDS) -> dict[str, Any]:
        async with asyncio.timeout(seconds):
            while True:
                message: dict[str, Any] = json.loads(await self.socket.recv())
                if message["type"] == "ping":
                    await self.send({"type": "pong"})
                    continue
                return message

    async def init(self, token: str | None) -> None:
        payload = {} if token is None else {"authorization": f"Bearer {token}"}
        await self.send({"type": "connection_init", "payload": payload})

    async def subscribe(
        self, operation_id: str, query: str = REVIEW_QUEUE, **variables: Any
    ) -> None:
        await self.send(
            {
                "id": operation_id,
                "type": "subscribe",
                "payload": {"query": query, "variables": variables},
            }
        )

    async def item(self, operation_id: str, *, seconds: float = WAIT_SECONDS) -> dict[str, Any]:
        """The next stream item of the operation (fails on anything else)."""
        message = await self.receive(seconds=seconds)
        assert message["type"] == "next", message
        assert message["id"] == operation_id, message
        assert "errors" not in message["payload"], message
        item: dict[str, Any] = message["payload"]["data"]["reviewQueue"]
        return item

    async def silent(self, seconds: float) -> bool:
        """True when nothing arrives for ``seconds``."""
        try:
            await self.receive(seconds=seconds)
        except TimeoutError:
            return True
        return False

    async def closed_with(self) -> int | None:
        """The close code once the server has closed the connection."""
        try:
            async with asyncio.timeout(WAIT_SECONDS):
                while True:
                    await self.socket.recv()
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


@asynccontextmanager
async def live_client(url: str, token: str | None = None) -> AsyncIterator[LiveClient]:
    """A client connected to the portal at ``url``; with ``token``, initialised and
    acknowledged."""
    async with connect(url, subprotocols=[PROTOCOL], ping_interval=None) as socket:  # type: ignore[list-item]
        client = LiveClient(socket)
        if token is not None:
            await client.init(token)
            ack = await client.receive()
            assert ack["type"] == "connection_ack", ack
        yield client


async def open_cases(
    uow_factory: UnitOfWorkFactory,
    tenant: uuid.UUID,
    make_event: Callable[..., dict[str, Any]],
    make_relay: MakeRelay,
    count: int = 1,
    *,
    relayed: bool = True,
) -> None:
    """Ingest ``count`` alerting events from different senders, score them (each opens
    a case) and, if ``relayed``, let a relay publish what they wrote."""
    events = await ingest(
        uow_factory,
        tenant,
        [alerting(make_event, originator=f"ACC-{uuid.uuid4().hex[:12]}") for _ in range(count)],
    )
    scorers = CachedScorers()
    for event in events:
        await score_event(uow_factory, scorers, tenant, event)
    if relayed:
        await relay_all(make_relay)


async def relay_all(make_relay: MakeRelay) -> None:
    relay = make_relay()
    while await relay.run_once():
        pass
