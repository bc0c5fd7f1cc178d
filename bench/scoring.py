"""Scoring: events scored per second by one worker process, and where each event's time
goes, with the tenant's events table at 100,000 and at 1,000,000 rows.

The bank is made up here (seeded, so every run writes the same one): 20,000 accounts
whose activity follows a log-normal spread (a few busy business accounts, many quiet
ones), each paying a handful of usual beneficiaries most of the time; amounts are
log-normal around EUR 150 with a tail of large and just-below-threshold transfers; one
transfer in thirty is in USD and a few go abroad, a few to high-risk countries. The
stream is spread over one year at the pace of 1,000,000 transfers a year, so the table
grows while every account keeps its pace: at 100,000 rows the newest events already
have full 30-day windows, and at 1,000,000 rows the same windows hold as many rows. The
rows are written with COPY as the owner role into the bench's tenant, under a door of
their own, and deleted again at the end (the audit records scoring wrote stay: the
trail cannot be edited).

At each size, samples of events from the newest ones, never assessed before, are scored
in this process by :func:`services.scoring.score_event` over
:func:`adapters.unit_of_work.unit_of_work_factory` and :class:`CachedScorers`, the code
a worker's job runs:

- one at a time, then ``worker_concurrency`` at once (``asyncio.gather`` under a
  semaphore, an engine pooled like the worker's), giving events per second;
- one at a time once more with the phases timed, each event followed by one event of
  the raw baseline, so that both see the same moments of a machine whose load changes
  (the phase rows and their growth come from this run). ``score_event`` itself runs; only its
  unit of work's scoring store and its scorer are wrapped, to note when the features
  query and ``scorer.assess`` start and end. Of an event's time, *features* is the
  store's features query; *rules* is ``assess`` on the built context; *write* is all
  that follows ``assess`` (the assessment, alerts and cases, clearing any failure, the
  outbox and audit rows, the commit, returning the connection); *lookups* is all before
  the features query (taking a connection, BEGIN and the tenant, loading the event and
  the active ruleset, the already-assessed check) and building the context.

The raw baseline does the least that scoring must, with asyncpg and none of Vigil's
code: in one transaction, the tenant setting, the same features statement (the one
:func:`adapters.features.features_sql` makes for the default ruleset's features) with
the same parameters, one INSERT of an
assessment row of the same size, and the commit; one at a time and as many at once. Its
*lookups* are BEGIN and the tenant setting, its *write* the INSERT and the commit; it
has no rules.

Last, the arq path at 1,000,000 rows: jobs for fresh events are put on a queue of their
own and one arq worker made by :func:`workers.scoring.create_worker` (burst mode, no
signal handlers; everything else as configured) runs in this process until the queue
is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import random
import statistics
import time
import uuid
import warnings
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.cel_rules import CachedScorers
from adapters.database import make_engine, parameter_names, plain_url, positional
from adapters.features import feature_parameters, features_sql
from adapters.score_queue import connect, enqueue_score
from adapters.scoring_store import explanation_document
from adapters.settings import Settings
from adapters.unit_of_work import SqlUnitOfWork, unit_of_work_factory
from bench.features import EVENT_COLUMNS
from domain.default_ruleset import DEFAULT_RULESET
from domain.errors import TransientFailure
from domain.ids import new_id
from domain.rules import Evaluation, Ruleset
from domain.scoring import (
    ALL_FEATURES,
    FeatureNeeds,
    Features,
    StoredEvent,
    StoredRuleset,
    sample_contexts,
)
from services.scoring import ScoreOutcome, ScoreResult, install_ruleset, score_event
from workers.scoring import create_worker

SIZES = (100_000, 1_000_000)
ACCOUNTS = 20_000
SAMPLE = 1_000
WARM_UP = 100
ARQ_JOBS = 2_000
# Samples are drawn from this many of the newest events at each size: at 100,000 rows
# the oldest of them is past day 32, so its 30-day windows are full.
NEWEST = 12_000
CHUNK = 50_000
START = datetime(2025, 1, 1, tzinfo=UTC)
SPACING = timedelta(days=365) / SIZES[-1]
DOOR = "bench-scoring"
REF = "BSCORE"
APPLICATION = "vigil-bench-scoring"
PHASES = ("lookups", "features", "rules", "write", "total")
CHANNELS = ("sepa", "sepa", "sepa", "instant", "instant", "wire", "card")
ABROAD = (("BE", 40), ("DE", 40), ("FR", 30), ("GB", 20), ("US", 10), ("IR", 1), ("KP", 1))

_SET_TENANT = "SELECT set_config('vigil.tenant_id', $1, true)"
_INSERT_ASSESSMENT = """
INSERT INTO assessments (tenant_id, assessment_id, event_id, ruleset_version, scorer, score,
    band, alert, explanation, context, scored_at)
