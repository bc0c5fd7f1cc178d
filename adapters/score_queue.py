"""The arq queue of score jobs: job ids, how jobs are encoded, and enqueueing.

There are two kinds of job:

* ``score_events(tenant_id, [[event_id, correlation_id], ...])``, the dispatcher's: the
  events of one tenant that reached it together, up to :data:`MAX_BATCH`, scored in one
  transaction with set-wise statements (a handful per batch rather than about ten per
  event).
* ``score_event(tenant_id, event_id, correlation_id)``: one event, with retries and
  failure marking of its own. Re-drives use it, and so does a batch that failed, which
  splits into one such job per event (see :mod:`workers.scoring`).

Why a new job is never silently dropped
---------------------------------------
arq's ``enqueue_job`` answers ``None``, and enqueues nothing, while a job with the same
id exists (queued, deferred for a retry, or running) or while its result is kept. A
deterministic id is what makes a repeated delivery cheap, but it also means a genuinely
needed job can be refused. Each way that could happen is closed:

* Results are never kept (``keep_result=0`` on the worker, see :mod:`workers.scoring`).
  Once a job has finished, its id is free again: a later delivery of the same event is
  enqueued and runs, and the assessment's unique key (event, ruleset version) makes that
  run change nothing. Without this, a re-delivery within the result's lifetime would be
  refused although nobody is going to score the event.
* A refusal while the same id is queued or running is harmless: that job reads the
  event when it runs, and the event never changes, so it does exactly what the refused
  one would have done.
* A worker killed mid-job leaves the job's key and its in-progress key behind, and the
  job waits until the in-progress key expires (the job timeout plus 10 s); if Redis
  loses its data, the job is gone altogether. Re-drives therefore never reuse the
  dispatcher's id: the reconciler uses ``score:<tenant>:<event>:r<period>`` and an
  operator's re-drive ``score:<tenant>:<event>:d<milliseconds>``, which nothing else
  holds. Two reconcilers in the same period agree on the id and only one job results.

A batch job's id is derived from its events, so the same batch sent twice is one job.
Before it is enqueued, each of its events gets a marker naming it
(:func:`batch_markers`), kept as long as arq keeps a job: the reconciler reads them to
leave alone an event whose batch still waits in the queue.

Jobs are encoded as JSON rather than arq's default pickle: a job is three strings, and
nobody who can write to Redis can make a worker run code by unpickling.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix
from redis.asyncio import BlockingConnectionPool
from redis.exceptions import RedisError

from adapters.settings import Settings
from domain.errors import TransientFailure

SCORE_EVENT = "score_event"
SCORE_EVENTS = "score_events"
# The most events one batch job carries.
MAX_BATCH = 500
# As long as arq keeps a job it has not run (a day, its default expiry).
MARKER_SECONDS = 24 * 3600
_MARKER_PREFIX = "vigil:score-batch:"
# How long a command waits for a free connection of the pool before it fails.
POOL_WAIT_SECONDS = 10


def dumps(value: Any) -> bytes:
    # ``default=str``: a failed job's result (an exception) is written as its text.
    return json.dumps(value, default=str, separators=(",", ":")).encode()


def loads(raw: bytes) -> Any:
    return json.loads(raw)


def job_id(tenant_id: uuid.UUID, event_id: uuid.UUID) -> str:
    """The dispatcher's id for the event's job."""
    return f"score:{tenant_id}:{event_id}"


def batch_job_id(tenant_id: uuid.UUID, event_ids: Sequence[uuid.UUID]) -> str:
    """The dispatcher's id for a batch job: the same events make the same id."""
    events = hashlib.sha256(",".join(sorted(str(event) for event in event_ids)).encode())
    return f"score:{tenant_id}:b{events.hexdigest()[:32]}"


def _marker(tenant_id: uuid.UUID, event_id: uuid.UUID) -> str:
    return f"{_MARKER_PREFIX}{tenant_id}:{event_id}"


def reconciler_job_id(tenant_id: uuid.UUID, event_id: uuid.UUID, period: int) -> str:
    return f"{job_id(tenant_id, event_id)}:r{period}"


