"""Detection quality on the AMLSim sample bank, through the real ingest and scoring code.

``python -m bench.detection [--data DIR] [--database NAME] [--tenant SLUG]``

1. The tenant (created if needed) gets the current default ruleset as its active
   version, unless that exact document is already active.
2. Every transfer of the data is ingested with :func:`services.ingest.ingest_events`
   (batches of 1,000; a second run finds them all as duplicates).
3. Every event not yet assessed under the active version is scored with
   :func:`services.scoring.score_event`, the code a worker's job runs, in the order of
   the events' times, a few at once. Since every event is stored before any is scored
   and features are read as of each event's own time, the order of scoring changes no
   figure; it only keeps the run close to how a live stream would go.
4. The accounts with an alert under that version are compared with the accounts the
   data labels as laundering (:mod:`vigil.quality`), overall and per rule; every alert
   is checked to be explained by a fired rule concerning its own account.

It writes to the database it is given (``vigil_detect`` by default, which
``VIGIL_DATABASES=vigil_detect ./scripts/ensure-services.sh`` creates and
``vigil migrate`` brings up to date) and needs no broker, relay or worker.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.cel_rules import CachedScorers
from adapters.database import make_engine
from adapters.settings import Settings
from adapters.tenants import create_tenant, find_tenant
from adapters.unit_of_work import SqlUnitOfWork, unit_of_work_factory
from domain.canonical import digest
from domain.default_ruleset import DEFAULT_RULESET
from services.ingest import Caller, ingest_events
from services.retry import with_retries
from services.scoring import install_ruleset, score_event
from vigil import amlsim
from vigil.datasource import locate
from vigil.quality import AccountQuality, account_quality

BATCH = 1000

_UNSCORED = text("""
SELECT e.event_id FROM events e
WHERE e.tenant_id = :tenant AND e.counterparty_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM assessments a WHERE a.tenant_id = e.tenant_id
                  AND a.event_id = e.event_id AND a.ruleset_version = :version)
ORDER BY e.occurred_at, e.event_id
""")

# Each alert with the rules that fired for its own side of the transfer.
_ALERTS = text("""
SELECT s.external_ref AS account,
       (SELECT coalesce(array_agg(r->>'code'), '{}')
        FROM json_array_elements(x.explanation->'rules') r
        WHERE (r->>'fired')::boolean
          AND r->>'concerns' = CASE WHEN a.subject_id = e.subject_id
                                    THEN 'originator' ELSE 'beneficiary' END) AS rules
FROM alerts a
JOIN assessments x ON x.tenant_id = a.tenant_id AND x.assessment_id = a.assessment_id
JOIN events e ON e.tenant_id = a.tenant_id AND e.event_id = a.event_id
JOIN subjects s ON s.tenant_id = a.tenant_id AND s.subject_id = a.subject_id
WHERE a.tenant_id = :tenant AND x.ruleset_version = :version
""")


def settings_for(database: str) -> Settings:
    return Settings(
        database_url=f"postgresql://vigil_app@127.0.0.1:5432/{database}",
        owner_database_url=f"postgresql://vigil_owner@127.0.0.1:5432/{database}",
        relay_database_url=f"postgresql://vigil_relay@127.0.0.1:5432/{database}",
    )


async def tenant_with_default_ruleset(settings: Settings, engine: AsyncEngine, slug: str) -> Any:
    """The tenant's id and the version of the default ruleset active for it."""
    owner = make_engine(settings.owner_database_url, pool_size=1)
    try:
        tenant_id = await find_tenant(owner, slug) or await create_tenant(owner, slug, slug)
    finally:
        await owner.dispose()
    uow_factory, scorers = unit_of_work_factory(engine), CachedScorers()
    async with uow_factory(tenant_id) as uow:
        active = await uow.scoring.active_ruleset()
    if active is not None and active.document_hash == digest(DEFAULT_RULESET):
        return tenant_id, active.version
    version = await install_ruleset(
        uow_factory, scorers, tenant_id, DEFAULT_RULESET, "detection-bench", activate=True
    )
    return tenant_id, version


