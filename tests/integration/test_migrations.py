"""The schema migrates up from nothing, down to nothing, and up again."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

ROOT = Path(__file__).resolve().parents[2]
ADMIN_URL = os.environ.get(
    "VIGIL_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _admin(statement: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(ADMIN_URL)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


def _tables(url: str) -> set[str]:
    async def run() -> set[str]:
        connection = await asyncpg.connect(url)
        try:
            rows = await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        finally:
            await connection.close()
        return {row["tablename"] for row in rows}

    return asyncio.run(run())


def test_upgrade_downgrade_upgrade() -> None:
    name = f"vigil_migrations_{secrets.token_hex(4)}"
    _admin(f"CREATE DATABASE {name} OWNER vigil_owner")
    url = ADMIN_URL.rsplit("/", 1)[0].replace("postgres@", "vigil_owner@") + f"/{name}"
    config = Config(str(ROOT / "migrations" / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url)
    try:
        command.upgrade(config, "head")
        assert {"events", "outbox", "audit_records", "inbox"} <= _tables(url)

        command.downgrade(config, "base")
        assert _tables(url) == {"alembic_version"}

        command.upgrade(config, "head")
        assert "events" in _tables(url)
    finally:
        _admin(f"DROP DATABASE {name} WITH (FORCE)")


async def test_the_queue_tables_are_vacuumed_after_a_fixed_number_of_dead_rows(
    owner_engine: AsyncEngine,
) -> None:
    # A scale factor of zero: autovacuum visits them after 5,000 dead rows, however
    # large they have grown, instead of once a fifth of them is dead.
    async with owner_engine.connect() as connection:
        rows = (
            await connection.execute(
                text(
                    "SELECT relname, reloptions FROM pg_class"
                    " WHERE relname IN ('outbox', 'audit_pending')"
                    " AND relnamespace = 'public'::regnamespace"
                )
            )
        ).all()
    options = {row.relname: list(row.reloptions or []) for row in rows}
    for table in ("outbox", "audit_pending"):
        assert "autovacuum_vacuum_scale_factor=0" in options[table], options
        assert "autovacuum_vacuum_threshold=5000" in options[table], options


async def _documents_columns(owner_engine: AsyncEngine) -> dict[str, tuple[str, str]]:
    """The type and compression method of assessments' explanation and context."""
    async with owner_engine.connect() as connection:
        rows = (
            await connection.execute(
                text(
                    "SELECT attname, format_type(atttypid, atttypmod) AS type,"
                    " attcompression::text AS method FROM pg_attribute"
                    " WHERE attrelid = 'assessments'::regclass"
                    " AND attname IN ('explanation', 'context')"
                )
            )
        ).all()
    return {row.attname: (row.type, row.method) for row in rows}


async def test_explanations_and_contexts_are_compressed_with_lz4(
    owner_engine: AsyncEngine,
) -> None:
    # This server is built with LZ4 (as PostgreSQL's packages and images are), so the
    # migration's fallback for one without it must not have been taken.
    columns = await _documents_columns(owner_engine)
    assert {name: method for name, (_, method) in columns.items()} == {
        "explanation": "l",
        "context": "l",
    }


async def test_explanations_and_contexts_are_kept_as_the_json_text_written(
    owner_engine: AsyncEngine,
) -> None:
    # Written once and read back whole: parsing them into jsonb cost more than twice the
    # check of the text, and stored them nearly twice as large.
    columns = await _documents_columns(owner_engine)
    assert {name: kind for name, (kind, _) in columns.items()} == {
        "explanation": "json",
        "context": "json",
    }