VALUES ($1, $2, $3, $4, 'raw', $5, $6, $7, $8::jsonb, $9::jsonb, $10)
"""


# -- the bank ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transfer:
    """What the samples need of an event: its id and what the features statement takes."""

    event_id: uuid.UUID
    subject_id: uuid.UUID
    counterparty_id: uuid.UUID
    occurred_at: datetime
    currency: str


@dataclass(slots=True)
class Bank:
    subject_ids: list[uuid.UUID]
    cumulative: list[float]  # activity weights, cumulative, for random.choices
    favourites: list[tuple[int, ...]]
    newest: deque[Transfer] = field(default_factory=lambda: deque(maxlen=NEWEST))
    loaded: int = 0

    @classmethod
    def make(cls, seed: int = 7) -> Bank:
        rng = random.Random(seed)
        weights = [rng.lognormvariate(0.0, 1.0) for _ in range(ACCOUNTS)]
        cumulative, total = [], 0.0
        for weight in weights:
            total += weight
            cumulative.append(total)
        everyone = range(ACCOUNTS)
        favourites = [
            tuple(rng.choices(everyone, cum_weights=cumulative, k=rng.randint(2, 6)))
            for _ in everyone
        ]
        return cls([new_id() for _ in everyone], cumulative, favourites)

    def subject_rows(self, tenant_id: uuid.UUID) -> list[tuple[Any, ...]]:
        rng = random.Random(11)
        now = datetime.now(UTC)
        rows = []
        for index, subject_id in enumerate(self.subject_ids):
            attributes: dict[str, Any] = {
                "country": "NL",
                "riskRating": rng.choices(("low", "medium", "high"), (80, 17, 3))[0],
            }
            if rng.random() < 0.003:
                attributes["pep"] = True
            if rng.random() < 0.0002:
                attributes["sanctionsHit"] = True
            rows.append(
                (
                    tenant_id,
                    subject_id,
                    "account",
                    f"{REF}{index:06d}",
                    json.dumps(attributes),
                    now,
                    now,
                    now,
                )
            )
        return rows

    def event_rows(self, tenant_id: uuid.UUID, first: int, last: int) -> Iterator[tuple[Any, ...]]:
        """Events ``first`` to ``last`` of the stream; a chunk's seed is where it starts,
        so a row is the same whichever run writes it."""
        rng = random.Random(first)
        count = last - first
        everyone = range(ACCOUNTS)
        origins = rng.choices(everyone, cum_weights=self.cumulative, k=count)
        others = rng.choices(everyone, cum_weights=self.cumulative, k=count)
        received = datetime.now(UTC)
        for offset, (origin, other) in enumerate(zip(origins, others, strict=True)):
            index = first + offset
            target = rng.choice(self.favourites[origin]) if rng.random() < 0.6 else other
            if target == origin:
                target = (origin + 1) % ACCOUNTS
            amount = _amount(rng)
            currency = "USD" if rng.random() < 1 / 30 else "EUR"
            country = "NL" if rng.random() < 0.9 else _abroad(rng)
            at = START + SPACING * (index + rng.random())
            payload = {
                "type": "transaction",
                "occurredAt": at.isoformat(),
                "data": {
                    "amount": str(amount),
                    "currency": currency,
                    "originator": {"account": f"{REF}{origin:06d}", "country": "NL"},
                    "beneficiary": {"account": f"{REF}{target:06d}", "country": country},
                    "channel": rng.choice(CHANNELS),
                    "reference": f"invoice {index}",
                },
            }
            body = json.dumps(payload, sort_keys=True, separators=(",", ":"))
            event_id = new_id()
            subject, counterparty = self.subject_ids[origin], self.subject_ids[target]
            self.newest.append(Transfer(event_id, subject, counterparty, at, currency))
            yield (
                tenant_id,
                event_id,
                f"{DOOR}-{index}",
                "transaction",
                at,
                received,
                subject,
                counterparty,
                amount,
                currency,
                body,
                hashlib.sha256(body.encode()).digest(),
                DOOR,
                "bench",
            )


def _amount(rng: random.Random) -> Decimal:
    draw = rng.random()
    if draw < 0.005:  # just below the EUR 10,000 reporting threshold
        value = rng.uniform(9_000, 9_999.99)
    else:
        value = min(rng.lognormvariate(math.log(150), 1.1), 50_000.0)
        if draw < 0.03:
            value *= 20
    return max(Decimal("1.00"), Decimal(f"{value:.2f}"))


def _abroad(rng: random.Random) -> str:
    countries, weights = zip(*ABROAD, strict=True)
    return rng.choices(countries, weights)[0]


async def load(owner: asyncpg.Connection, tenant_id: uuid.UUID, bank: Bank, size: int) -> float:
    """COPY the stream up to ``size`` rows; then VACUUM ANALYZE, as autovacuum would in
    time, so that the planner has statistics and the visibility map is set."""
    started = time.perf_counter()
    if bank.loaded == 0:
        await owner.copy_records_to_table(
            "subjects",
            columns=(
                "tenant_id",
                "subject_id",
                "kind",
                "external_ref",
                "attributes",
                "attributes_at",
                "created_at",
                "updated_at",
            ),
            records=bank.subject_rows(tenant_id),
        )
    for start in range(bank.loaded, size, CHUNK):
        stop = min(size, start + CHUNK)
        await owner.copy_records_to_table(
            "events", columns=EVENT_COLUMNS, records=list(bank.event_rows(tenant_id, start, stop))
        )
    bank.loaded = size
    await owner.execute("VACUUM ANALYZE events")
    return time.perf_counter() - started


async def clean(owner: asyncpg.Connection, tenant_id: uuid.UUID) -> None:
    """Delete what this benchmark wrote, but the audit records."""
    for table in ("alerts", "cases", "assessments", "scoring_failures"):
        await owner.execute(f"DELETE FROM {table} WHERE tenant_id = $1", tenant_id)
    await owner.execute(
        "DELETE FROM outbox WHERE tenant_id = $1 AND message_type <> 'event.received'", tenant_id
    )
    await owner.execute("DELETE FROM events WHERE tenant_id = $1 AND door = $2", tenant_id, DOOR)
    await owner.execute(
        "DELETE FROM subjects WHERE tenant_id = $1 AND external_ref LIKE $2", tenant_id, f"{REF}%"
    )


# -- timing Vigil ------------------------------------------------------------------------


@dataclass(slots=True)
class Marks:
    """When one event's features query and rule evaluation started and ended."""

    features: tuple[float, float] = (0.0, 0.0)
    rules: tuple[float, float] = (0.0, 0.0)


