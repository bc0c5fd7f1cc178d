"""Setting up a tenant as an operator would: the tenant, then its default ruleset."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from adapters.cel_rules import CachedScorers
from adapters.database import make_engine
from adapters.settings import Settings
from adapters.tenants import create_tenant, find_tenant
from adapters.unit_of_work import unit_of_work_factory
from domain.default_ruleset import DEFAULT_RULESET
from services.scoring import install_ruleset


async def provision_tenant(settings: Settings, slug: str, name: str) -> uuid.UUID:
    """The tenant's id, creating it if needed; a tenant without any ruleset gets the
    default one, active, so that its events are scored from the start."""
    engine = make_engine(settings.owner_database_url, pool_size=1)
    try:
        tenant_id = await find_tenant(engine, slug) or await create_tenant(engine, slug, name)
    finally:
        await engine.dispose()
    await install_default_ruleset(settings, tenant_id)
    return tenant_id


async def install_default_ruleset(settings: Settings, tenant_id: uuid.UUID) -> None:
    async def install(uow_factory: Any, scorers: CachedScorers) -> None:
        async with uow_factory(tenant_id) as uow:
            if await uow.scoring.latest_version() > 0:
                return
        _ = await install_ruleset(
            uow_factory, scorers, tenant_id, DEFAULT_RULESET, "operator", activate=True
        )

    await with_rulesets(settings, install)


async def with_rulesets(
    settings: Settings, operation: Callable[[Any, CachedScorers], Awaitable[Any]]
) -> Any:
    """Run ``operation(uow_factory, scorers)`` with the application role's engine."""
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        return await operation(unit_of_work_factory(engine), CachedScorers())
    finally:
        await engine.dispose()
