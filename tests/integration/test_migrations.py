"""The schema migrates up from nothing, down to nothing, and up again."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config

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
