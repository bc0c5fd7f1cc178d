"""Fixtures over the real services."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection
from arq.connections import ArqRedis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.broker import Names, declare_topology, delete_topology
from adapters.database import make_engine
from adapters.ingest_store import ingest_unit_of_work_factory
from adapters.settings import Settings, get_settings
from adapters.tenants import create_tenant
from adapters.unit_of_work import unit_of_work_factory
from outbox.publisher import Publisher
from outbox.relay import Relay
from tests.integration.relay_support import MakeRelay
from tests.integration.scoring_support import score_queue, scoring_settings

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path) or "tests/e2e" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def migrated(settings: Settings) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config(str(ROOT / "migrations" / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", settings.owner_database_url)
    command.upgrade(config, "head")


@pytest.fixture(scope="session")
async def owner_engine(settings: Settings, migrated: None) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(settings.owner_database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def app_engine(settings: Settings, migrated: None) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(settings.database_url, pool_size=20)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def relay_engine(settings: Settings, migrated: None) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(settings.relay_database_url, pool_size=4)
    yield engine
    await engine.dispose()


@pytest.fixture
async def tenant(owner_engine: AsyncEngine) -> uuid.UUID:
    """A fresh tenant per test: tests never see each other's rows."""
    return await create_tenant(owner_engine, f"t-{uuid.uuid4().hex[:12]}", "Test bank")


@pytest.fixture
def uow_factory(app_engine: AsyncEngine) -> Any:
    return unit_of_work_factory(app_engine)


@pytest.fixture
def ingest_uow_factory(app_engine: AsyncEngine) -> Any:
    """The leaner unit of work both doors ingest through."""
    return ingest_unit_of_work_factory(app_engine)


@pytest.fixture
async def quiet_outbox(owner_engine: AsyncEngine) -> None:
    """Mark every pending outbox row as published, so a relay started by the test
    publishes only what the test writes."""
    async with owner_engine.begin() as connection:
        await connection.execute(
            text("UPDATE outbox SET published_at = now() WHERE published_at IS NULL")
        )


@pytest.fixture
def scoring(settings: Settings) -> Settings:
    """The test settings with a score queue of the test's own."""
    return scoring_settings(settings)


@pytest.fixture
async def queue(scoring: Settings) -> AsyncIterator[ArqRedis]:
    """A client of that score queue; the queue is deleted afterwards."""
    async with score_queue(scoring) as redis:
        yield redis


@pytest.fixture(scope="session")
def names(settings: Settings) -> Names:
    return Names(settings.amqp_prefix)


@pytest.fixture(scope="session")
async def amqp(settings: Settings, names: Names) -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(settings.amqp_url.get_secret_value())
    async with connection.channel() as channel:
        await declare_topology(channel, names)
    yield connection
    async with connection.channel() as channel:
        await delete_topology(channel, names)
    await connection.close()


@pytest.fixture
async def make_relay(
    settings: Settings, relay_engine: AsyncEngine, names: Names, amqp: AbstractRobustConnection
) -> AsyncIterator[MakeRelay]:
    """Relays on connections of their own. (``amqp`` removes, when the session ends, the
    topology their publishers declare.)"""
    relays: list[Relay] = []

    def make(**options: Any) -> Relay:
        publisher = Publisher(
            settings.amqp_url.get_secret_value(),
            names,
            timeout_seconds=settings.relay_publish_timeout_seconds,
        )
        relay = Relay(relay_engine, publisher, **options)
        relays.append(relay)
        return relay

    yield make
    for relay in relays:
        await relay.close()
