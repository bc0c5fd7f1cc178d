"""History features: the cost per event with the events table at 100,000 and at
1,000,000 rows, beside a raw single-index lookup run on the same events.

The bank is the AMLSim sample (20,000 accounts, 120,558 transfers over 149 days),
replayed in order until the stream is long enough and spread evenly over one year, so
each account keeps the same pace of activity while the table grows: history piles up,
as it does in production. AMLSim's values run from 2.51 to 599.91 in an unnamed
currency; here one transfer in ten is scaled up tenfold and one in fifty a hundredfold,
and one in thirty is in USD, so that sums, the near-threshold band and the currency
filter see some spread.

Rows are written with COPY as the owner role into a tenant of its own, in the database
that the settings name (``vigil`` by default; ``make bench`` passes its own), and deleted
again at the end. Features are
read as the scoring worker reads them: through the scoring store, as the application
role, under row-level security. Three samples of events are timed:

- ``frontier@100k``: the newest events when the table holds 100,000 rows;
- ``same@1M``: the same events again at 1,000,000 rows, whose features must not change
  (everything later lies outside their windows);
- ``frontier@1M``: the newest events at 1,000,000 rows.

Run alone with ``python -m bench.features``; ``--keep`` leaves the rows in place.
:func:`compare` gives the rows of ``make bench``'s table.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.database import make_engine, plain_url
from adapters.settings import Settings, get_settings
from adapters.tenants import create_tenant, find_tenant
from adapters.unit_of_work import SqlUnitOfWork
from domain.ids import new_id
from domain.rules import Band, Ruleset
from domain.scoring import Features
from vigil.amlsim import account
from vigil.datasource import locate

SIZES = (100_000, 1_000_000)
SAMPLE = 500
WARM_UP = 50
SLUG = "bench-features"
START = datetime(2025, 1, 1, tzinfo=UTC)
YEAR = timedelta(days=365)
CHANNELS = ("sepa", "sepa", "sepa", "instant", "wire", "card")
RULESET = Ruleset(
    name="bench",
    alert_threshold=50,
    bands={Band.LOW: 0, Band.MEDIUM: 25, Band.HIGH: 50, Band.CRITICAL: 75},
    rules=(),
)

EVENT_COLUMNS = (
    "tenant_id",
    "event_id",
    "idempotency_key",
    "event_type",
    "occurred_at",
    "received_at",
    "subject_id",
    "counterparty_id",
    "amount",
    "currency",
    "payload",
    "payload_hash",
    "door",
    "actor",
)
# The raw baseline: one range scan of one index, the originator's longest window (90 days).
_BASELINE = """
SELECT count(*) FROM events
WHERE tenant_id = $1 AND subject_id = $2 AND occurred_at > $3 AND occurred_at <= $4
"""
# How PostgreSQL planned the features statement on the store's connection: a generic
# plan is made once; a custom plan is made again for every execution.
_PLANS = """
SELECT coalesce(sum(generic_plans), 0) AS generic, coalesce(sum(custom_plans), 0) AS custom
FROM pg_prepared_statements
WHERE statement LIKE '%AS out_window%' AND statement NOT LIKE '%pg_prepared_statements%'
"""


@dataclass(frozen=True, slots=True)
class Transfer:
    event_id: uuid.UUID
    subject_id: uuid.UUID
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class Timing:
    label: str
    features_ms: list[float]
    baseline_ms: list[float]
    window_rows: float  # transfers in the 90-day windows of both accounts, on average
    generic_plans: int
    custom_plans: int

    def row(self) -> list[float]:
        return [*_summary(self.features_ms), *_summary(self.baseline_ms)]


def _summary(samples: Sequence[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99, statistics.fmean(ordered)


# -- the bank ----------------------------------------------------------------------------


def amlsim_transfers() -> list[tuple[int, int, Decimal]]:
    with (locate(None) / "transactions.csv").open(newline="") as handle:
        return [
            (int(row["sourceNodeId"]), int(row["targetNodeId"]), Decimal(row["value"]))
            for row in csv.DictReader(handle)
        ]


def event_rows(
    tenant_id: uuid.UUID,
    accounts: dict[int, uuid.UUID],
    source: list[tuple[int, int, Decimal]],
    first: int,
    last: int,
    total: int,
    log: list[Transfer],
) -> Iterator[tuple[Any, ...]]:
    """Rows ``first`` to ``last`` of a stream of ``total`` transfers spread over a year;
    each row's seed is its position, so a row is the same whichever run writes it."""
    spacing = YEAR / total
    received = datetime.now(UTC)
    for index in range(first, last):
        rng = random.Random(index)
        origin, target, value = source[index % len(source)]
        scale = rng.random()
        factor = 100 if scale < 0.02 else 10 if scale < 0.1 else 1
        amount = (value * factor).quantize(Decimal("0.01"))
        currency = "USD" if rng.random() < 1 / 30 else "EUR"
        at = START + spacing * (index + rng.random())
        payload = {
            "type": "transaction",
            "occurredAt": at.isoformat(),
            "data": {
                "amount": str(amount),
                "currency": currency,
                "originator": {"account": account(str(origin)), "country": "NL"},
                "beneficiary": {"account": account(str(target)), "country": "NL"},
                "channel": rng.choice(CHANNELS),
                "reference": None,
            },
        }
        body = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        event_id = new_id()
        log.append(Transfer(event_id, accounts[origin], at))
        yield (
            tenant_id,
            event_id,
            f"bench-{index}",
            "transaction",
            at,
            received,
            accounts[origin],
            accounts[target],
            amount,
            currency,
            body,
            hashlib.sha256(body.encode()).digest(),
            "bench",
            "bench",
        )


