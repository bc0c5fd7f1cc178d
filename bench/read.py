"""The review portal under 50 concurrent clients (a real ``vigil portal`` process) beside
asyncpg reading the same data with the same statements' worth of SQL and no Vigil code.

Two reads: the review page (50 cases by priority, each with its subject and latest
assessment) and one case with its alerts and its latest assessment's explanation. The
cases are made by the real scoring service, so the explanations are real ones.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
from sqlalchemy import text
from strawberry.relay import to_base64

from adapters.auth import Role, mint_token
from adapters.cel_rules import CachedScorers
from adapters.database import make_engine, plain_url
from adapters.settings import Settings
from adapters.tenants import create_tenant
from adapters.unit_of_work import unit_of_work_factory
from domain.default_ruleset import DEFAULT_RULESET
from services.ingest import Caller, ingest_events
from services.scoring import install_ruleset, score_event

CASES = 300
CLIENTS = 50
# Small, so that a run fits a shared 2-core machine; p99 is then near the maximum.
REQUESTS_PER_CLIENT = 4
ROUNDS = 3

REVIEW_PAGE = """
query { cases(first: 50) { edges { cursor node {
  id status band priority slaDueAt alertCount
  subject { id externalRef }
  latestAssessment { id score band }
} } pageInfo { hasNextPage endCursor } } }
"""
CASE = """
query($id: ID!) { case(id: $id) {
  id status band priority slaDueAt alertCount
  subject { externalRef }
  alerts { id score typologies }
  latestAssessment { id score band explanation {
    score band alert rules { code fired points observed thresholds reason error }
  } }
} }
"""

_SET_TENANT = "SELECT set_config('vigil.tenant_id', $1, true)"
_RAW_PAGE = """
SELECT case_id, subject_id, status, band, priority, sla_due_at, alert_count
FROM cases WHERE tenant_id = $1 ORDER BY priority DESC, sla_due_at, case_id LIMIT 51
"""
_RAW_SUBJECTS = (
    "SELECT subject_id, external_ref FROM subjects WHERE tenant_id = $1 AND subject_id = ANY($2)"
)
_RAW_LATEST = """
SELECT DISTINCT ON (al.case_id) al.case_id, a.assessment_id, a.score, a.band
FROM alerts al JOIN assessments a USING (tenant_id, assessment_id)
WHERE al.tenant_id = $1 AND al.case_id = ANY($2)
ORDER BY al.case_id, a.scored_at DESC, a.assessment_id DESC
"""
_RAW_CASE = "SELECT * FROM cases WHERE tenant_id = $1 AND case_id = $2"
_RAW_ALERTS = """
SELECT alert_id, score, typologies FROM alerts WHERE tenant_id = $1 AND case_id = $2
ORDER BY created_at DESC, alert_id LIMIT 100
"""
_RAW_EXPLANATION = """
SELECT DISTINCT ON (al.case_id) a.assessment_id, a.score, a.band, a.explanation
FROM alerts al JOIN assessments a USING (tenant_id, assessment_id)
WHERE al.tenant_id = $1 AND al.case_id = $2
ORDER BY al.case_id, a.scored_at DESC, a.assessment_id DESC
"""


async def seed(settings: Settings) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A tenant of its own with :data:`CASES` cases, one alerting event each."""
    owner = make_engine(settings.owner_database_url, pool_size=1)
    engine = make_engine(settings.database_url, pool_size=4)
    try:
        tenant_id = await create_tenant(owner, f"read-{uuid.uuid4().hex[:8]}", "Read bank")
        uow_factory = unit_of_work_factory(engine)
        scorers = CachedScorers()
        await install_ruleset(
            uow_factory, scorers, tenant_id, DEFAULT_RULESET, "bench", activate=True
        )
        events = [
            {
                "idempotencyKey": f"read-{index}",
                "type": "transaction",
                "occurredAt": "2026-03-01T09:30:00+01:00",
                "data": {
                    "amount": f"{random.randint(100, 20_000)}.00",
                    "currency": "EUR",
                    "originator": {"account": f"READ{index:06d}", "country": "DE"},
                    "beneficiary": {"account": f"DEST{index:06d}", "country": "IR"},
                    "channel": "sepa",
                },
            }
            for index in range(CASES)
        ]
        caller = Caller(tenant_id, "bench", "bench", None)
        results = await ingest_events(uow_factory, caller, events)
        for result in results:
            if result.event_id is not None:
                await score_event(uow_factory, scorers, tenant_id, result.event_id)
        async with owner.connect() as connection:
            rows = await connection.execute(
                text("SELECT case_id FROM cases WHERE tenant_id = :t"), {"t": tenant_id}
            )
            case_ids = [row.case_id for row in rows]
    finally:
        await engine.dispose()
        await owner.dispose()
    return tenant_id, case_ids


