"""``vigil``: one command, a sub-command per process and task."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any

import uvloop

from adapters.logging import configure_logging
from adapters.runtime import settle_garbage_collector
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


SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema.graphql"


def _schema(args: argparse.Namespace) -> int:
    from portal.schema_file import breaking_changes, current_sdl, dangerous_changes

    path = Path(args.file)
    current = current_sdl()
    if args.action == "export":
        path.write_text(current, encoding="utf-8")
        print(f"wrote {path}")
        return 0
    committed = path.read_text(encoding="utf-8")
    for danger in dangerous_changes(committed, current):
        print(f"dangerous: {danger.type.name}: {danger.description}")
    breaking = breaking_changes(committed, current)
    for change in breaking:
        print(f"breaking: {change.type.name}: {change.description}", file=sys.stderr)
    if breaking:
        return 1
    if committed != current:
        print(f"{path} is out of date: run 'vigil schema export'", file=sys.stderr)
        return 1
    print(f"{path} matches the code")
    return 0


def _token(args: argparse.Namespace) -> int:
    from adapters.auth import Role, mint_token

    settings = get_settings()
    known = ", ".join(role.value for role in Role)
    try:
        roles = [Role(role.strip()) for role in args.roles.split(",") if role.strip()]
    except ValueError:
        raise SystemExit(
            f"vigil token: unknown role in {args.roles!r}; choose from {known}"
        ) from None
    tenant_id = uuid.UUID(args.tenant) if _is_uuid(args.tenant) else _tenant_by_slug(args.tenant)
    try:
        token = mint_token(
            settings,
            subject=args.subject,
            tenant_id=tenant_id,
            roles=roles,
            lifetime=timedelta(minutes=args.minutes),
        )
    except ValueError as error:
        raise SystemExit(f"vigil token: {error}") from error
    print(token)
    return 0


def _tenant(args: argparse.Namespace) -> int:
    from vigil.provisioning import provision_tenant

    print(asyncio.run(provision_tenant(get_settings(), args.slug, args.name or args.slug)))
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


def _tenant_id(value: str) -> uuid.UUID:
    """A tenant named by its id or its slug."""
    return uuid.UUID(value) if _is_uuid(value) else _tenant_by_slug(value)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _portal(args: argparse.Namespace) -> int:
    from portal.app import run

    run(host=args.host, port=args.port, workers=args.workers)
    return 0


def _serve(main: Coroutine[Any, Any, None]) -> None:
    """Run a long-lived process on uvloop, the event loop the portal's server runs on
    too: the relay, the consumers and the workers spend much of their time in the loop's
    own socket and callback handling, which uvloop does in C. What the process holds
    once its modules are loaded is set aside from the garbage collector, as the portal
    does (:mod:`adapters.runtime`)."""
    settle_garbage_collector()
    uvloop.run(main)


def _relay(args: argparse.Namespace) -> int:
    from outbox.relay import run

    _serve(run(get_settings()))
    return 0


def _inbound(args: argparse.Namespace) -> int:
    from workers.inbound import run

    _serve(run(get_settings()))
    return 0


def _dispatcher(args: argparse.Namespace) -> int:
    from workers.dispatcher import run

    _serve(run(get_settings()))
    return 0


def _worker(args: argparse.Namespace) -> int:
    from workers.scoring import run

    _serve(run(get_settings()))
    return 0


def _ruleset(args: argparse.Namespace) -> int:
    from domain.default_ruleset import DEFAULT_RULESET
    from domain.rules import InvalidRuleset
    from services.scoring import install_ruleset
    from vigil.provisioning import with_rulesets

    tenant_id = _tenant_id(args.tenant)
    if args.file is None:
        document = DEFAULT_RULESET
    else:
        try:
            document = json.loads(args.file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise SystemExit(f"cannot read {args.file}: {error}") from None

    async def install(uow_factory: Any, scorers: Any) -> int:
        return await install_ruleset(
            uow_factory, scorers, tenant_id, document, args.actor, activate=args.activate
        )

    try:
        version = asyncio.run(with_rulesets(get_settings(), install))
    except InvalidRuleset as error:
        print(f"the ruleset is not valid: {error}", file=sys.stderr)
        return 2
    state = "active" if args.activate else "validated, not active"
    print(f"ruleset version {version} installed ({state})")
    return 0


def _case_policy(args: argparse.Namespace) -> int:
    from adapters.unit_of_work import unit_of_work_factory
    from domain.errors import InvalidCaseInput
    from services.cases import set_case_policy

    tenant_id = _tenant_id(args.tenant)
    try:
        document = json.loads(args.file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SystemExit(f"cannot read {args.file}: {error}") from None
    if not isinstance(document, dict):
        raise SystemExit(f"{args.file} does not hold a JSON object")

    async def run() -> None:
        async with _scoring_resources() as (engine, _):
            await set_case_policy(unit_of_work_factory(engine), tenant_id, document, args.actor)

    try:
        asyncio.run(run())
    except InvalidCaseInput as error:
        print(f"the case policy is not valid: {error.field}: {error.message}", file=sys.stderr)
        return 2
    print("case policy set")
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    from workers.reconciler import Reconciler

    settings = get_settings()
    if args.deadline is not None:
        settings = settings.model_copy(update={"reconcile_deadline_seconds": args.deadline})
    tenant_id = _tenant_id(args.tenant) if args.tenant else None

    async def run() -> int:
        async with _scoring_resources() as (engine, redis):
            return await Reconciler.from_settings(settings, engine, redis).run_once(tenant_id)

    print(f"{asyncio.run(run())} events enqueued again")
    return 0


def _sla(args: argparse.Namespace) -> int:
    from workers.sla_sweeper import SlaSweeper

    settings = get_settings()
    tenant_id = _tenant_id(args.tenant) if args.tenant else None

    async def run() -> int:
        async with _scoring_resources() as (engine, _):
            return await SlaSweeper.from_settings(settings, engine).run_once(tenant_id)

    print(f"{asyncio.run(run())} cases flagged as past their SLA")
    return 0


def _failures(args: argparse.Namespace) -> int:
    from workers.reconciler import list_failures

    tenant_id = _tenant_id(args.tenant)

    async def run() -> list[Any]:
        async with _scoring_resources() as (engine, _):
            return await list_failures(engine, tenant_id, max_rows=args.limit)

    failures = asyncio.run(run())
    for failure in failures:
        when = failure.failed_at.isoformat(timespec="seconds")
        print(f"{failure.event_id}\t{failure.attempts}\t{when}\t{failure.reason}")
    return 0


def _redrive(args: argparse.Namespace) -> int:
    from workers.reconciler import redrive

    tenant_id = _tenant_id(args.tenant)
    event_id = uuid.UUID(args.event) if args.event else None

    async def run() -> list[uuid.UUID]:
        async with _scoring_resources() as (engine, redis):
            return await redrive(engine, redis, tenant_id, actor=args.actor, event_id=event_id)

    try:
        events = asyncio.run(run())
    except LookupError as error:
        print(str(error), file=sys.stderr)
        return 2
    print(f"{len(events)} events enqueued again")
    return 0


@contextlib.asynccontextmanager
async def _scoring_resources() -> AsyncIterator[tuple[Any, Any]]:
    """The application role's engine and a client of the score queue."""
    from adapters.database import make_engine
    from adapters.score_queue import connect

    settings = get_settings()
    engine = make_engine(settings.database_url, pool_size=2)
    redis = connect(settings)
    try:
        yield engine, redis
    finally:
        await redis.aclose(close_connection_pool=True)
        await engine.dispose()


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return number