def operator_job_id(tenant_id: uuid.UUID, event_id: uuid.UUID) -> str:
    return f"{job_id(tenant_id, event_id)}:d{time.time_ns() // 1_000_000}"


def connect(settings: Settings, *, max_connections: int = 50) -> ArqRedis:
    """A client of the score queue. Nothing is sent until it is used, so a process starts
    while Redis is down; each command then fails with :class:`TransientFailure`."""
    # A blocking pool: more commands at once than it has connections (a reconciler pass
    # enqueueing many events beside the dispatcher's own) wait for one instead of failing
    # with "too many connections", which would requeue every message in hand.
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections,
        timeout=POOL_WAIT_SECONDS,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
    )
    return ArqRedis(
        pool,
        job_serializer=dumps,
        job_deserializer=loads,
        default_queue_name=settings.score_queue,
    )


async def enqueue_score(
    redis: ArqRedis,
    tenant_id: uuid.UUID,
    event_id: uuid.UUID,
    *,
    correlation_id: str | None = None,
    job: str | None = None,
) -> bool:
    """Enqueue the event's score job under ``job`` (the dispatcher's id by default).
    False when arq refused it because a job with that id is queued or running (see the
    module's docstring for why that is safe)."""
    try:
        enqueued = await redis.enqueue_job(
            SCORE_EVENT,
            str(tenant_id),
            str(event_id),
            correlation_id,
            _job_id=job or job_id(tenant_id, event_id),
        )
    except (RedisError, OSError) as error:
        raise TransientFailure(
            f"the score queue is unreachable ({type(error).__name__})"
        ) from error
    return enqueued is not None


async def enqueue_batch(
    redis: ArqRedis,
    tenant_id: uuid.UUID,
    events: Sequence[tuple[uuid.UUID, str | None]],
) -> bool:
    """Enqueue one job scoring ``events`` (ids with their correlation ids, at most
    :data:`MAX_BATCH`) under :func:`batch_job_id`. False when a job with that id is
    queued or running already."""
    if not 0 < len(events) <= MAX_BATCH:
        raise ValueError(f"a batch job carries 1 to {MAX_BATCH} events")
    job = batch_job_id(tenant_id, [event_id for event_id, _ in events])
    try:
        # The markers first: a reconciler that finds the job also finds what it holds.
        async with redis.pipeline(transaction=False) as pipe:
            for event_id, _ in events:
                pipe.set(_marker(tenant_id, event_id), job, ex=MARKER_SECONDS)
            await pipe.execute()
        enqueued = await redis.enqueue_job(
            SCORE_EVENTS,
            str(tenant_id),
            [[str(event_id), correlation_id] for event_id, correlation_id in events],
            _job_id=job,
        )
    except (RedisError, OSError) as error:
        raise TransientFailure(
            f"the score queue is unreachable ({type(error).__name__})"
        ) from error
    return enqueued is not None


async def batch_markers(
    redis: ArqRedis, events: Sequence[tuple[uuid.UUID, uuid.UUID]]
) -> list[str | None]:
    """For each (tenant, event), the id of the last batch job the event was sent in,
    while arq may still hold that job."""
    if not events:
        return []
    try:
        found = await redis.mget([_marker(tenant, event) for tenant, event in events])
    except (RedisError, OSError) as error:
        raise TransientFailure(
            f"the score queue is unreachable ({type(error).__name__})"
        ) from error
    return [value.decode() if isinstance(value, bytes) else value for value in found]


async def waiting(redis: ArqRedis, job_ids: Sequence[str]) -> list[bool]:
    """For each id, whether that job sits in the queue and no worker has started it (it
    will run without help). A running job is not waiting: its worker may be dead."""
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for job in job_ids:
                pipe.exists(job_key_prefix + job)
                pipe.exists(in_progress_key_prefix + job)
            flags = await pipe.execute()
    except (RedisError, OSError) as error:
        raise TransientFailure(
            f"the score queue is unreachable ({type(error).__name__})"
        ) from error
    return [
        bool(queued) and not running
        for queued, running in zip(flags[::2], flags[1::2], strict=True)
    ]
