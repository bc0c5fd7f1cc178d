"""The portal as HTTP: what it refuses, its probes and metrics, its configuration."""

from __future__ import annotations

import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.settings import Settings
from portal.app import InsecureSettings, create_app
from tests.integration.portal_support import (
    INGEST,
    VIEWER,
    Portal,
    error_codes,
    open_portal,
    stored_nothing,
    token,
)

INTROSPECTION = "{ __schema { queryType { name } } }"


@pytest.fixture
async def portal(settings: Settings) -> AsyncIterator[Portal]:
    async with open_portal(settings) as client:
        yield client


def _production(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "environment": "production",
            "jwt_secret": SecretStr("p" * 48),
            "jwt_issuer": "https://idp.bank.example",
            "jwt_audience": "vigil-api",
        }
    )


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# -- what the GraphQL endpoint refuses, never with a 500 -------------------------------


async def test_a_mutation_over_get_is_refused(
    portal: Portal, settings: Settings, tenant: uuid.UUID, owner_engine: AsyncEngine
) -> None:
    mutation = "mutation { ingestEvents(input: {events: []}) { acceptedCount } }"
    bearer = {"Authorization": f"Bearer {token(settings, tenant)}"}

    refused = [
        await portal.client.get("/graphql", params={"query": query}, headers=bearer)
        for query in (mutation, VIEWER)
    ]

    assert [response.status_code for response in refused] == [400, 400]
    assert "mutations are not allowed" in refused[0].text
    assert "queries are not allowed" in refused[1].text
    assert await stored_nothing(owner_engine, tenant)


