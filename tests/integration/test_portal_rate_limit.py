"""The request rate limit per tenant, counted in the real Redis."""

from __future__ import annotations

import uuid

from adapters.auth import Role
from adapters.settings import Settings
from tests.integration.portal_support import VIEWER, open_portal, token


async def test_a_tenant_over_its_rate_is_answered_429_and_others_are_not(
    settings: Settings, tenant: uuid.UUID
) -> None:
    limited = settings.model_copy(
        update={
            "rate_limit_requests": 3,
            "rate_limit_window_seconds": 60.0,
            # Counters of this test only.
            "amqp_prefix": f"{settings.amqp_prefix}.rl{uuid.uuid4().hex[:6]}",
        }
    )
    busy = token(limited, tenant, Role.ANALYST)
    other = token(limited, uuid.uuid4(), Role.ANALYST)
    body = {"query": VIEWER}

    async with open_portal(limited) as portal:
        for _ in range(3):
            assert (await portal.post(body, token=busy)).status_code == 200
        refused = await portal.post(body, token=busy)
        others = await portal.post(body, token=other)
        health = await portal.client.get("/health/live")

    assert refused.status_code == 429
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert refused.json() == {
        "data": None,
        "errors": [
            {
                "message": f"too many requests for this tenant: retry after {retry_after} s",
                "extensions": {"code": "RATE_LIMITED", "retryAfter": retry_after},
            }
        ],
    }
    assert others.status_code == 200
    assert health.status_code == 200


async def test_the_limit_fails_open_when_redis_is_away(
    settings: Settings, tenant: uuid.UUID
) -> None:
    unreachable = settings.model_copy(
        update={"redis_url": "redis://127.0.0.1:1/11", "rate_limit_requests": 1}
    )
    busy = token(unreachable, tenant, Role.ANALYST)

    async with open_portal(unreachable) as portal:
        answers = [(await portal.post({"query": VIEWER}, token=busy)).status_code for _ in range(3)]

    assert answers == [200, 200, 200]