async def clean(connection: asyncpg.Connection, tenant_id: uuid.UUID) -> None:
    for table in ("alerts", "cases", "assessments", "scoring_failures", "events", "subjects"):
        await connection.execute(f"DELETE FROM {table} WHERE tenant_id = $1", tenant_id)
    await connection.execute("VACUUM ANALYZE events")


async def load_subjects(
    connection: asyncpg.Connection, tenant_id: uuid.UUID
) -> dict[int, uuid.UUID]:
    accounts = {node: new_id() for node in range(20_000)}
    now = datetime.now(UTC)
    await connection.copy_records_to_table(
        "subjects",
        columns=(
            "tenant_id",
            "subject_id",
            "kind",
            "external_ref",
            "attributes",
            "created_at",
            "updated_at",
        ),
        records=[
            (tenant_id, subject_id, "account", account(str(node)), '{"country": "NL"}', now, now)
            for node, subject_id in accounts.items()
        ],
    )
    return accounts


async def load_events(
    connection: asyncpg.Connection,
    tenant_id: uuid.UUID,
    accounts: dict[int, uuid.UUID],
    source: list[tuple[int, int, Decimal]],
    first: int,
    last: int,
    total: int,
    log: list[Transfer],
) -> float:
    """COPY rows ``first`` to ``last`` in chunks; then VACUUM ANALYZE, as autovacuum would
    in time, so that the planner has statistics and the visibility map is set."""
    started = time.perf_counter()
    for start in range(first, last, 50_000):
        stop = min(last, start + 50_000)
        await connection.copy_records_to_table(
            "events",
            columns=EVENT_COLUMNS,
            records=list(event_rows(tenant_id, accounts, source, start, stop, total, log)),
        )
    await connection.execute("VACUUM ANALYZE events")
    return time.perf_counter() - started


# -- measuring ---------------------------------------------------------------------------


async def time_features(
    engine: AsyncEngine,
    app: asyncpg.Connection,
    tenant_id: uuid.UUID,
    sample: list[Transfer],
    label: str,
) -> tuple[Timing, list[tuple[Features, Features]]]:
    """Each event's features through the store, then the baseline lookup, one event at a
    time, so that both see the same moments of a busy machine."""
    features_ms, baseline_ms, results = [], [], []
    async with SqlUnitOfWork(engine, tenant_id) as uow, app.transaction():
        await app.execute("SELECT set_config('vigil.tenant_id', $1, true)", str(tenant_id))
        before = (await uow.connection.execute(text(_PLANS))).one()
        for transfer in sample:
            event = await uow.scoring.load_event(transfer.event_id)
            assert event is not None
            started = time.perf_counter()
            result = await uow.scoring.features(event, RULESET)
            features_ms.append((time.perf_counter() - started) * 1000)
            results.append(result)

            since = transfer.occurred_at - timedelta(days=90)
            started = time.perf_counter()
            await app.fetchval(
                _BASELINE, tenant_id, transfer.subject_id, since, transfer.occurred_at
            )
            baseline_ms.append((time.perf_counter() - started) * 1000)
        after = (await uow.connection.execute(text(_PLANS))).one()
    window_rows = statistics.fmean(
        party.values["out_count_90d"] + party.values["in_count_90d"]
        for pair in results
        for party in pair
    )
    timing = Timing(
        label,
        features_ms,
        baseline_ms,
        window_rows,
        after.generic - before.generic,
        after.custom - before.custom,
    )
    return timing, results