class TimedStore:
    """The unit of work's scoring store, noting the features query's start and end."""

    def __init__(self, store: Any, marks: Marks) -> None:
        self._store = store
        self._marks = marks

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def features_of(
        self,
        events: Sequence[StoredEvent],
        ruleset: Ruleset,
        needs: FeatureNeeds = ALL_FEATURES,
    ) -> list[tuple[Features, Features]]:
        started = time.perf_counter()
        result = await self._store.features_of(events, ruleset, needs)
        self._marks.features = (started, time.perf_counter())
        return result  # type: ignore[no-any-return]


class TimedUnitOfWork:
    def __init__(self, uow: SqlUnitOfWork, marks: Marks) -> None:
        self._uow = uow
        self._marks = marks

    async def __aenter__(self) -> SqlUnitOfWork:
        uow = await self._uow.__aenter__()
        uow.scoring = TimedStore(uow.scoring, self._marks)  # type: ignore[assignment]
        return uow

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._uow.__aexit__(*exc_info)


@dataclass(slots=True)
class TimedScorer:
    scorer: Any
    marks: Marks

    @property
    def name(self) -> str:
        return str(self.scorer.name)

    @property
    def version(self) -> int:
        return int(self.scorer.version)

    def assess(self, context: Mapping[str, Any]) -> Evaluation:
        started = time.perf_counter()
        evaluation: Evaluation = self.scorer.assess(context)
        self.marks.rules = (started, time.perf_counter())
        return evaluation


