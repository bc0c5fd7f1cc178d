"""``vigil worker``: the arq worker that scores events.

The dispatcher's jobs are batches (``score_events``): one tenant's events, scored in one
transaction by :func:`services.scoring.score_events`. When a batch fails for any reason
nothing of it is kept, and it splits: each of its events is enqueued as a job of its own
(``score_event``, under the event's own job id). Re-drives are such jobs too.

A ``score_event`` job calls :func:`services.scoring.score_event` and settles every
outcome itself, so that arq only ever sees a result or a :class:`arq.Retry`:

    assessed, already_assessed   done (a second run of an event changes nothing)
    retried                      a transient failure (a deadlock, the database away):
                                 run again after a back-off, up to ``worker_max_tries``
    failed                       no active ruleset or a ruleset that does not compile
                                 (at once), or a transient failure or a bug on every
                                 try: the event is marked failed with its reason
                                 (``vigil failures``) until an operator re-drives it
                                 (``vigil redrive``)
    event_not_found              a job naming an event that does not exist; there is no
                                 event to mark, so it is logged and dropped

Whatever no job settles is left to the reconciler, which enqueues unassessed events that
are not marked failed again after a deadline: a failure that could not even be marked
(the database away on the last try), and a job arq drops by itself, without calling it
(its tries used up by workers killed or stopped mid-job, or a job older than a day).

Single jobs of one tenant that run at the same time in a process are scored together
(:class:`Batches`): the first waits ``worker_batch_linger_seconds`` for others, and up to
``worker_batch_size`` events are scored in one transaction by
:func:`services.scoring.score_events`. A tenant's scoring transactions commit one at a
time (each moves the tenant's audit-chain head), so one commit per batch instead of per
event is what lets several jobs make progress at once. Each job still settles its own
event: when a batch fails for any reason, nothing of it was kept and every job of it
scores its event alone, with the retries and failure marking described above.

A process keeps one engine and one cache of compiled rulesets for its whole life; a job
only borrows a pooled connection. Results
are not kept (``keep_result=0``), which :mod:`adapters.score_queue` relies on.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from arq import Retry, Worker, func
from arq.connections import ArqRedis, RedisSettings

from adapters.cel_rules import CachedScorers
from adapters.database import make_engine
from adapters.logging import bind_context
from adapters.metrics import (
    SCORING_FAILURES,
    SCORING_JOBS,
    SCORING_SECONDS,
    SCORING_WAIT_SECONDS,
    serve_metrics,
)
from adapters.score_queue import (
    MAX_BATCH,
    SCORE_EVENT,
    SCORE_EVENTS,
    dumps,
    enqueue_score,
    loads,
)
from adapters.settings import Settings
from adapters.unit_of_work import unit_of_work_factory
from domain.errors import TransientFailure
from domain.ports import UnitOfWorkFactory
from domain.rules import InvalidRuleset
from services.scoring import (
    EventNotFound,
    NoActiveRuleset,
    ScoreResult,
    record_failure,
    score_event,
    score_events,
)
from workers.consumer import Backoff
from workers.envelope import valid_correlation_id

log = logging.getLogger(__name__)

CONNECTION_NAME = "vigil-worker"
# arq starts queued jobs only when it polls: the poll interval is a floor under every
# event's latency. A poll is one cheap Redis command, so a worker polls 50 times a second.
POLL_SECONDS = 0.02
HEALTH_CHECK_SECONDS = 30
_STATE = "vigil"
_MAX_REASON = 500


_Waiting = tuple[uuid.UUID, str | None, "asyncio.Future[ScoreResult | None]"]


class Batches:
    """Gathers the events of one tenant whose jobs run at the same time, and scores them
    in one transaction. :meth:`score` answers None when the batch failed: the caller
    then scores its event alone."""

    def __init__(
        self, uow_factory: UnitOfWorkFactory, scorers: CachedScorers, size: int, linger: float
    ) -> None:
        self._uow_factory = uow_factory
        self._scorers = scorers
        self._size = size
        self._linger = linger
        self._open: dict[uuid.UUID, list[_Waiting]] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def score(
        self, tenant_id: uuid.UUID, event_id: uuid.UUID, correlation_id: str | None
    ) -> ScoreResult | None:
        future: asyncio.Future[ScoreResult | None] = asyncio.get_running_loop().create_future()
        batch = self._open.get(tenant_id)
        if batch is None:
            batch = self._open[tenant_id] = []
            asyncio.get_running_loop().call_later(self._linger, self._close, tenant_id, batch)
        batch.append((event_id, correlation_id, future))
        if len(batch) >= self._size:
            self._close(tenant_id, batch)
        # Shielded: a job cancelled (its timeout, a shutdown) leaves its batch running;
        # that batch's effects are committed or rolled back whole either way.
        return await asyncio.shield(future)

    def _close(self, tenant_id: uuid.UUID, batch: list[_Waiting]) -> None:
        if self._open.get(tenant_id) is batch:
            del self._open[tenant_id]
            task = asyncio.ensure_future(self._run(tenant_id, batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, tenant_id: uuid.UUID, batch: list[_Waiting]) -> None:
        try:
            results: list[ScoreResult | None] = list(
                await score_events(
                    self._uow_factory,
                    self._scorers,
                    tenant_id,
                    [(event_id, correlation_id) for event_id, correlation_id, _ in batch],
                )
            )
        except Exception as error:
            log.info(
                "a batch failed; its events are scored one by one",
                extra={"events": len(batch), "reason": type(error).__name__},
            )
            results = [None] * len(batch)
        for (_, _, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


@dataclass(slots=True)
class ScoringJobs:
    """What every job of one worker process shares."""

    uow_factory: UnitOfWorkFactory
    scorers: CachedScorers
    max_tries: int
    backoff: Backoff
    batches: Batches | None = None

    async def score(
        self, tenant_id: uuid.UUID, event_id: uuid.UUID, correlation_id: str | None, job_try: int
    ) -> str:
        """Score one event and settle the outcome; raise only :class:`arq.Retry`."""
        started = time.perf_counter()
        try:
            batched = (
                await self.batches.score(tenant_id, event_id, correlation_id)
                if self.batches is not None and job_try == 1
                else None
            )
            result = batched or await score_event(
                self.uow_factory, self.scorers, tenant_id, event_id, correlation_id=correlation_id
            )
        except TransientFailure as error:
            return await self._retry_or_fail(
                tenant_id, event_id, job_try, error.code, error.message
            )
        except EventNotFound:
            log.error("score job for an event that does not exist")
            SCORING_JOBS.labels("event_not_found").inc()
            return "event_not_found"
        except NoActiveRuleset as error:
            return await self._fail(tenant_id, event_id, job_try, error.code, error.message)
        except InvalidRuleset as error:
            return await self._fail(tenant_id, event_id, job_try, error.code, str(error))
        except Exception as error:
            # A bug, or a driver error nobody classified: retried like a transient failure,
            # and marked failed with its type if it never passes.
            log.exception("scoring failed unexpectedly", extra={"job_try": job_try})
            reason = f"{type(error).__name__}: {error}"
            return await self._retry_or_fail(tenant_id, event_id, job_try, "INTERNAL", reason)

        SCORING_JOBS.labels(result.outcome.value).inc()
        SCORING_SECONDS.observe(time.perf_counter() - started)
        return result.outcome.value

    async def score_batch(
        self,
        redis: ArqRedis,
        tenant_id: uuid.UUID,
        events: Sequence[tuple[uuid.UUID, str | None]],
        job_try: int,
    ) -> str:
        """Score a batch job's events in one transaction. When that fails for any reason
        nothing of it was kept, and each event goes on as a job of its own, with the
        retries and failure marking of :meth:`score`."""
        started = time.perf_counter()
        try:
            results = await score_events(self.uow_factory, self.scorers, tenant_id, events)
        except Exception as error:
            log.info(
                "a batch job failed; its events go on as jobs of their own",
                extra={"events": len(events), "reason": type(error).__name__},
            )
            return await self._split(redis, tenant_id, events, job_try)
        for result in results:
            SCORING_JOBS.labels(result.outcome.value).inc()
        SCORING_SECONDS.observe(time.perf_counter() - started)
        return "scored"

    async def _split(
        self,
        redis: ArqRedis,
        tenant_id: uuid.UUID,
        events: Sequence[tuple[uuid.UUID, str | None]],
        job_try: int,
    ) -> str:
        try:
            for event_id, correlation_id in events:
                _ = await enqueue_score(redis, tenant_id, event_id, correlation_id=correlation_id)
        except TransientFailure as error:
            if job_try < self.max_tries:
                self._retry(f"could not split the batch: {error.message}", job_try)
            # The reconciler finds whatever was not enqueued.
            log.error("could not split a failed batch job", extra={"reason": error.message})
            SCORING_JOBS.labels("unsettled").inc(len(events))
            return "unsettled"
        SCORING_JOBS.labels("split").inc(len(events))
        return "split"

    async def _retry_or_fail(
        self, tenant_id: uuid.UUID, event_id: uuid.UUID, job_try: int, code: str, reason: str
    ) -> str:
        if job_try < self.max_tries:
            self._retry(reason, job_try)
        return await self._fail(
            tenant_id, event_id, job_try, code, f"{reason} (on each of {job_try} tries)"
        )

    def _retry(self, reason: str, job_try: int) -> NoReturn:
        delay = self.backoff.delay(job_try)
        log.warning(
            "scoring failed for a transient reason; will try again",
            extra={"reason": reason, "job_try": job_try, "retry_in_seconds": round(delay, 2)},
        )
        SCORING_JOBS.labels("retried").inc()
        raise Retry(defer=delay)

    async def _fail(
        self, tenant_id: uuid.UUID, event_id: uuid.UUID, job_try: int, code: str, reason: str
    ) -> str:
        text = f"{code}: {reason}" if not reason.startswith(code) else reason
        text = text.splitlines()[0][:_MAX_REASON] if text else code
        try:
            await record_failure(self.uow_factory, tenant_id, event_id, job_try, text)
        except Exception as error:
            if isinstance(error, TransientFailure) and job_try < self.max_tries:
                self._retry(f"could not mark the failure: {error.message}", job_try)
            log.exception(
                "could not mark the event as failed; the reconciler will enqueue it again",
                extra={"code": code, "reason": text},
            )
            SCORING_JOBS.labels("unsettled").inc()
            return "unsettled"
        log.error("event marked as failed", extra={"code": code, "reason": text, "tries": job_try})
        SCORING_JOBS.labels("failed").inc()
        SCORING_FAILURES.labels(code).inc()
        return "failed"


async def score_event_job(
    ctx: dict[str, Any], tenant_id: str, event_id: str, correlation_id: str | None = None
) -> str:
    """The arq job ``score_event``."""
    jobs: ScoringJobs = ctx[_STATE]
    SCORING_WAIT_SECONDS.observe(max(0.0, time.time() - ctx["score"] / 1000))
    with bind_context(
        tenant_id=tenant_id,
        event_id=event_id,
        correlation_id=correlation_id,
        job_id=ctx["job_id"],
    ):
        try:
            tenant, event = uuid.UUID(tenant_id), uuid.UUID(event_id)
        except (TypeError, ValueError):
            log.error("score job with malformed ids dropped")
            SCORING_JOBS.labels("invalid").inc()
            return "invalid"
        return await jobs.score(tenant, event, correlation_id, int(ctx["job_try"]))


async def score_events_job(ctx: dict[str, Any], tenant_id: str, events: Any) -> str:
    """The arq job ``score_events``: a batch of one tenant's events, as the dispatcher
    sends them (``[[event_id, correlation_id], ...]``)."""
    jobs: ScoringJobs = ctx[_STATE]
    SCORING_WAIT_SECONDS.observe(max(0.0, time.time() - ctx["score"] / 1000))
    with bind_context(tenant_id=tenant_id, job_id=ctx["job_id"]):
        try:
            tenant, batch = uuid.UUID(tenant_id), _batch(events)
        except (TypeError, ValueError):
            log.error("score job with a malformed batch dropped")
            SCORING_JOBS.labels("invalid").inc()
            return "invalid"
        return await jobs.score_batch(ctx["redis"], tenant, batch, int(ctx["job_try"]))


def _batch(events: Any) -> list[tuple[uuid.UUID, str | None]]:
    """The events of a batch job; ValueError for anything but 1 to MAX_BATCH pairs of an
    event id and a correlation id (or null)."""
    if not isinstance(events, list) or not 0 < len(events) <= MAX_BATCH:
        raise ValueError("not a list of 1 to MAX_BATCH events")
    batch: dict[uuid.UUID, str | None] = {}
    for item in events:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise ValueError("not an [event id, correlation id] pair")
        event_id, correlation_id = item
        batch[uuid.UUID(event_id)] = valid_correlation_id(correlation_id)
    return list(batch.items())


def create_worker(settings: Settings, **overrides: Any) -> Worker:
    """The arq worker, configured from settings; ``overrides`` are :class:`arq.Worker`
    arguments (tests run it in burst mode, without signal handlers)."""

    async def startup(ctx: dict[str, Any]) -> None:
        engine = make_engine(
            settings.database_url,
            pool_size=settings.worker_concurrency,
            application_name=CONNECTION_NAME,
        )
        ctx["engine"] = engine
        uow_factory = unit_of_work_factory(engine)
        scorers = CachedScorers()
        batches = (
            Batches(
                uow_factory,
                scorers,
                settings.worker_batch_size,
                settings.worker_batch_linger_seconds,
            )
            if settings.worker_batch_size > 1
            else None
        )
        ctx[_STATE] = ScoringJobs(
            uow_factory,
            scorers,
            settings.worker_max_tries,
            Backoff(first_seconds=settings.worker_retry_seconds, max_seconds=60.0),
            batches,
        )
        log.info(
            "scoring worker ready",
            extra={"queue": settings.score_queue, "concurrency": settings.worker_concurrency},
        )

    async def shutdown(ctx: dict[str, Any]) -> None:
        engine = ctx.pop("engine", None)
        if engine is not None:
            await engine.dispose()

    options: dict[str, Any] = {
        "functions": [
            func(
                score_event_job,
                name=SCORE_EVENT,
                keep_result=0,
                timeout=settings.worker_job_timeout_seconds,
                max_tries=settings.worker_max_tries,
            ),
            func(
                score_events_job,
                name=SCORE_EVENTS,
                keep_result=0,
                timeout=settings.worker_job_timeout_seconds,
                max_tries=settings.worker_max_tries,
            ),
        ],
        "queue_name": settings.score_queue,
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "on_startup": startup,
        "on_shutdown": shutdown,
        "max_jobs": settings.worker_concurrency,
        "job_timeout": settings.worker_job_timeout_seconds,
        # Also covers a job that arq itself gives up on (see adapters.score_queue).
        "keep_result": 0,
        "max_tries": settings.worker_max_tries,
        "poll_delay": POLL_SECONDS,
        "job_completion_wait": settings.worker_stop_grace_seconds,
        "health_check_interval": HEALTH_CHECK_SECONDS,
        "job_serializer": dumps,
        "job_deserializer": loads,
        "log_results": False,
    }
    return Worker(**{**options, **overrides})


async def run(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT. arq then stops taking jobs, gives those in hand
    ``worker_stop_grace_seconds`` to finish, and cancels the rest, which stay queued
    (their transactions roll back) and run again on another worker."""
    if logging.getLogger().level > logging.DEBUG:
        # arq logs two lines per job; at hundreds of jobs a second that is the bulk of
        # the process's work. Warnings (a job that expired, a lost function) still show.
        logging.getLogger("arq").setLevel(logging.WARNING)
    serve_metrics(settings.worker_metrics_port, settings.metrics_host)
    worker = create_worker(settings)
    try:
        await worker.async_run()
    except asyncio.CancelledError:
        # How arq ends its main task on a signal: a normal stop.
        pass
    finally:
        await worker.close()
    log.info("scoring worker stopped")
