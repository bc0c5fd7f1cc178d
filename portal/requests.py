"""What every HTTP request gets before its handler runs: a correlation id, the caller's
identity, a log context carrying both, a JSON body checked for what the decoder cannot
take (:mod:`portal.bodies`), and one log line when it is answered."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

from litestar.connection import ASGIConnection
from litestar.datastructures import Headers, MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from redis.exceptions import RedisError

from adapters.logging import bind_context
from adapters.rate_limit import TenantRateLimit
from adapters.settings import Settings
from domain.ids import new_id
from portal.auth import Identity, authenticate
from portal.bodies import checked_body, keeping_decoded, refuse, too_many_requests

log = logging.getLogger(__name__)

CORRELATION_HEADER = "X-Correlation-ID"
GRAPHQL_PATH = "/graphql"
_CORRELATION_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")

# Probes and scrapes arrive every few seconds; their lines would drown the rest.
_QUIET_PATHS = ("/health/", "/metrics")

_STATE_KEY = "vigil.correlation_id"


def correlation_id_from(value: str | None) -> str:
    """The caller's correlation id when it is safe to carry along, else a new one."""
    if value is not None and _CORRELATION_ID.fullmatch(value):
        return value
    return str(new_id())


def correlation_id_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The correlation id chosen for this request by the middleware (which serves HTTP
    only: a WebSocket handshake gets a new one)."""
    value = connection.scope["state"].get(_STATE_KEY)
    return value if isinstance(value, str) else str(new_id())


class RequestContextMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        headers = Headers.from_scope(scope)
        correlation_id = correlation_id_from(headers.get(CORRELATION_HEADER))
        started = time.perf_counter()
        status = 0

        async def send_with_correlation(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableScopeHeaders.from_message(message)[CORRELATION_HEADER] = correlation_id
            await send(message)

        with bind_context(correlation_id=correlation_id):
            identity = await self._authenticate(headers.get("Authorization"))
            scope["auth"] = identity
            scope["state"][_STATE_KEY] = correlation_id
            tenant_id = identity.principal.tenant_id if identity.principal else None
            with bind_context(tenant_id=tenant_id):
                try:
                    if tenant_id is not None and await self._limited(
                        scope, tenant_id, send_with_correlation
                    ):
                        return
                    await self._pass_on(scope, headers, receive, send_with_correlation, next_app)
                finally:
                    path = scope["path"]
                    log.log(
                        logging.DEBUG if path.startswith(_QUIET_PATHS) else logging.INFO,
                        "request answered",
                        extra={
                            "method": scope.get("method"),
                            "path": path,
                            "status": status,
                            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                        },
                    )

    async def _limited(self, scope: Scope, tenant_id: uuid.UUID, send: Send) -> bool:
        """Answer 429 and return True when the tenant is over its request rate."""
        if scope["path"] != GRAPHQL_PATH:
            return False
        resources = scope["litestar_app"].state.get("resources")
        limit = getattr(resources, "rate_limit", None)
        if not isinstance(limit, TenantRateLimit):
            return False
        try:
            verdict = await limit.check(tenant_id)
        except (RedisError, OSError):
            # Fail open: losing Redis must not take the API down with it.
            log.warning("rate limit not checked: Redis is unavailable")
            return False
        if verdict.allowed:
            return False
        log.info("rate limit reached", extra={"retry_after": verdict.retry_after_seconds})
        await too_many_requests(send, verdict.retry_after_seconds)
        return True

    async def _authenticate(self, authorization: str | None) -> Identity:
        if self._settings.jwt_algorithm == "RS256" and authorization:
            # Reading the identity provider's keys may block on the network.
            return await asyncio.to_thread(authenticate, self._settings, authorization)
        return authenticate(self._settings, authorization)

    async def _pass_on(
        self, scope: Scope, headers: Headers, receive: Receive, send: Send, next_app: ASGIApp
    ) -> None:
        """Hand the request on, unless its JSON body cannot be decoded safely."""
        method = scope["method"] if scope["type"] == ScopeType.HTTP else ""
        receive, refusal, kept = await checked_body(
            method, headers, receive, self._settings.max_body_bytes
        )
        if refusal is not None:
            log.info("request body refused", extra={"reason": refusal})
            await refuse(send, refusal)
            return
        with keeping_decoded(kept):
            await next_app(scope, receive, send)
