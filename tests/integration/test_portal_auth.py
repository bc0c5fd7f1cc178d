"""Who may call the portal, and what one tenant's token can reach."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.auth import Role
from adapters.settings import Settings
from tests.integration.portal_support import (
    INGEST,
    VIEWER,
    Portal,
    count_rows,
    error_codes,
    open_portal,
    stored_nothing,
    token,
)


@pytest.fixture
async def portal(settings: Settings) -> AsyncIterator[Portal]:
    async with open_portal(settings) as client:
        yield client


def _other(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update=changes)


BAD_CREDENTIALS: list[tuple[str, Callable[[Settings, uuid.UUID], dict[str, str]]]] = [
    ("no header", lambda s, t: {}),
    ("no token", lambda s, t: {"Authorization": "Bearer "}),
    ("not bearer", lambda s, t: {"Authorization": f"Basic {token(s, t)}"}),
    ("garbage", lambda s, t: {"Authorization": "Bearer not.a.jwt"}),
    (
        "forged signature",
        lambda s, t: {
            "Authorization": "Bearer "
            + token(_other(s, jwt_secret=SecretStr("another-secret-of-at-least-32-bytes")), t)
        },
    ),
    (
        "expired",
        lambda s, t: {"Authorization": f"Bearer {token(s, t, lifetime=timedelta(minutes=-5))}"},
    ),
    (
        "wrong audience",
        lambda s, t: {"Authorization": f"Bearer {token(_other(s, jwt_audience='elsewhere'), t)}"},
    ),
    (
        "wrong issuer",
        lambda s, t: {"Authorization": f"Bearer {token(_other(s, jwt_issuer='mallory'), t)}"},
    ),
]


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(INGEST, id="ingestEvents"),
        pytest.param(VIEWER, id="viewer"),
        pytest.param("{ __schema { types { name } } }", id="introspection"),
    ],
)
@pytest.mark.parametrize(
    "credentials", [pytest.param(make, id=name) for name, make in BAD_CREDENTIALS]
)
async def test_an_operation_without_a_valid_token_is_unauthenticated(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    transaction_event: Any,
    credentials: Callable[[Settings, uuid.UUID], dict[str, str]],
    query: str,
) -> None:
    variables = {"input": {"events": [transaction_event()]}}

    body = await portal.graphql(query, variables, headers=credentials(settings, tenant))

    assert body["data"] is None
    assert error_codes(body) == ["UNAUTHENTICATED"]
    assert await stored_nothing(owner_engine, tenant)


async def test_an_expired_token_is_named_as_such(
    portal: Portal, settings: Settings, tenant: uuid.UUID
) -> None:
    expired = token(settings, tenant, lifetime=timedelta(minutes=-5))

    body = await portal.graphql(VIEWER, token=expired)

    assert body["errors"][0]["message"] == "the bearer token has expired"


async def test_a_token_within_the_leeway_is_still_accepted(
    portal: Portal, settings: Settings, tenant: uuid.UUID
) -> None:
    just_expired = token(settings, tenant, lifetime=timedelta(seconds=-5))

    body = await portal.graphql(VIEWER, token=just_expired)

    assert "errors" not in body


async def test_an_analyst_may_not_ingest(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    analyst = token(settings, tenant, Role.ANALYST, subject="ana")

    body = await portal.graphql(INGEST, {"input": {"events": [transaction_event()]}}, token=analyst)

    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert error["path"] == ["ingestEvents"]
    assert await stored_nothing(owner_engine, tenant)


@pytest.mark.parametrize("other", [Role.INGEST, Role.ADMIN])
async def test_a_regulator_s_token_never_writes_whatever_else_it_carries(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    transaction_event: Any,
    other: Role,
) -> None:
    both = token(settings, tenant, Role.REGULATOR, Role.INGEST, other, subject="bafin")

    body = await portal.graphql(INGEST, {"input": {"events": [transaction_event()]}}, token=both)

    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert await stored_nothing(owner_engine, tenant)


async def test_the_viewer_is_the_token_s_subject_tenant_and_roles(
    portal: Portal, settings: Settings, tenant: uuid.UUID
) -> None:
    analyst = token(settings, tenant, Role.ANALYST, Role.SUPERVISOR, subject="ana")

    body = await portal.graphql(VIEWER, token=analyst)

    assert body == {
        "data": {
            "viewer": {
                "subject": "ana",
                "tenantId": str(tenant),
                "roles": ["analyst", "supervisor"],
            }
        }
    }


async def test_a_tenant_s_token_never_reaches_another_tenant_s_rows(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    from adapters.tenants import create_tenant

    other = await create_tenant(owner_engine, f"t-{uuid.uuid4().hex[:12]}", "Other bank")
    event = transaction_event("shared-key")
    first = await portal.ingest([event], token=token(settings, tenant))
    conflicting = transaction_event("shared-key", amount="1.00")

    # The same key under the other tenant is a new event, not a duplicate or a conflict
    # with the first tenant's: keys, subjects and events are the other tenant's own.
    answers = [
        await portal.ingest([sent], token=token(settings, other)) for sent in (event, conflicting)
    ]

    (theirs,) = first["results"]
    (mine, my_conflict) = (answer["results"][0] for answer in answers)
    assert (mine["__typename"], mine["duplicate"]) == ("EventAccepted", False)
    assert mine["eventId"] != theirs["eventId"]
    assert my_conflict["code"] == "IDEMPOTENCY_CONFLICT"
    for owner in (tenant, other):
        assert await count_rows(owner_engine, "events", owner) == 1
        assert await count_rows(owner_engine, "audit_records", owner) == 2
    async with owner_engine.connect() as connection:
        rows = (
            await connection.execute(
                text("SELECT tenant_id, event_id FROM events WHERE tenant_id IN (:a, :b)"),
                {"a": tenant, "b": other},
            )
        ).all()
    assert {(row.tenant_id, str(row.event_id)) for row in rows} == {
        (tenant, theirs["eventId"]),
        (other, mine["eventId"]),
    }


async def test_a_token_for_an_unknown_tenant_is_forbidden(
    portal: Portal, settings: Settings, transaction_event: Any
) -> None:
    stranger = token(settings, uuid.uuid4())

    body = await portal.graphql(
        INGEST, {"input": {"events": [transaction_event()]}}, token=stranger
    )

    assert error_codes(body) == ["FORBIDDEN"]