@dataclass(slots=True)
class TimedScorers:
    scorers: CachedScorers
    marks: Marks

    def parse(self, ruleset: StoredRuleset) -> Ruleset:
        return self.scorers.parse(ruleset)

    def scorer_for(self, tenant_id: uuid.UUID, ruleset: StoredRuleset) -> TimedScorer:
        return TimedScorer(self.scorers.scorer_for(tenant_id, ruleset), self.marks)


@dataclass(slots=True)
class Scored:
    """What a run of ``score_event`` over a sample gave."""

    rate: float
    alerted: int = 0
    retries: int = 0
    phases: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PHASES})


async def _score(
    uow_factory: Any, scorers: Any, tenant_id: uuid.UUID, event_id: uuid.UUID
) -> tuple[ScoreResult, int]:
    """``score_event``, run again at once on a transient failure (a worker would run it
    again after a back-off), with how many runs were needed beyond the first."""
    for retries in range(10):
        try:
            return await score_event(uow_factory, scorers, tenant_id, event_id), retries
        except TransientFailure:
            continue
    raise RuntimeError(f"event {event_id} failed to score ten times")


async def vigil_rate(
    engine: AsyncEngine,
    scorers: CachedScorers,
    tenant_id: uuid.UUID,
    sample: Sequence[Transfer],
    concurrency: int,
) -> Scored:
    uow_factory = unit_of_work_factory(engine)
    gate = asyncio.Semaphore(concurrency)
    outcome = Scored(0.0)

    async def one(transfer: Transfer) -> None:
        async with gate:
            started = time.perf_counter()
            result, retries = await _score(uow_factory, scorers, tenant_id, transfer.event_id)
            outcome.phases["total"].append(time.perf_counter() - started)
        if result.outcome is not ScoreOutcome.ASSESSED:
            raise AssertionError(f"event {transfer.event_id}: {result.outcome}")
        outcome.alerted += result.alerted > 0
        outcome.retries += retries

    started = time.perf_counter()
    await asyncio.gather(*(one(transfer) for transfer in sample))
    outcome.rate = len(sample) / (time.perf_counter() - started)
    return outcome


async def phases(
    engine: AsyncEngine,
    scorers: CachedScorers,
    tenant_id: uuid.UUID,
    sample: Sequence[Transfer],
    raw: tuple[asyncpg.Connection, RawBaseline, Sequence[RawJob]],
) -> tuple[Scored, Scored]:
    """One event at a time through ``score_event``, its phases timed (see the module's
    docstring), each followed by one event of the raw baseline, so that both see the
    same moments of a machine whose load changes."""
    connection, baseline, jobs = raw
    ours, theirs = Scored(0.0), Scored(0.0)
    await baseline.score(connection, jobs[0], theirs.phases)  # prepares its statements
    theirs.phases = {p: [] for p in PHASES}
    for transfer, job in zip(sample, jobs[1:], strict=True):
        marks = Marks()

        def uow_factory(tenant: uuid.UUID, marks: Marks = marks) -> TimedUnitOfWork:
            return TimedUnitOfWork(SqlUnitOfWork(engine, tenant), marks)

        started = time.perf_counter()
        result, retries = await _score(
            uow_factory, TimedScorers(scorers, marks), tenant_id, transfer.event_id
        )
        ended = time.perf_counter()
        if result.outcome is not ScoreOutcome.ASSESSED:
            raise AssertionError(f"event {transfer.event_id}: {result.outcome}")
        ours.alerted += result.alerted > 0
        ours.retries += retries
        (features_start, features_end), (rules_start, rules_end) = marks.features, marks.rules
        _note(
            ours.phases,
            lookups=(features_start - started) + (rules_start - features_end),
            features=features_end - features_start,
            rules=rules_end - rules_start,
            write=ended - rules_end,
            total=ended - started,
        )
        await baseline.score(connection, job, theirs.phases)
    return ours, theirs


def _note(phases: dict[str, list[float]], **seconds: float) -> None:
    for name, value in seconds.items():
        phases[name].append(value)


# -- the raw baseline --------------------------------------------------------------------


def _default_features_sql() -> str:
    """The features statement the default ruleset's scoring runs: its rules' features
    and no others."""
    compiled = CachedScorers().scorer_for(
        uuid.UUID(int=0), StoredRuleset(1, DEFAULT_RULESET, b"default")
    )
    return features_sql(compiled.needs.union())


