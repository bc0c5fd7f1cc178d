"""``vigil``: one command, a sub-command per process and task."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from datetime import timedelta
from pathlib import Path

from adapters.logging import configure_logging
from adapters.settings import get_settings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def _migrate(args: argparse.Namespace) -> int:
    from alembic import command
    from alembic.config import Config

    config = Config(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("version_locations", str(MIGRATIONS / "versions"))
    if args.downgrade:
        command.downgrade(config, args.downgrade)
    else:
        command.upgrade(config, "head")
    return 0


def _token(args: argparse.Namespace) -> int:
    from adapters.auth import Role, mint_token

    settings = get_settings()
    roles = [Role(role) for role in args.roles.split(",") if role]
    tenant_id = uuid.UUID(args.tenant) if _is_uuid(args.tenant) else _tenant_by_slug(args.tenant)
    print(
        mint_token(
            settings,
            subject=args.subject,
            tenant_id=tenant_id,
            roles=roles,
            lifetime=timedelta(minutes=args.minutes),
        )
    )
    return 0


def _tenant(args: argparse.Namespace) -> int:
    from adapters.database import make_engine
    from adapters.tenants import create_tenant, find_tenant

    async def run() -> uuid.UUID:
        engine = make_engine(get_settings().owner_database_url, pool_size=1)
        try:
            existing = await find_tenant(engine, args.slug)
            return existing or await create_tenant(engine, args.slug, args.name or args.slug)
        finally:
            await engine.dispose()

    print(asyncio.run(run()))
    return 0


def _tenant_by_slug(slug: str) -> uuid.UUID:
    from adapters.database import make_engine
    from adapters.tenants import find_tenant

    async def run() -> uuid.UUID | None:
        engine = make_engine(get_settings().owner_database_url, pool_size=1)
        try:
            return await find_tenant(engine, slug)
        finally:
            await engine.dispose()

    tenant_id = asyncio.run(run())
    if tenant_id is None:
        raise SystemExit(f"no tenant {slug!r}: create it with 'vigil tenant {slug}'")
    return tenant_id


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _portal(args: argparse.Namespace) -> int:
    from portal.app import run

    run(host=args.host, port=args.port)
    return 0


def _relay(args: argparse.Namespace) -> int:
    from outbox.relay import run

    asyncio.run(run(get_settings()))
    return 0


def _inbound(args: argparse.Namespace) -> int:
    from workers.inbound import run

    asyncio.run(run(get_settings()))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from vigil.demo import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigil", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    portal = commands.add_parser("portal", help="serve the GraphQL API")
    portal.add_argument("--host", default=None)
    portal.add_argument("--port", type=int, default=None)
    portal.set_defaults(handler=_portal)

    commands.add_parser("inbound", help="consume the inbound event queue").set_defaults(
        handler=_inbound
    )
    commands.add_parser("relay", help="publish the outbox to RabbitMQ").set_defaults(handler=_relay)

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.add_argument("--downgrade", metavar="REVISION", help="go down to REVISION (base)")
    migrate.set_defaults(handler=_migrate)

    tenant = commands.add_parser("tenant", help="create a tenant (or print its id)")
    tenant.add_argument("slug")
    tenant.add_argument("--name")
    tenant.set_defaults(handler=_tenant)

    token = commands.add_parser("token", help="mint a bearer token for local use")
    token.add_argument("--tenant", required=True, help="tenant id or slug")
    token.add_argument("--roles", default="ingest", help="comma-separated roles")
    token.add_argument("--subject", default="local-user")
    token.add_argument("--minutes", type=int, default=480)
    token.set_defaults(handler=_token)

    demo = commands.add_parser("demo", help="start the processes and ingest sample events")
    demo.add_argument("--events", type=int, default=20)
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(get_settings().log_level)
    result = args.handler(args)
    return int(result)


if __name__ == "__main__":
    sys.exit(main())