def _demo(args: argparse.Namespace) -> int:
    from vigil.demo import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigil", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    portal = commands.add_parser("portal", help="serve the GraphQL API")
    portal.add_argument("--host", default=None)
    portal.add_argument("--port", type=int, default=None)
    portal.add_argument(
        "--workers", type=int, default=None, help="worker processes (VIGIL_PORTAL_WORKERS)"
    )
    portal.set_defaults(handler=_portal)

    commands.add_parser("inbound", help="consume the inbound event queue").set_defaults(
        handler=_inbound
    )
    commands.add_parser("relay", help="publish the outbox to RabbitMQ").set_defaults(handler=_relay)
    commands.add_parser(
        "dispatcher", help="turn event.received messages into score jobs, and reconcile"
    ).set_defaults(handler=_dispatcher)
    commands.add_parser("worker", help="score events (the arq worker)").set_defaults(
        handler=_worker
    )

    reconcile = commands.add_parser(
        "reconcile", help="enqueue again the accepted events still unassessed (one pass)"
    )
    reconcile.add_argument("--tenant", help="tenant id or slug (default: every tenant)")
    reconcile.add_argument(
        "--deadline",
        type=float,
        metavar="SECONDS",
        help="take events accepted this long ago or more (default: the setting)",
    )
    reconcile.set_defaults(handler=_reconcile)

    sla = commands.add_parser(
        "sla", help="flag the cases past their SLA and emit case.sla_breached (one pass)"
    )
    sla.add_argument("--tenant", help="tenant id or slug (default: every tenant)")
    sla.set_defaults(handler=_sla)

    failures = commands.add_parser("failures", help="list a tenant's events that failed scoring")
    failures.add_argument("tenant", help="tenant id or slug")
    failures.add_argument("--limit", type=int, default=1000)
    failures.set_defaults(handler=_failures)

    redrive = commands.add_parser(
        "redrive", help="score a tenant's failed events (or one event) again, once fixed"
    )
    redrive.add_argument("tenant", help="tenant id or slug")
    redrive.add_argument("--event", help="only this event id (failed or not)")
    redrive.add_argument("--actor", default="operator", help="who asks, for the audit trail")
    redrive.set_defaults(handler=_redrive)

    ruleset = commands.add_parser(
        "ruleset", help="install a ruleset version for a tenant (the default, or a file)"
    )
    ruleset.add_argument("tenant", help="tenant id or slug")
    ruleset.add_argument("--file", type=Path, help="a ruleset document in JSON")
    ruleset.add_argument("--activate", action="store_true", help="make it the active version")
    ruleset.add_argument("--actor", default="operator", help="who installs, for the audit trail")
    ruleset.set_defaults(handler=_ruleset)

    case_policy = commands.add_parser(
        "case-policy", help="set a tenant's case policy (SLA hours, queues, closing alone)"
    )
    case_policy.add_argument("tenant", help="tenant id or slug")
    case_policy.add_argument("file", type=Path, help="the policy document in JSON")
    case_policy.add_argument("--actor", default="operator", help="who sets it, for the audit trail")
    case_policy.set_defaults(handler=_case_policy)

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.add_argument("--downgrade", metavar="REVISION", help="go down to REVISION (base)")
    migrate.set_defaults(handler=_migrate)

    tenant = commands.add_parser("tenant", help="create a tenant (or print its id)")
    tenant.add_argument("slug")
    tenant.add_argument("--name")
    tenant.set_defaults(handler=_tenant)

    schema = commands.add_parser(
        "schema", help="write the GraphQL schema to a file, or check the file against the code"
    )
    schema.add_argument("action", choices=("export", "check"))
    schema.add_argument("--file", default=str(SCHEMA_FILE), help="default: schema.graphql")
    schema.set_defaults(handler=_schema)

    token = commands.add_parser("token", help="mint a bearer token for local use")
    token.add_argument("--tenant", required=True, help="tenant id or slug")
    token.add_argument("--roles", default="ingest", help="comma-separated roles")
    token.add_argument("--subject", default="local-user")
    token.add_argument("--minutes", type=int, default=480)
    token.set_defaults(handler=_token)

    demo = commands.add_parser("demo", help="replay the labelled sample bank and report")
    demo.add_argument(
        "--data", type=Path, default=None, help="the AMLSim data folder (or VIGIL_DEMO_DATA)"
    )
    demo.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="where a downloaded sample is kept (or VIGIL_DEMO_CACHE; default .cache/amlsim)",
    )
    demo.add_argument(
        "--limit", type=_positive, default=None, help="replay only the first N transfers"
    )
    demo.add_argument("--workers", type=_positive, default=2, help="scoring worker processes")
    demo.add_argument("--batch", type=_positive, default=500, help="events per GraphQL batch")
    demo.add_argument("--senders", type=_positive, default=2, help="GraphQL requests at once")
    demo.add_argument("--report-json", type=Path, default=None, help="also write the report")
    demo.add_argument("--keep-running", action="store_true", help="leave the processes up")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(get_settings().log_level)
    result = args.handler(args)
    return int(result)


if __name__ == "__main__":
    sys.exit(main())