_RAW_SQL = _default_features_sql()
_RAW_NAMES = parameter_names(_RAW_SQL)
_RAW_FEATURES = positional(_RAW_SQL, _RAW_NAMES)


@dataclass(frozen=True, slots=True)
class RawJob:
    event_id: uuid.UUID
    arguments: tuple[Any, ...]


def raw_jobs(tenant_id: uuid.UUID, ruleset: Ruleset, sample: Sequence[Transfer]) -> list[RawJob]:
    """The features statement's arguments for each event, made before any timing."""
    jobs = []
    for transfer in sample:
        event = StoredEvent(
            event_id=transfer.event_id,
            event_type="transaction",
            occurred_at=transfer.occurred_at,
            subject_id=transfer.subject_id,
            counterparty_id=transfer.counterparty_id,
            amount=Decimal(1),
            currency=transfer.currency,
            payload={},
            subject_attributes={},
            counterparty_attributes={},
        )
        parameters = feature_parameters(tenant_id, [event], ruleset)
        jobs.append(RawJob(transfer.event_id, tuple(parameters[n] for n in _RAW_NAMES)))
    return jobs


@dataclass(frozen=True, slots=True)
class RawBaseline:
    """In one transaction per event: the tenant, the features statement, one assessment
    INSERT, the commit."""

    tenant_id: uuid.UUID
    version: int
    explanation: str

    async def score(
        self, connection: asyncpg.Connection, job: RawJob, phases: dict[str, list[float]]
    ) -> None:
        started = time.perf_counter()
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute(_SET_TENANT, str(self.tenant_id))
        features_start = time.perf_counter()
        rows = await connection.fetch(_RAW_FEATURES, *job.arguments)
        features_end = time.perf_counter()
        context = json.dumps({row["role"]: dict(row) for row in rows}, default=str)
        await connection.execute(
            _INSERT_ASSESSMENT,
            self.tenant_id,
            new_id(),
            job.event_id,
            self.version,
            0,
            "low",
            False,
            self.explanation,
            context,
            datetime.now(UTC),
        )
        await transaction.commit()
        ended = time.perf_counter()
        _note(
            phases,
            lookups=features_start - started,
            features=features_end - features_start,
            rules=0.0,
            write=ended - features_end,
            total=ended - started,
        )


async def raw_rate(
    dsn: str, baseline: RawBaseline, jobs: Sequence[RawJob], concurrency: int
) -> Scored:
    """The baseline over ``jobs``, ``concurrency`` connections at once."""
    pool = await asyncpg.create_pool(dsn, min_size=concurrency, max_size=concurrency)
    outcome = Scored(0.0)
    gate = asyncio.Semaphore(concurrency)

    async def one(job: RawJob) -> None:
        async with gate, pool.acquire() as connection:
            await baseline.score(connection, job, outcome.phases)

    try:
        # Each connection prepares the statements once, as a worker's pool would have.
        await asyncio.gather(*(one(job) for job in jobs[: min(len(jobs), concurrency)]))
        outcome.phases = {p: [] for p in PHASES}
        rest = jobs[concurrency:]
        started = time.perf_counter()
        await asyncio.gather(*(one(job) for job in rest))
        outcome.rate = len(rest) / (time.perf_counter() - started)
    finally:
        await pool.close()
    return outcome


def _explanation(scorers: CachedScorers, tenant_id: uuid.UUID, stored: StoredRuleset) -> str:
    """An explanation as large as the ones scoring writes: every rule, with its figures."""
    evaluation = scorers.scorer_for(tenant_id, stored).assess(sample_contexts()[1])
    return json.dumps(explanation_document(evaluation))


# -- the arq path ------------------------------------------------------------------------