def frontier(log: list[Transfer], count: int, seed: int) -> list[Transfer]:
    """``count`` events drawn from the newest 2% of those written so far."""
    newest = log[-max(count * 2, len(log) // 50) :]
    return random.Random(seed).sample(newest, count)


async def run(
    settings: Settings, sizes: Sequence[int] = SIZES, sample: int = SAMPLE, *, keep: bool = False
) -> list[Timing]:
    """Fill the table size by size, and time the samples at each size."""
    owner_engine = make_engine(settings.owner_database_url, pool_size=1)
    engine = make_engine(settings.database_url, pool_size=2, application_name="vigil-bench")
    owner = await asyncpg.connect(plain_url(settings.owner_database_url))
    app = await asyncpg.connect(plain_url(settings.database_url))
    try:
        tenant_id = await find_tenant(owner_engine, SLUG) or await create_tenant(
            owner_engine, SLUG, "Features benchmark"
        )
        await clean(owner, tenant_id)
        source = amlsim_transfers()
        accounts = await load_subjects(owner, tenant_id)
        log: list[Transfer] = []
        timings: list[Timing] = []
        loaded = 0
        first_sample: list[Transfer] = []
        first_results: list[tuple[Features, Features]] = []
        for size in sizes:
            seconds = await load_events(
                owner, tenant_id, accounts, source, loaded, size, sizes[-1], log
            )
            print(f"loaded {size - loaded:,} events in {seconds:.1f} s", flush=True)
            loaded = size
            warm = frontier(log, WARM_UP, seed=size + 1)
            await time_features(engine, app, tenant_id, warm, "warm-up")
            label = _size_label(size)
            if first_sample:
                timing, results = await time_features(
                    engine, app, tenant_id, first_sample, f"same@{label}"
                )
                if results != first_results:
                    raise AssertionError("features of the same events changed as the table grew")
                timings.append(timing)
            picked = frontier(log, sample, seed=size)
            timing, results = await time_features(
                engine, app, tenant_id, picked, f"frontier@{label}"
            )
            timings.append(timing)
            if not first_sample:
                first_sample, first_results = picked, results
        if not keep:
            await clean(owner, tenant_id)
    finally:
        await owner.close()
        await app.close()
        await engine.dispose()
        await owner_engine.dispose()
    return timings


async def bench_features(*, keep: bool = False) -> list[tuple[str, float]]:
    """Run, print the table, and return the figures as (name, value) pairs."""
    return report(await run(get_settings(), keep=keep))


async def compare(settings: Settings) -> list[list[str]]:
    """Rows for ``make bench``'s table: what, Vigil, raw baseline, ratio."""
    timings = await run(settings)
    report(timings)
    rows = []
    for timing in timings:
        ours, baseline = (
            statistics.median(timing.features_ms),
            statistics.median(timing.baseline_ms),
        )
        rows.append(
            [
                f"history features per event, {timing.label}",
                f"{ours:.3f} ms p50",
                f"{baseline:.3f} ms p50",
                f"{ours / baseline:.2f}",
            ]
        )
    growth, baseline_growth = _growth(timings)
    rows.append(
        [
            f"features p50, {timings[-1].label} / {timings[0].label}",
            f"{growth:.2f}",
            f"{baseline_growth:.2f}",
            f"{growth / baseline_growth:.2f}",
        ]
    )
    return rows


def _growth(timings: list[Timing]) -> tuple[float, float]:
    """How the p50 of the newest events moved from the smallest table to the largest."""
    first, last = timings[0], timings[-1]
    return (
        statistics.median(last.features_ms) / statistics.median(first.features_ms),
        statistics.median(last.baseline_ms) / statistics.median(first.baseline_ms),
    )


def _size_label(size: int) -> str:
    return f"{size // 1_000_000}M" if size % 1_000_000 == 0 else f"{size // 1000}k"


def report(timings: list[Timing]) -> list[tuple[str, float]]:
    print("history features per event, milliseconds; baseline: one raw index range scan")
    print(
        f"{'sample':<16}{'features p50':>13}{'p99':>8}{'mean':>8}{'per s':>7}"
        f"{'baseline p50':>13}{'p99':>8}{'mean':>8}{'rows':>7}{'plans g/c':>11}"
    )
    figures: list[tuple[str, float]] = []
    for timing in timings:
        f50, f99, fmean, b50, b99, bmean = timing.row()
        plans = f"{timing.generic_plans}/{timing.custom_plans}"
        print(
            f"{timing.label:<16}{f50:>13.3f}{f99:>8.3f}{fmean:>8.3f}{1000 / fmean:>7.0f}"
            f"{b50:>13.3f}{b99:>8.3f}{bmean:>8.3f}{timing.window_rows:>7.1f}{plans:>11}"
        )
        figures += [
            (f"features {timing.label} p50 ms", f50),
            (f"features {timing.label} p99 ms", f99),
            (f"features {timing.label} mean ms", fmean),
            (f"baseline {timing.label} p50 ms", b50),
        ]
    growth, baseline_growth = _growth(timings)
    print(
        f"p50 ratio {timings[-1].label} / {timings[0].label}:"
        f" features {growth:.2f}, baseline {baseline_growth:.2f}"
    )
    print("rows: transfers in the 90-day windows of both accounts, per event")
    figures += [("features p50 ratio", growth), ("baseline p50 ratio", baseline_growth)]
    return figures


def main() -> None:
    asyncio.run(bench_features(keep="--keep" in sys.argv[1:]))


if __name__ == "__main__":
    main()
