"""What the portal holds open for its whole life: the database engine (as the
application role), its unit-of-work factory, a Redis client for the readiness check and
the tenants' rate limit, and the live review queues' hub with the consumer that feeds it.
Opened on startup, closed on shutdown, reached by handlers through the app state."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from litestar import Litestar
from litestar.datastructures import State
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.database import make_engine
from adapters.ingest_store import ingest_unit_of_work_factory
from adapters.rate_limit import TenantRateLimit
from adapters.settings import Settings
from adapters.unit_of_work import unit_of_work_factory
from domain.ports import IngestUnitOfWorkFactory, UnitOfWorkFactory
from portal.live import CaseEventConsumer, Hub

PROBE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Resources:
    settings: Settings
    engine: AsyncEngine
    uow_factory: UnitOfWorkFactory
    # Ingest's leaner unit of work, on the same pool.
    ingest_uow_factory: IngestUnitOfWorkFactory
    redis: Redis
    hub: Hub
    case_events: CaseEventConsumer
    # None when the limit is turned off.
    rate_limit: TenantRateLimit | None = None


def resources_of(state: State) -> Resources:
    resources = state.get("resources")
    if not isinstance(resources, Resources):
        raise RuntimeError("the portal's resources are not open: was the lifespan run?")
    return resources


def lifespan(settings: Settings) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def open_resources(app: Litestar) -> AsyncIterator[None]:
        engine = make_engine(
            settings.database_url,
            pool_size=settings.database_pool_size,
            application_name="vigil-portal",
            pool_timeout_seconds=settings.database_pool_timeout_seconds,
        )
        redis = Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=PROBE_TIMEOUT_SECONDS,
            socket_timeout=PROBE_TIMEOUT_SECONDS,
        )
        uow_factory = unit_of_work_factory(engine)
        rate_limit = (
            TenantRateLimit(
                redis,
                settings.amqp_prefix,
                requests=settings.rate_limit_requests,
                window_seconds=settings.rate_limit_window_seconds,
            )
            if settings.rate_limit_requests
            else None
        )
        hub = Hub(
            uow_factory,
            buffer_size=settings.live_buffer_size,
            poll_seconds=settings.live_poll_seconds,
            max_subscribers=settings.live_max_subscribers,
        )
        case_events = CaseEventConsumer(settings, hub)
        case_events.start()
        app.state.resources = Resources(
            settings,
            engine,
            uow_factory,
            ingest_unit_of_work_factory(engine),
            redis,
            hub,
            case_events,
            rate_limit,
        )
        try:
            yield
        finally:
            del app.state.resources
            await case_events.close()
            await hub.close()
            await redis.aclose()
            await engine.dispose()

    return open_resources