async def arq_rate(settings: Settings, tenant_id: uuid.UUID, sample: Sequence[Transfer]) -> float:
    """Jobs for ``sample`` on a queue of their own; one worker, in this process, in
    burst mode, timed from its start until the queue is empty."""
    queue_settings = settings.model_copy(
        update={"arq_queue": f"{settings.amqp_prefix}.score.bench-{uuid.uuid4().hex[:8]}"}
    )
    logging.getLogger("arq").setLevel(logging.WARNING)  # as `vigil worker` does
    redis = connect(queue_settings)
    try:
        for transfer in sample:
            if not await enqueue_score(redis, tenant_id, transfer.event_id):
                raise RuntimeError("arq refused a score job")
        worker = create_worker(queue_settings, burst=True, handle_signals=False)
        started = time.perf_counter()
        try:
            await worker.async_run()
        finally:
            elapsed = time.perf_counter() - started
            with warnings.catch_warnings():
                # arq 0.28 closes its Redis client with a call redis 5 deprecates.
                warnings.simplefilter("ignore", DeprecationWarning)
                await worker.close()
        if worker.jobs_complete != len(sample) or worker.jobs_failed or worker.jobs_retried:
            raise RuntimeError(
                f"arq: {worker.jobs_complete} complete, {worker.jobs_failed} failed,"
                f" {worker.jobs_retried} retried of {len(sample)}"
            )
    finally:
        await redis.delete(queue_settings.score_queue)
        await redis.aclose(close_connection_pool=True)
    return len(sample) / elapsed


# -- the run -----------------------------------------------------------------------------


@dataclass(slots=True)
class AtSize:
    label: str
    loaded_seconds: float
    table_rows: int
    vigil_one: Scored
    raw_one: Scored
    vigil_many: Scored
    raw_many: Scored
    phases: Scored
    raw_phases: Scored


def _samples(bank: Bank, seed: int, *counts: int) -> list[list[Transfer]]:
    """Disjoint samples from the newest events, none of them assessed yet."""
    picked = random.Random(seed).sample(list(bank.newest), sum(counts))
    samples, start = [], 0
    for count in counts:
        samples.append(picked[start : start + count])
        start += count
    return samples


async def _measure(
    size: int,
    bank: Bank,
    engine: AsyncEngine,
    scorers: CachedScorers,
    settings: Settings,
    tenant_id: uuid.UUID,
    ruleset: tuple[StoredRuleset, str],
    owner: asyncpg.Connection,
    loaded_seconds: float,
) -> tuple[AtSize, list[Transfer]]:
    stored, explanation = ruleset
    concurrency = settings.worker_concurrency
    dsn = plain_url(settings.database_url)
    parsed = scorers.parse(stored)
    baseline = RawBaseline(tenant_id, stored.version, explanation)
    warm, one, many, timed, raw_one, raw_many, raw_paired, spare = _samples(
        bank,
        size,
        WARM_UP,
        SAMPLE,
        SAMPLE,
        SAMPLE,
        SAMPLE + 1,
        SAMPLE + concurrency,
        SAMPLE + 1,
        ARQ_JOBS if size == SIZES[-1] else 0,
    )
    # Every pooled connection prepares its statements before the clock runs.
    await vigil_rate(engine, scorers, tenant_id, warm, concurrency)
    vigil_one = await vigil_rate(engine, scorers, tenant_id, one, 1)
    raw_one_result = await raw_rate(dsn, baseline, raw_jobs(tenant_id, parsed, raw_one), 1)
    vigil_many = await vigil_rate(engine, scorers, tenant_id, many, concurrency)
    raw_many_result = await raw_rate(
        dsn, baseline, raw_jobs(tenant_id, parsed, raw_many), concurrency
    )
    connection = await asyncpg.connect(dsn)
    try:
        vigil_phases, raw_phases = await phases(
            engine,
            scorers,
            tenant_id,
            timed,
            (connection, baseline, raw_jobs(tenant_id, parsed, raw_paired)),
        )
    finally:
        await connection.close()
    table_rows = await owner.fetchval(
        "SELECT count(*) FROM events WHERE tenant_id = $1 AND door = $2", tenant_id, DOOR
    )
    result = AtSize(
        _label(size),
        loaded_seconds,
        int(table_rows),
        vigil_one,
        raw_one_result,
        vigil_many,
        raw_many_result,
        vigil_phases,
        raw_phases,
    )
    return result, spare