async def test_a_batched_body_is_refused(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    operation = {"query": INGEST, "variables": {"input": {"events": [transaction_event()]}}}

    response = await portal.post([operation, operation], token=token(settings, tenant))

    assert response.status_code == 400
    assert "Batching is not enabled" in response.text
    assert await stored_nothing(owner_engine, tenant)


async def test_a_body_that_is_not_json_is_refused(
    portal: Portal, settings: Settings, tenant: uuid.UUID
) -> None:
    bearer = {"Authorization": f"Bearer {token(settings, tenant)}"}

    form = await portal.client.post("/graphql", data={"query": VIEWER}, headers=bearer)
    broken = await portal.client.post(
        "/graphql", content=b"{", headers={**bearer, "Content-Type": "application/json"}
    )

    assert (form.status_code, broken.status_code) == (400, 400)


def _with_reference(raw_json: str) -> bytes:
    """An ingest request whose one event's reference is ``raw_json`` spliced in as is."""
    body = json.dumps(
        {
            "query": INGEST,
            "variables": {"input": {"events": [_EVENT | {"data": {"reference": "@@"}}]}},
        }
    )
    return body.replace('"@@"', raw_json).encode()


_EVENT: dict[str, Any] = {
    "idempotencyKey": "k-odd-body",
    "type": "transaction",
    "occurredAt": "2026-03-01T09:30:00Z",
}

ODD_BODIES = [
    ("nested 3,000 deep", _with_reference("[" * 3000 + "]" * 3000)),
    ("nested 900 deep", _with_reference("[" * 900 + "]" * 900)),
    ("nested 40 deep", _with_reference('{"a":' * 40 + "1" + "}" * 40)),
    ("a 5,000-digit integer", _with_reference("9" * 5000)),
    ("NaN", _with_reference("NaN")),
    ("not UTF-8", _with_reference('"not-utf-8"').replace(b"not-utf-8", b"\xff")),
    # Which amount is meant? Another reader of the same body may take the first.
    (
        "a key twice in one object",
        _with_reference('"x"').replace(
            b'"type": "transaction"', b'"type": "transaction", "type": "kyc.updated"'
        ),
    ),
]


@pytest.mark.parametrize("body", [pytest.param(body, id=name) for name, body in ODD_BODIES])
@pytest.mark.parametrize("with_token", [True, False], ids=["token", "no token"])
async def test_a_body_json_cannot_read_safely_is_a_bad_request_not_a_500(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    with_token: bool,
) -> None:
    headers = {"Content-Type": "application/json"}
    if with_token:
        headers["Authorization"] = f"Bearer {token(settings, tenant)}"

    response = await portal.client.post("/graphql", content=body, headers=headers)

    assert response.status_code == 400, response.text
    assert "Traceback" not in response.text
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert await stored_nothing(owner_engine, tenant)


async def test_a_body_nested_within_the_limit_reaches_graphql(
    portal: Portal, settings: Settings, tenant: uuid.UUID
) -> None:
    body = {"query": VIEWER, "variables": {"unused": [[[[[[[[[[1]]]]]]]]]]}, "extensions": {}}

    response = await portal.post(body, token=token(settings, tenant))

    assert response.status_code == 200, response.text
    assert response.json()["data"]["viewer"]["tenantId"] == str(tenant)


async def test_an_oversized_body_is_413(
    settings: Settings, tenant: uuid.UUID, owner_engine: AsyncEngine, transaction_event: Any
) -> None:
    small = settings.model_copy(update={"max_body_bytes": 4096})
    events = [transaction_event() for _ in range(20)]
    body = {"query": INGEST, "variables": {"input": {"events": events}}}

    async with open_portal(small) as portal:
        announced = await portal.post(body, token=token(small, tenant))

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 1024

        streamed = await portal.client.post(
            "/graphql",
            content=chunks(),
            headers={
                "Authorization": f"Bearer {token(small, tenant)}",
                "Content-Type": "application/json",
            },
        )

    assert announced.status_code == 413, announced.text
    assert streamed.status_code == 413, streamed.text
    assert await stored_nothing(owner_engine, tenant)


async def test_introspection_is_refused_in_production_only(
    portal: Portal, settings: Settings, tenant: uuid.UUID
) -> None:
    production = _production(settings)

    allowed = await portal.graphql(INTROSPECTION, token=token(settings, tenant))
    async with open_portal(production) as strict:
        refused = await strict.graphql(INTROSPECTION, token=token(production, tenant))
        viewer = await strict.graphql(VIEWER, token=token(production, tenant))

    assert allowed["data"]["__schema"]["queryType"]["name"] == "Query"
    assert refused["data"] is None
    assert set(error_codes(refused)) == {"BAD_REQUEST"}
    assert "introspection" in refused["errors"][0]["message"]
    assert viewer["data"]["viewer"]["tenantId"] == str(tenant)


@pytest.mark.parametrize(("environment", "status"), [("development", 200), ("test", 404)])
async def test_graphiql_is_served_in_development_only(
    settings: Settings, environment: str, status: int
) -> None:
    async with open_portal(settings.model_copy(update={"environment": environment})) as portal:
        response = await portal.client.get("/graphql", headers={"Accept": "text/html"})

    assert response.status_code == status
    if status == 200:
        assert "graphiql" in response.text.lower()


def test_production_refuses_the_default_or_a_short_secret(settings: Settings) -> None:
    default = Settings.model_fields["jwt_secret"].get_default()

    for secret in (default, SecretStr("short-but-not-default")):
        with pytest.raises(InsecureSettings):
            create_app(_production(settings).model_copy(update={"jwt_secret": secret}))
    create_app(_production(settings))


async def test_an_internal_error_is_masked_and_logged_without_values(
    settings: Settings,
    tenant: uuid.UUID,
    transaction_event: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The relay's role may not read events: a misconfiguration the client must not see.
    misconfigured = settings.model_copy(update={"database_url": settings.relay_database_url})
    key = f"secret-{uuid.uuid4().hex}"

    async with open_portal(misconfigured) as portal:
        body = await portal.graphql(
            INGEST,
            {"input": {"events": [transaction_event(key)]}},
            token=token(settings, tenant),
        )

    assert body["data"] is None
    (error,) = body["errors"]
    assert error["message"] == "internal error"
    assert error["extensions"] == {"code": "INTERNAL"}
    assert "permission" not in str(body)
    (record,) = [r for r in caplog.records if r.name == "portal.errors"]
    assert record.levelno == logging.ERROR
    assert "permission denied" in caplog.text
    assert key not in caplog.text


async def test_a_database_outage_is_unavailable_not_internal(
    settings: Settings, tenant: uuid.UUID, transaction_event: Any
) -> None:
    port = _closed_port()
    down = settings.model_copy(
        update={"database_url": f"postgresql://vigil_app@127.0.0.1:{port}/vigil"}
    )

    async with open_portal(down) as portal:
        body = await portal.graphql(
            INGEST, {"input": {"events": [transaction_event()]}}, token=token(settings, tenant)
        )

    assert body["data"] is None
    assert error_codes(body) == ["UNAVAILABLE"]
    assert str(port) not in str(body)


# -- probes and metrics: no token needed -----------------------------------------------


async def test_liveness_answers_without_a_token(portal: Portal) -> None:
    response = await portal.client.get("/health/live")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readiness_checks_every_dependency(portal: Portal) -> None:
    response = await portal.client.get("/health/ready")

    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ok",
        "checks": {"postgres": "ok", "redis": "ok", "rabbitmq": "ok"},
    }


@pytest.mark.parametrize(
    ("dependency", "setting", "url"),
    [
        ("postgres", "database_url", "postgresql://vigil_app@127.0.0.1:{port}/vigil"),
        ("redis", "redis_url", "redis://127.0.0.1:{port}/0"),
        ("rabbitmq", "amqp_url", "amqp://guest:guest@127.0.0.1:{port}/"),
    ],
)
async def test_readiness_fails_when_one_dependency_is_down(
    settings: Settings, dependency: str, setting: str, url: str
) -> None:
    value: object = url.format(port=_closed_port())
    if setting == "amqp_url":
        value = SecretStr(str(value))
    broken = settings.model_copy(update={setting: value})

    async with open_portal(broken) as portal:
        response = await portal.client.get("/health/ready")

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks.pop(dependency) in {"failed", "timeout"}
    assert set(checks.values()) == {"ok"}
    assert "guest" not in response.text


async def test_metrics_show_ingestion_and_the_outbox_backlog(
    portal: Portal, settings: Settings, tenant: uuid.UUID, transaction_event: Any
) -> None:
    await portal.ingest([transaction_event()], token=token(settings, tenant))

    response = await portal.client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    accepted = ("vigil_events_ingested_total", (("door", "graphql"), ("outcome", "accepted")))
    assert samples[accepted] >= 1
    # Nothing relays this database's outbox during the tests, so the event just
    # ingested is still pending.
    assert samples[("vigil_outbox_pending", ())] >= 1
    assert samples[("vigil_outbox_oldest_pending_seconds", ())] >= 0
    assert ("vigil_outbox_parked", ()) in samples
