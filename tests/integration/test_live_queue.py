"""The live review queue against the real PostgreSQL and RabbitMQ: the portal served on
a port of its own, clients over graphql-transport-ws, cases opened by scoring and
announced by the relay. The periodic look is made rare, so what arrives shows the
message path."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry import relay

from adapters.auth import Role
from adapters.settings import Settings
from adapters.tenants import create_tenant
from domain.errors import TransientFailure
from domain.ports import UnitOfWorkFactory
from domain.review_queue import CaseChange
from portal.app import MAX_WEBSOCKET_FRAME_BYTES
from portal.live import Hub, Resync
from services.review_queue import changes_since
from tests.integration.live_support import (
    REVIEW_QUEUE,
    ServedPortal,
    live_client,
    open_cases,
    relay_all,
    served_portal,
)
from tests.integration.portal_support import token
from tests.integration.relay_support import MakeRelay, until
from tests.integration.scoring_support import activate_default_ruleset

pytestmark = pytest.mark.usefixtures("quiet_outbox", "amqp")

CATCH_UP_LIMIT = 5


@pytest.fixture
def live_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"live_poll_seconds": 3600.0, "live_catch_up_limit": CATCH_UP_LIMIT}
    )


@pytest.fixture
async def portal(live_settings: Settings) -> AsyncIterator[ServedPortal]:
    async with served_portal(live_settings) as served:
        yield served


@pytest.fixture
async def reviewed_tenant(tenant: uuid.UUID, uow_factory: UnitOfWorkFactory) -> uuid.UUID:
    await activate_default_ruleset(uow_factory, tenant)
    return tenant


OpenCase = Callable[..., Awaitable[None]]


@pytest.fixture
def open_case(
    uow_factory: UnitOfWorkFactory, transaction_event: Any, make_relay: MakeRelay
) -> OpenCase:
    """Open ``count`` cases of a tenant through scoring, and relay their messages."""

    async def open_(tenant: uuid.UUID, count: int = 1, *, relayed: bool = True) -> None:
        await open_cases(uow_factory, tenant, transaction_event, make_relay, count, relayed=relayed)

    return open_


async def first_change(
    portal: ServedPortal, bearer: str, tenant: uuid.UUID, open_case: OpenCase
) -> dict[str, Any]:
    """Subscribe, open a case, and go away with the change it caused."""
    async with live_client(portal.url, bearer) as client:
        await client.subscribe("q")
        await portal.subscribers(1)
        await open_case(tenant)
        item = await client.item("q")
    await portal.subscribers(0)
    return item


def analyst(settings: Settings, tenant: uuid.UUID, **options: Any) -> str:
    return token(settings, tenant, Role.ANALYST, subject="analyst-1", **options)


async def test_a_subscriber_receives_the_case_an_ingested_event_opens(
    portal: ServedPortal,
    settings: Settings,
    reviewed_tenant: uuid.UUID,
    open_case: OpenCase,
) -> None:
    async with live_client(portal.url, analyst(settings, reviewed_tenant)) as client:
        await client.subscribe("q")
        await portal.subscribers(1)
        await open_case(reviewed_tenant)

        item = await client.item("q")
        assert item["__typename"] == "CaseChanged"
        assert item["type"] == "case.opened"
        assert item["status"] == "OPEN"
        assert item["band"] in {"HIGH", "CRITICAL"}
        assert item["version"] == 1
        # The id the queries and the review mutations take.
        assert item["caseId"] == relay.to_base64("Case", item["data"]["caseId"])
        assert item["cursor"]
    await portal.subscribers(0)


async def test_another_tenants_subscriber_sees_nothing_of_it(
    portal: ServedPortal,
    settings: Settings,
    reviewed_tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    uow_factory: UnitOfWorkFactory,
    open_case: OpenCase,
) -> None:
    other = await create_tenant(owner_engine, f"t-{uuid.uuid4().hex[:12]}", "Other bank")
    await activate_default_ruleset(uow_factory, other)
    async with (
        live_client(portal.url, analyst(settings, reviewed_tenant)) as ours,
        live_client(portal.url, analyst(settings, other)) as theirs,
    ):
        await ours.subscribe("a")
        await theirs.subscribe("b")
        await portal.subscribers(2)

        await open_case(reviewed_tenant)
        assert (await ours.item("a"))["type"] == "case.opened"
        assert await theirs.silent(1.0)

        # The other tenant's subscriber is live: its own case reaches it, and only it.
        await open_case(other)
        assert (await theirs.item("b"))["type"] == "case.opened"
        assert await ours.silent(0.5)


async def test_a_connection_without_a_valid_token_is_closed(
    portal: ServedPortal, settings: Settings, tenant: uuid.UUID
) -> None:
    async with live_client(portal.url) as client:
        await client.init(None)
        assert await client.closed_with() == 4403
    async with live_client(portal.url) as client:
        await client.init("not-a-token")
        assert await client.closed_with() == 4403
    other_secret = settings.model_copy(update={"jwt_secret": SecretStr("x" * 40)})
    async with live_client(portal.url) as client:
        await client.init(analyst(other_secret, tenant))
        assert await client.closed_with() == 4403
    async with live_client(portal.url) as client:
        await client.subscribe("q")  # before connection_init
        assert await client.closed_with() == 4401
    assert portal.resources.hub.subscriber_count() == 0


async def test_only_analysts_and_supervisors_may_watch(
    portal: ServedPortal, settings: Settings, tenant: uuid.UUID
) -> None:
    for role, allowed in (
        (Role.INGEST, False),
        (Role.REGULATOR, False),
        (Role.ADMIN, False),
        (Role.SUPERVISOR, True),
    ):
        async with live_client(portal.url, token(settings, tenant, role)) as client:
            await client.subscribe("q")
            if allowed:
                await portal.subscribers(1)
                continue
            message = await client.receive()
            assert message["type"] == "next", message
            assert [e["extensions"]["code"] for e in message["payload"]["errors"]] == ["FORBIDDEN"]
            assert (await client.receive())["type"] == "complete"
        await portal.subscribers(0)


async def test_the_stream_ends_when_the_token_expires(
    portal: ServedPortal, settings: Settings, tenant: uuid.UUID
) -> None:
    short = analyst(settings, tenant, lifetime=timedelta(seconds=2))
    async with live_client(portal.url, short) as client:
        await client.subscribe("q")
        await portal.subscribers(1)
        message = await client.receive(seconds=10)
        assert message["type"] == "next", message
        errors = message["payload"]["errors"]
        assert [e["extensions"]["code"] for e in errors] == ["UNAUTHENTICATED"]
        assert errors[0]["message"] == "the bearer token has expired"
        assert (await client.receive())["type"] == "complete"
        await portal.subscribers(0)


@pytest.mark.parametrize("missed", [3, CATCH_UP_LIMIT + 1])
async def test_a_returning_subscriber_gets_what_it_missed_or_a_resync_then_live_changes_once(
    portal: ServedPortal,
    settings: Settings,
    reviewed_tenant: uuid.UUID,
    open_case: OpenCase,
    missed: int,
) -> None:
    me = analyst(settings, reviewed_tenant)
    first = await first_change(portal, me, reviewed_tenant, open_case)
    await open_case(reviewed_tenant, missed)

    async with live_client(portal.url, me) as client:
        await client.subscribe("q", after=first["cursor"])
        if missed <= CATCH_UP_LIMIT:
            replayed = [await client.item("q") for _ in range(missed)]
            assert [item["type"] for item in replayed] == ["case.opened"] * missed
            seen = {first["caseId"]} | {item["caseId"] for item in replayed}
            assert len(seen) == missed + 1
            assert len({first["cursor"]} | {item["cursor"] for item in replayed}) == missed + 1
        else:
            resync = await client.item("q")
            assert resync["__typename"] == "ReviewQueueResync"
            seen = {first["caseId"]}

        await open_case(reviewed_tenant)
        live = await client.item("q")
        assert live["type"] == "case.opened"
        assert live["caseId"] not in seen
        assert await client.silent(0.5)  # nothing twice at the seam


async def test_filters_pick_the_changes_a_subscriber_asked_for(
    portal: ServedPortal,
    settings: Settings,
    reviewed_tenant: uuid.UUID,
    open_case: OpenCase,
) -> None:
    async with live_client(portal.url, analyst(settings, reviewed_tenant)) as client:
        await client.subscribe("low", filter={"bands": ["LOW"]})
        await client.subscribe("open", filter={"statuses": ["OPEN"], "bands": ["HIGH", "CRITICAL"]})
        await portal.subscribers(2)
        await open_case(reviewed_tenant)
        item = await client.item("open")
        assert item["status"] == "OPEN"
        assert await client.silent(0.5)


async def test_bad_input_is_refused_with_a_code(
    portal: ServedPortal, settings: Settings, tenant: uuid.UUID
) -> None:
    async with live_client(portal.url, analyst(settings, tenant)) as client:
        await client.subscribe("cursor", after="bm90LWEtY3Vyc29y")
        message = await client.receive()
        assert message["payload"]["errors"][0]["extensions"] == {
            "code": "BAD_REQUEST",
            "field": "after",
        }
        assert (await client.receive())["type"] == "complete"

        await client.subscribe("filter", filter={"bands": ["LOW"] * 21})
        message = await client.receive()
        assert message["payload"]["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
        assert (await client.receive())["type"] == "complete"

        aliases = " ".join(f"a{n}: __typename" for n in range(30))
        await client.subscribe("aliases", query=f"subscription {{ reviewQueue {{ {aliases} }} }}")
        message = await client.receive()
        assert message["type"] == "error", message
        assert message["payload"][0]["extensions"]["code"] == "BAD_REQUEST"

        await client.subscribe("query", query="query { viewer { subject } }")
        message = await client.receive()
        assert message["type"] == "error", message
        assert portal.resources.hub.subscriber_count() == 0


@pytest.mark.parametrize(
    "frame",
    [
        "[" * 5000 + "]" * 5000,
        '{"type": "ping", "type": "connection_init", "payload": {}}',
        '{"type": "connection_init", "payload": {"n": ' + "1" * 5000 + "}}",
    ],
)
async def test_a_frame_that_cannot_be_read_safely_closes_the_connection(
    portal: ServedPortal, frame: str
) -> None:
    async with live_client(portal.url) as client:
        await client.socket.send(frame)
        assert await client.closed_with() == 4400


async def test_a_frame_over_the_size_limit_closes_the_connection(portal: ServedPortal) -> None:
    async with live_client(portal.url) as client:
        payload = {"authorization": "x" * (MAX_WEBSOCKET_FRAME_BYTES + 1)}
        await client.send({"type": "connection_init", "payload": payload})
        assert await client.closed_with() == 1009  # message too big


async def test_an_internal_error_in_a_stream_is_masked(
    portal: ServedPortal,
    settings: Settings,
    reviewed_tenant: uuid.UUID,
    open_case: OpenCase,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def defect(change: CaseChange) -> Any:
        raise RuntimeError("secret detail of a defect")

    monkeypatch.setattr("portal.review_queue.CaseChanged.of", defect)
    async with live_client(portal.url, analyst(settings, reviewed_tenant)) as client:
        await client.subscribe("q")
        await portal.subscribers(1)
        await open_case(reviewed_tenant)
        message = await client.receive()
        assert message["type"] == "next", message
        assert message["payload"]["errors"] == [
            {"message": "internal error", "extensions": {"code": "INTERNAL"}}
        ], message
        assert (await client.receive())["type"] == "complete"
        assert "secret" not in str(message)


async def test_subscriptions_are_refused_over_http(
    portal: ServedPortal, settings: Settings, tenant: uuid.UUID
) -> None:
    url = portal.url.replace("ws://", "http://")
    async with httpx.AsyncClient() as client:
        response = await client.post(
            url,
            json={"query": REVIEW_QUEUE},
            headers={
                "Authorization": f"Bearer {analyst(settings, tenant)}",
                "Accept": "multipart/mixed;subscriptionSpec=1.0, application/json",
            },
        )
    assert "multipart" not in response.headers.get("content-type", "")
    assert portal.resources.hub.subscriber_count() == 0
    assert response.status_code == 400, response.text
    assert "subscription" in response.text.lower()


async def test_a_slow_subscriber_is_sent_one_resync_and_holds_a_bounded_buffer(
    reviewed_tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    open_case: OpenCase,
) -> None:
    hub = Hub(uow_factory, buffer_size=3, poll_seconds=3600.0)
    try:
        async with hub.subscription(reviewed_tenant) as (slow, joined):
            await open_case(reviewed_tenant, 8)
            changes = await changes_since(uow_factory, reviewed_tenant, joined, limit=100)
            assert len(changes) == 8
            hub.notify(reviewed_tenant)
            await until(lambda: slow.pending > 0)

            assert slow.pending <= 3
            items = [await slow.next(within=0) for _ in range(slow.pending)]
            assert isinstance(items[0], Resync)
            assert not any(isinstance(item, Resync) for item in items[1:])
            # What follows the resync is what came after the last change dropped.
            rest = [item for item in items[1:] if isinstance(item, CaseChange)]
            assert [c.position for c in rest] == [c.position for c in changes[-len(rest) :]]
            assert items[0].cursor.position == changes[-len(rest) - 1].position
    finally:
        await hub.close()


async def test_after_losing_the_broker_the_consumer_comes_back_and_reads_what_it_missed(
    live_settings: Settings,
    reviewed_tenant: uuid.UUID,
    open_case: OpenCase,
    make_relay: MakeRelay,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Long enough for the relay to publish, even on a busy machine, before it is back.
    monkeypatch.setattr("portal.live.RECONNECT_SECONDS", 15.0)
    async with (
        served_portal(live_settings) as portal,
        live_client(portal.url, analyst(live_settings, reviewed_tenant)) as client,
    ):
        consumer = portal.resources.case_events
        await client.subscribe("q")
        await portal.subscribers(1)
        await open_case(reviewed_tenant, relayed=False)

        # Only this portal's own connection is closed; its exclusive queue goes with it.
        await close_broker_connection(consumer.name)
        await until(lambda: not consumer.connected)
        await relay_all(make_relay)
        # Announced while the queue was gone.
        assert not consumer.connected

        missed = await client.item("q", seconds=60)
        assert missed["type"] == "case.opened"
        assert consumer.reconnects == 1

        await open_case(reviewed_tenant)
        live = await client.item("q")
        assert live["caseId"] != missed["caseId"]


async def close_broker_connection(connection_name: str) -> None:
    """Have the broker close the one connection of that name, as a broker restart
    would close it."""
    listed = await rabbitmqctl(
        "-q", "list_connections", "--no-table-headers", "pid", "client_properties"
    )
    wanted = f'{{"connection_name","{connection_name}"}}'
    pids = [line.split("\t", 1)[0] for line in listed.splitlines() if wanted in line]
    assert len(pids) == 1, pids
    await rabbitmqctl("close_connection", pids[0], "test: broker connection lost")


async def rabbitmqctl(*args: str) -> str:
    completed = await asyncio.to_thread(
        subprocess.run, ["rabbitmqctl", *args], capture_output=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr.decode()
    return completed.stdout.decode()


async def test_a_portal_serves_at_most_its_share_of_subscriptions(
    tenant: uuid.UUID, uow_factory: UnitOfWorkFactory
) -> None:
    hub = Hub(uow_factory, buffer_size=3, poll_seconds=3600.0, max_subscribers=2)
    try:
        async with hub.subscription(tenant), hub.subscription(tenant):
            with pytest.raises(TransientFailure):
                async with hub.subscription(tenant):
                    pass
            assert hub.subscriber_count() == 2
        async with hub.subscription(tenant):
            assert hub.subscriber_count() == 1
    finally:
        await hub.close()