async def run(settings: Settings, tenant_id: uuid.UUID) -> tuple[list[AtSize], float]:
    owner = await asyncpg.connect(plain_url(settings.owner_database_url))
    engine = make_engine(
        settings.database_url, pool_size=settings.worker_concurrency, application_name=APPLICATION
    )
    scorers = CachedScorers()
    results: list[AtSize] = []
    arq = 0.0
    try:
        uow_factory = unit_of_work_factory(engine)
        version = await install_ruleset(
            uow_factory, scorers, tenant_id, DEFAULT_RULESET, "bench", activate=True
        )
        async with uow_factory(tenant_id) as uow:
            stored = await uow.scoring.ruleset(version)
        assert stored is not None
        ruleset = (stored, _explanation(scorers, tenant_id, stored))
        bank = Bank.make()
        spare: list[Transfer] = []
        for size in SIZES:
            seconds = await load(owner, tenant_id, bank, size)
            print(f"scoring: loaded {size:,} events in {seconds:.0f} s", flush=True)
            result, spare = await _measure(
                size, bank, engine, scorers, settings, tenant_id, ruleset, owner, seconds
            )
            results.append(result)
        await engine.dispose()  # the worker keeps an engine of its own
        arq = await arq_rate(settings, tenant_id, spare)
        arq_check = await owner.fetchval(
            "SELECT count(*) FROM assessments WHERE tenant_id = $1 AND event_id = ANY($2)",
            tenant_id,
            [transfer.event_id for transfer in spare],
        )
        if arq_check != len(spare):
            raise AssertionError(f"arq assessed {arq_check} of {len(spare)} events")
    finally:
        with contextlib.suppress(Exception):
            await engine.dispose()
        started = time.perf_counter()
        await clean(owner, tenant_id)
        await owner.close()
        print(f"scoring: cleaned up in {time.perf_counter() - started:.0f} s", flush=True)
    return results, arq


def _label(size: int) -> str:
    return f"{size // 1_000_000}M" if size % 1_000_000 == 0 else f"{size // 1000}k"


def _p50_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000


def _rows(results: list[AtSize], arq: float, concurrency: int) -> list[list[str]]:
    rows: list[list[str]] = []
    for result in results:
        for what, ours, raw in (
            ("one at a time", result.vigil_one, result.raw_one),
            (f"{concurrency} at once", result.vigil_many, result.raw_many),
        ):
            rows.append(
                [
                    f"scoring, {what}, {result.label} events",
                    f"{ours.rate:,.0f} events/s",
                    f"{raw.rate:,.0f} events/s",
                    f"{ours.rate / raw.rate:.2f}",
                ]
            )
    for result in results:
        for phase in PHASES:
            ours = _p50_ms(result.phases.phases[phase])
            raw = _p50_ms(result.raw_phases.phases[phase]) if phase != "rules" else 0.0
            rows.append(
                [
                    f"per event p50, {phase}, {result.label} events",
                    f"{ours:.3f} ms",
                    f"{raw:.3f} ms" if raw else "-",
                    f"{ours / raw:.2f}" if raw else "-",
                ]
            )
    first, last = results[0], results[-1]
    for phase in PHASES:
        ours = _p50_ms(last.phases.phases[phase]) / _p50_ms(first.phases.phases[phase])
        raw_growth = (
            _p50_ms(last.raw_phases.phases[phase]) / _p50_ms(first.raw_phases.phases[phase])
            if phase != "rules"
            else 0.0
        )
        rows.append(
            [
                f"per event p50 {last.label} / {first.label}, {phase}",
                f"{ours:.2f}",
                f"{raw_growth:.2f}" if raw_growth else "-",
                f"{ours / raw_growth:.2f}" if raw_growth else "-",
            ]
        )
    raw_many = last.raw_many.rate
    rows.append(
        [
            f"scoring via arq, 1 worker process (max_jobs {concurrency}), {last.label} events",
            f"{arq:,.0f} events/s",
            f"{raw_many:,.0f} events/s",
            f"{arq / raw_many:.2f}",
        ]
    )
    return rows


def _report(results: list[AtSize], arq: float) -> None:
    for result in results:
        timed = result.phases
        print(
            f"scoring at {result.label}: {result.table_rows:,} rows of the bank;"
            f" alerted {timed.alerted / len(timed.phases['total']):.1%} of the timed events;"
            f" retried {result.vigil_one.retries + result.vigil_many.retries + timed.retries}"
            f" after a transient failure; p99 total"
            f" {sorted(timed.phases['total'])[int(0.99 * len(timed.phases['total']))] * 1000:.1f}"
            " ms",
            flush=True,
        )
    print(f"scoring via arq: {arq:,.0f} events/s", flush=True)


async def compare(settings: Settings, tenant_id: uuid.UUID) -> list[list[str]]:
    """Rows for ``make bench``'s table: what, Vigil, raw baseline, ratio."""
    results, arq = await run(settings, tenant_id)
    _report(results, arq)
    return _rows(results, arq, settings.worker_concurrency)