async def latencies(
    read: Callable[[int], Awaitable[None]], clients: int, per_client: int
) -> list[float]:
    """Each client reads ``per_client`` times, one after another; all clients at once."""
    found: list[float] = []

    async def client(number: int) -> None:
        for request in range(per_client):
            started = time.perf_counter()
            await read(number * per_client + request)
            found.append(time.perf_counter() - started)

    await asyncio.gather(*(client(number) for number in range(clients)))
    return found


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def portal_reads(
    base_url: str, token: str, case_ids: list[uuid.UUID]
) -> dict[str, list[float]]:
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    headers = {"Authorization": f"Bearer {token}"}
    global_ids = [to_base64("Case", str(case_id)) for case_id in case_ids]
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=60
    ) as client:

        async def ask(query: str, variables: dict[str, Any]) -> None:
            response = await client.post("/graphql", json={"query": query, "variables": variables})
            body = response.json()
            if response.status_code != 200 or body.get("errors"):
                raise RuntimeError(f"read failed: {response.status_code} {body}")

        async def page(_: int) -> None:
            await ask(REVIEW_PAGE, {})

        async def case(index: int) -> None:
            await ask(CASE, {"id": global_ids[index % len(global_ids)]})

        return {
            "page": await latencies(page, CLIENTS, REQUESTS_PER_CLIENT),
            "case": await latencies(case, CLIENTS, REQUESTS_PER_CLIENT),
        }


async def raw_reads(
    dsn: str, tenant_id: uuid.UUID, case_ids: list[uuid.UUID], pool_size: int
) -> dict[str, list[float]]:
    pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)
    tenant = str(tenant_id)
    try:

        async def page(_: int) -> None:
            async with pool.acquire() as connection, connection.transaction():
                await connection.execute(_SET_TENANT, tenant)
                cases = await connection.fetch(_RAW_PAGE, tenant_id)
                subjects = [row["subject_id"] for row in cases[:50]]
                ids = [row["case_id"] for row in cases[:50]]
                await connection.fetch(_RAW_SUBJECTS, tenant_id, subjects)
                await connection.fetch(_RAW_LATEST, tenant_id, ids)

        async def case(index: int) -> None:
            case_id = case_ids[index % len(case_ids)]
            async with pool.acquire() as connection, connection.transaction():
                await connection.execute(_SET_TENANT, tenant)
                row = await connection.fetchrow(_RAW_CASE, tenant_id, case_id)
                await connection.fetch(_RAW_SUBJECTS, tenant_id, [row["subject_id"]])
                await connection.fetch(_RAW_ALERTS, tenant_id, case_id)
                latest = await connection.fetchrow(_RAW_EXPLANATION, tenant_id, case_id)
                json.loads(latest["explanation"])

        return {
            "page": await latencies(page, CLIENTS, REQUESTS_PER_CLIENT),
            "case": await latencies(case, CLIENTS, REQUESTS_PER_CLIENT),
        }
    finally:
        await pool.close()


async def compare(settings: Settings, base_url: str) -> list[list[str]]:
    """Alternate the portal and the baseline for a few rounds; report median p50 and
    p99 of each side and their ratios."""
    tenant_id, case_ids = await seed(settings)
    random.Random(7).shuffle(case_ids)
    token = mint_token(settings, subject="bench", tenant_id=tenant_id, roles=[Role.ANALYST])
    dsn = plain_url(settings.database_url)
    # The portal's pool may open pool_size + overflow connections; so may the baseline.
    pool_size = settings.database_pool_size * 2
    ours: dict[str, list[tuple[float, float]]] = {"page": [], "case": []}
    baseline: dict[str, list[tuple[float, float]]] = {"page": [], "case": []}
    for _ in range(ROUNDS):
        for side, found in (
            (ours, await portal_reads(base_url, token, case_ids)),
            (baseline, await raw_reads(dsn, tenant_id, case_ids, pool_size)),
        ):
            for what, values in found.items():
                side[what].append((percentile(values, 0.5), percentile(values, 0.99)))
    rows = []
    names = {"page": "review page (50 cases)", "case": "a case with its explanation"}
    for what, name in names.items():
        for index, label in ((0, "p50"), (1, "p99")):
            mine = [round_[index] for round_ in ours[what]]
            theirs = [round_[index] for round_ in baseline[what]]
            ratios = [a / b for a, b in zip(mine, theirs, strict=True)]
            rows.append(
                [
                    f"{name}, {CLIENTS} clients, {label}, x {ROUNDS}",
                    f"{statistics.median(mine) * 1000:,.1f} ms",
                    f"{statistics.median(theirs) * 1000:,.1f} ms",
                    f"{statistics.median(ratios):.2f}",
                ]
            )
    return rows
