"""Scoring's batch reads stay probes by key whatever the table statistics say: a new tenant's
tables are read as a few rows per batch, not scanned, both before the tables were ever
analysed and when they were analysed while the tenant was still small."""

from __future__ import annotations

import re
import uuid
from typing import Any

import asyncpg
import pytest
from sqlalchemy.dialects import postgresql

from adapters.database import plain_url
from adapters.scoring_store import _ASSESSED, _LOAD_EVENTS
from adapters.settings import Settings
from domain.ids import new_id

SUBJECTS = 20_000
EVENTS = 20_000
WANTED = 13


def _explain(statement: Any, **values: Any) -> tuple[str, list[Any]]:
    """``EXPLAIN`` of a SQLAlchemy statement in asyncpg's form, with its arguments."""
    compiled = statement.compile(dialect=postgresql.asyncpg.dialect())
    return f"EXPLAIN {compiled}", [values[name] for name in compiled.positiontup]


async def _fill(
    connection: asyncpg.Connection, tenant: uuid.UUID, subjects: int, events: int
) -> None:
    await connection.execute(
        "INSERT INTO subjects (tenant_id, subject_id, kind, external_ref, attributes)"
        " SELECT $1, gen_random_uuid(), 'account', gen_random_uuid()::text, '{}'"
        " FROM generate_series(1, $2)",
        tenant,
        subjects,
    )
    await connection.execute(
        "INSERT INTO events (tenant_id, event_id, idempotency_key, event_type, occurred_at,"
        " received_at, subject_id, counterparty_id, amount, currency, payload, payload_hash,"
        " door, actor)"
        " SELECT $1, gen_random_uuid(), gen_random_uuid()::text, 'transaction', now(), now(),"
        " s.subject_id, s.subject_id, 1, 'EUR', '{}', sha256('x'::bytea), 'graphql', 'test'"
        " FROM generate_series(0, $2 - 1) AS i"
        " JOIN (SELECT subject_id, row_number() OVER () - 1 AS n FROM subjects"
        "  WHERE tenant_id = $1) AS s ON s.n = i % $3",
        tenant,
        events,
        subjects,
    )
    await connection.execute(
        "INSERT INTO assessments (tenant_id, assessment_id, event_id, ruleset_version, scorer,"
        " score, band, alert, explanation, context, scored_at)"
        " SELECT tenant_id, gen_random_uuid(), event_id, 1, 'test', 0, 'low', false, '{}',"
        " '{}', now() FROM events WHERE tenant_id = $1 ON CONFLICT DO NOTHING",
        tenant,
    )
    # Some events failed once: the failures table is not empty either.
    await connection.execute(
        "INSERT INTO scoring_failures (tenant_id, event_id, attempts, reason)"
        " SELECT tenant_id, event_id, 1, 'test' FROM events WHERE tenant_id = $1 LIMIT $2"
        " ON CONFLICT DO NOTHING",
        tenant,
        events // 10,
    )


STATEMENTS = {
    "load": (
        _LOAD_EVENTS,
        {},
        (("events", "event_id"), ("subjects", "subject_id"), ("scoring_failures", "event_id")),
    ),
    "assessed": (_ASSESSED, {"version": 1}, (("assessments", "event_id"),)),
}


@pytest.mark.parametrize("statement", sorted(STATEMENTS))
@pytest.mark.parametrize("statistics", ["never analysed", "analysed while the tenant was small"])
async def test_a_batch_is_read_by_key(settings: Settings, statistics: str, statement: str) -> None:
    sql, values, probes = STATEMENTS[statement]
    connection = await asyncpg.connect(plain_url(settings.owner_database_url))
    tenant = new_id()
    try:
        async with connection.transaction():
            # Temporary tables of the same shape hide the real ones within this session.
            for table in ("subjects", "events", "scoring_failures", "assessments"):
                await connection.execute(
                    f"CREATE TEMPORARY TABLE {table} (LIKE public.{table} INCLUDING ALL)"
                    " ON COMMIT DROP"
                )
            if statistics != "never analysed":
                # Another tenant fills the statistics; this one has a few rows so far.
                await _fill(connection, new_id(), SUBJECTS, EVENTS)
                await _fill(connection, tenant, 200, 60)
                await connection.execute("ANALYZE subjects, events, scoring_failures, assessments")
            await _fill(connection, tenant, SUBJECTS, EVENTS)
            wanted = [
                row["event_id"]
                for row in await connection.fetch(
                    "SELECT event_id FROM events WHERE tenant_id = $1 LIMIT $2", tenant, WANTED
                )
            ]
            explain, arguments = _explain(sql, tenant_id=tenant, event_ids=wanted, **values)
            plan = await connection.fetch(explain, *arguments)
    finally:
        await connection.close()
    lines = "\n".join(line for (line,) in plan).lower()
    assert "hash join" not in lines, lines
    assert "seq scan" not in lines, lines
    # Every read of a table is an index probe by its whole key.
    for table, key in probes:
        scans = re.findall(
            rf"scan(?: using \w+)? on {table} \w+[^\n]*\n\s+index cond: \(([^\n]*)", lines
        )
        assert scans, lines
        assert all(key in condition for condition in scans), lines