async def ingest_all(engine: AsyncEngine, tenant_id: uuid.UUID, data: Path) -> dict[str, int]:
    uow_factory = unit_of_work_factory(engine)
    caller = Caller(tenant_id, "amlsim-replay", "bench")
    counts: dict[str, int] = defaultdict(int)
    batch: list[dict[str, Any]] = []

    async def send() -> None:
        for result in await ingest_events(uow_factory, caller, batch):
            counts[result.outcome.value] += 1
        batch.clear()

    for event in amlsim.transfers(data):
        batch.append(event)
        if len(batch) == BATCH:
            await send()
    if batch:
        await send()
    return dict(counts)


async def score_all(
    engine: AsyncEngine, tenant_id: uuid.UUID, version: int, concurrency: int
) -> int:
    async with SqlUnitOfWork(engine, tenant_id) as uow:
        rows = await uow.connection.execute(_UNSCORED, {"tenant": tenant_id, "version": version})
        pending = [row.event_id for row in rows]
    uow_factory, scorers = unit_of_work_factory(engine), CachedScorers()
    queue: asyncio.Queue[uuid.UUID] = asyncio.Queue()
    for event_id in pending:
        queue.put_nowait(event_id)

    async def work() -> None:
        while not queue.empty():
            event_id = queue.get_nowait()
            # A case opened by another task for the same account is a transient failure:
            # scored again, the alert joins that case, as a worker's retry would do.
            await with_retries(
                lambda event_id=event_id: score_event(uow_factory, scorers, tenant_id, event_id),
                name="score_event",
            )

    await asyncio.gather(*(work() for _ in range(concurrency)))
    return len(pending)


async def measure(
    engine: AsyncEngine, tenant_id: uuid.UUID, version: int, data: Path
) -> tuple[AccountQuality, dict[str, AccountQuality], int]:
    """Overall quality, quality per rule (the accounts each rule flagged), and the number
    of alerts whose own side has no fired rule (which must be none)."""
    async with SqlUnitOfWork(engine, tenant_id) as uow:
        rows = (
            await uow.connection.execute(_ALERTS, {"tenant": tenant_id, "version": version})
        ).all()
    labelled = amlsim.laundering_accounts(data)
    by_rule: dict[str, set[str]] = defaultdict(set)
    unexplained = 0
    for row in rows:
        if not row.rules:
            unexplained += 1
        for code in row.rules:
            by_rule[code].add(row.account)
    overall = account_quality({row.account for row in rows}, labelled)
    per_rule = {code: account_quality(accounts, labelled) for code, accounts in by_rule.items()}
    return overall, per_rule, unexplained


def report(
    overall: AccountQuality, per_rule: Mapping[str, AccountQuality], unexplained: int
) -> list[str]:
    lines = [
        f"accounts: {overall.summary()}",
        f"alerts without a fired rule of their own side: {unexplained}",
    ]
    for code, quality in sorted(per_rule.items(), key=lambda item: -item[1].flagged):
        lines.append(
            f"  {code}: flagged {quality.flagged}, precision {quality.precision:.3f},"
            f" recall {quality.recall:.3f}"
        )
    return lines


async def run(args: argparse.Namespace) -> None:
    settings = settings_for(args.database)
    engine = make_engine(settings.database_url, pool_size=args.concurrency + 1)
    try:
        tenant_id, version = await tenant_with_default_ruleset(settings, engine, args.tenant)
        print(f"tenant {args.tenant} = {tenant_id}, default ruleset version {version}")
        started = time.perf_counter()
        counts = await ingest_all(engine, tenant_id, args.data)
        print(f"ingested {counts} in {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        scored = await score_all(engine, tenant_id, version, args.concurrency)
        elapsed = time.perf_counter() - started
        print(f"scored {scored} events in {elapsed:.0f} s")
        for line in report(*await measure(engine, tenant_id, version, args.data)):
            print(line)
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--database", default="vigil_detect")
    parser.add_argument("--tenant", default="amlsim")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    # The same search as the demo's: --data, VIGIL_DEMO_DATA, beside the repository,
    # else the verified download.
    args.data = locate(args.data)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
