"""Liveness and readiness for the orchestrator.

These endpoints take no token: probes cannot carry one. In production they are reached
on the internal network only (the load balancer does not route ``/health``), and they
answer with a status per dependency, never with connection details.

``/health/live`` says the process serves HTTP; restarting it cures nothing else.
``/health/ready`` says whether it can do its work now: PostgreSQL answers a query, Redis
answers PING and RabbitMQ accepts a connection, each within a short timeout. While any
of them fails the replica answers 503 and is taken out of the load balancer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from litestar import MediaType, Request, Response, get
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from sqlalchemy import text

from portal.resources import PROBE_TIMEOUT_SECONDS, Resources, resources_of

log = logging.getLogger(__name__)

OK = "ok"
FAILED = "failed"
TIMEOUT = "timeout"


async def _postgres(resources: Resources) -> None:
    async with resources.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _redis(resources: Resources) -> None:
    await resources.redis.ping()


async def _rabbitmq(resources: Resources) -> None:
    url = resources.settings.amqp_url.get_secret_value()
    connection = await aio_pika.connect(
        url, timeout=PROBE_TIMEOUT_SECONDS, client_properties={"connection_name": "vigil-probe"}
    )
    await connection.close()


CHECKS: dict[str, Callable[[Resources], Awaitable[None]]] = {
    "postgres": _postgres,
    "redis": _redis,
    "rabbitmq": _rabbitmq,
}


async def _probe(name: str, check: Callable[[Resources], Awaitable[None]], res: Resources) -> str:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
            await check(res)
    except TimeoutError:
        log.warning("dependency check timed out", extra={"dependency": name})
        return TIMEOUT
    except Exception as error:  # any failure of a dependency means "not ready"
        log.warning(
            "dependency check failed",
            extra={"dependency": name, "error": f"{type(error).__name__}: {error}"[:300]},
        )
        return FAILED
    return OK


@get("/health/live", media_type=MediaType.JSON, sync_to_thread=False)
def live() -> dict[str, str]:
    return {"status": OK}


@get("/health/ready", media_type=MediaType.JSON)
async def ready(request: Request[Any, Any, Any]) -> Response[dict[str, object]]:
    resources = resources_of(request.app.state)
    names = list(CHECKS)
    outcomes = await asyncio.gather(*(_probe(name, CHECKS[name], resources) for name in names))
    checks = dict(zip(names, outcomes, strict=True))
    healthy = all(outcome == OK for outcome in checks.values())
    return Response(
        {"status": OK if healthy else "unavailable", "checks": checks},
        status_code=HTTP_200_OK if healthy else HTTP_503_SERVICE_UNAVAILABLE,
        media_type=MediaType.JSON,
    )
