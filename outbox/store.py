"""The relay's SQL: claim the rows that may leave now, mark what became of them, delete
what was published long ago.

A row may leave when it is due and is the *head* of its ordering key: no earlier row of
the same (tenant, ordering key) is still pending. Only heads are claimed with
``SKIP LOCKED``; the rows that follow a claimed head are then locked in the same
transaction. Nobody else claims a row that is not a head, so while one relay holds a
key's head, that whole key is its own, and a key's messages leave in ``seq`` order.

Parked rows are not pending: they hold up nothing behind them.

Heads are found in two ways, because each is quick where the other is slow:

* in ``seq`` order, within a window of the oldest pending rows: quick when there are
  many keys, so that heads are dense among the oldest rows;
* one index descent per key with pending rows (a "loose index scan"), when the window
  held fewer heads than the batch wants: quick when there are few keys, each with a
  long queue. It visits as many keys as the window holds rows, in key order, and no
  more, so that with a long backlog of many keys (one per event) a claim costs the same
  as with a short one; each head it finds is then locked by its ``seq``, oldest first,
  until the batch is full.

Neither keeps a cursor: a row that commits after a row with a higher ``seq`` is found.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

# How many of the oldest pending rows the quick path looks at, per row of the batch.
_WINDOW_PER_ROW = 5


def _pending(alias: str) -> str:
    return f"{alias}.published_at IS NULL AND {alias}.parked_at IS NULL"


# In the order of PendingRow's fields, which are built from them by position.
_COLUMNS = """
    o.tenant_id, o.message_id, o.seq, o.ordering_key, o.message_type, o.attempts,
    o.envelope::text AS body, o.envelope->>'correlationid' AS correlation_id,
    o.next_attempt_at <= now() AS due
"""

# The claim's statements go to asyncpg as they are ($1, $2, ...): the relay runs them on
# a connection of its own, without SQLAlchemy's per-row work. The statements that must
# stay quick with a long backlog are public: a test checks that their conditions still
# match the partial indexes on pending and published rows.
#
# A head is found by asking, per candidate, for the first pending seq of its key: a
# correlated subquery that always probes outbox_pending_by_key. Written as NOT EXISTS, the
# same test became an anti-join, and on a table without statistics (new, or never
# analysed) the planner ran it as a scan of the whole index per candidate: 0.6 s per claim
# with a backlog of 10,000 rows, against 2 ms.
# Each row also says how many pending rows the window held (``window_rows``, last): a
# window not full held every pending row, so no head lies beyond it. The window is read
# once for both its size and its last seq: between vacuums its index range holds the
# entries of rows published since, each checked in the table, and reading it twice took
# half of the statement's time.
# The window: the oldest pending rows, $1 of them at most.
_WINDOW = f"SELECT p.seq FROM outbox p WHERE {_pending('p')} ORDER BY p.seq LIMIT $1"

HEADS_IN_WINDOW = f"""
WITH w AS MATERIALIZED (
    SELECT count(*) AS rows, max(x.seq) AS last_seq FROM ({_WINDOW}) x
)
SELECT {_COLUMNS},
       (SELECT w.rows FROM w) AS window_rows
FROM outbox o
WHERE {_pending("o")}
  AND o.next_attempt_at <= now()
  AND o.seq <= (SELECT w.last_seq FROM w)
  AND o.seq = (
      SELECT e.seq FROM outbox e
      WHERE e.tenant_id = o.tenant_id AND e.ordering_key = o.ordering_key AND {_pending("e")}
      ORDER BY e.seq
      LIMIT 1)
ORDER BY o.seq
LIMIT $2
FOR UPDATE OF o SKIP LOCKED
"""

# How many pending rows the window holds, asked only when HEADS_IN_WINDOW gave no row
# (every due head in it locked by another claim, or nothing pending) and so no count.
WINDOW_ROWS = f"""
SELECT count(*) FROM ({_WINDOW}) c
"""

HEADS_BY_KEY = f"""
WITH RECURSIVE firsts AS (
    (SELECT p.tenant_id, p.ordering_key, p.seq, 1 AS keys FROM outbox p
     WHERE {_pending("p")}
     ORDER BY p.tenant_id, p.ordering_key, p.seq
     LIMIT 1)
    UNION ALL
    SELECT n.tenant_id, n.ordering_key, n.seq, f.keys + 1
    FROM firsts f CROSS JOIN LATERAL (
        SELECT p.tenant_id, p.ordering_key, p.seq FROM outbox p
        WHERE {_pending("p")} AND (p.tenant_id, p.ordering_key) > (f.tenant_id, f.ordering_key)
        ORDER BY p.tenant_id, p.ordering_key, p.seq
        LIMIT 1) n
    WHERE f.keys < $3
)
SELECT n.*
FROM (SELECT f.tenant_id, f.ordering_key, f.seq FROM firsts f
      WHERE f.seq <> ALL($1::bigint[]) ORDER BY f.seq) h
CROSS JOIN LATERAL (
    SELECT {_COLUMNS}
    FROM outbox o
    WHERE o.tenant_id = h.tenant_id AND o.ordering_key = h.ordering_key AND o.seq = h.seq
      AND {_pending("o")} AND o.next_attempt_at <= now()
    FOR UPDATE OF o SKIP LOCKED
) n
LIMIT $2
"""

# The descent per key must read outbox_pending_by_key in its order. With statistics
# taken while the outbox was nearly empty, the planner instead read all pending rows
# by seq and sorted them, for every key: 6.6 to 8.6 s a claim with 20,000 rows pending
# over 2,000 keys, against about 0.1 s. Sorting is priced out for that statement alone;
# the one sort it needs (of the heads found) is then priced so high that the plan would
# be compiled by JIT, which took longer than the statement, so JIT is off for it too.
BY_KEY_SETTINGS = "SET LOCAL enable_sort = off; SET LOCAL jit = off"
BY_KEY_RESET = "SET LOCAL enable_sort = on; SET LOCAL jit = DEFAULT"

# Plain FOR UPDATE, not SKIP LOCKED: a follower skipped would leave a gap in its key.
FOLLOWERS = f"""
SELECT n.*
FROM unnest($1::uuid[], $2::uuid[], $3::bigint[]) AS h(tenant_id, ordering_key, seq)
CROSS JOIN LATERAL (
    SELECT {_COLUMNS}
    FROM outbox o
    WHERE o.tenant_id = h.tenant_id AND o.ordering_key = h.ordering_key AND o.seq > h.seq
      AND {_pending("o")}
    ORDER BY o.seq
    LIMIT $4
    FOR UPDATE
) n
ORDER BY n.seq
"""

_MARK_PUBLISHED = """
UPDATE outbox o
SET published_at = clock_timestamp(), attempts = o.attempts + 1
FROM unnest($1::uuid[], $2::uuid[]) AS p(tenant_id, message_id)
WHERE o.tenant_id = p.tenant_id AND o.message_id = p.message_id
"""

_MARK_FAILED = """
UPDATE outbox o
SET attempts = o.attempts + 1,
    last_error = f.error,
    next_attempt_at = clock_timestamp() + make_interval(secs => f.delay),
    parked_at = CASE WHEN f.park THEN clock_timestamp() END
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::double precision[], $5::boolean[])
    AS f(tenant_id, message_id, error, delay, park)
WHERE o.tenant_id = f.tenant_id AND o.message_id = f.message_id
"""

# By ctid: the rows just locked are deleted with a TID scan, not a join over the table.
DELETE_PUBLISHED = text("""
DELETE FROM outbox
WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM outbox
    WHERE published_at IS NOT NULL AND published_at < now() - make_interval(secs => :age)
    ORDER BY published_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
))
""")

_STATS = text("SELECT pending, parked, oldest_pending_seconds FROM vigil_outbox_stats()")


@dataclass(frozen=True, slots=True)
class PendingRow:
    """A claimed outbox row; ``body`` is its CloudEvent, serialised once by PostgreSQL."""

    tenant_id: uuid.UUID
    message_id: uuid.UUID
    seq: int
    ordering_key: uuid.UUID
    message_type: str
    attempts: int
    body: str
    correlation_id: str | None
    due: bool

    @property
    def key(self) -> tuple[uuid.UUID, uuid.UUID]:
        return (self.tenant_id, self.ordering_key)


@dataclass(frozen=True, slots=True)
class Failure:
    row: PendingRow
    error: str
    retry_in_seconds: float
    park: bool


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    parked: int
    oldest_pending_seconds: float


@dataclass(slots=True)
class Claim:
    """The rows one claim locked, grouped by ordering key, each group in ``seq`` order
    (its head first); and whether it may have left rows behind that could leave now."""

    groups: dict[tuple[uuid.UUID, uuid.UUID], list[PendingRow]]
    more_due: bool

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.groups.values())


async def claim(connection: asyncpg.Connection, batch_size: int) -> Claim:
    """Lock up to ``batch_size`` rows that may leave now. Run it in a transaction.

    ``more_due`` is false only when the claim saw to the end of what was due: fewer
    heads than the batch holds, and every key's followers taken to the last. Rows it
    could not see then are rows another relay holds, or rows committed since, whose
    commit wakes the relays; so a relay whose claim left nothing behind may wait for
    that wakeup instead of claiming again at once."""
    heads = await _claim_heads(connection, batch_size)
    groups = {(head.tenant_id, head.ordering_key): [head] for head in heads}
    per_key = (batch_size - len(heads)) // len(heads) if heads else 0
    if per_key == 0:
        return Claim(groups, more_due=bool(heads))

    followers = await connection.fetch(
        FOLLOWERS,
        [head.tenant_id for head in heads],
        [head.ordering_key for head in heads],
        [head.seq for head in heads],
        per_key,
    )
    stopped: set[tuple[uuid.UUID, uuid.UUID]] = set()
    found: dict[tuple[uuid.UUID, uuid.UUID], int] = {}
    for record in followers:  # in seq order
        row = PendingRow(*record)
        key = (row.tenant_id, row.ordering_key)
        found[key] = found.get(key, 0) + 1
        # A row waiting out its back-off holds back the rest of its key.
        if not row.due:
            stopped.add(key)
        if key not in stopped:
            groups[key].append(row)
    cut_short = any(count == per_key for key, count in found.items() if key not in stopped)
    return Claim(groups, more_due=len(heads) == batch_size or cut_short)


async def _claim_heads(connection: asyncpg.Connection, batch_size: int) -> list[PendingRow]:
    window = batch_size * _WINDOW_PER_ROW
    records = await connection.fetch(HEADS_IN_WINDOW, window, batch_size)
    heads = [PendingRow(*record[:-1]) for record in records]
    if len(heads) >= batch_size:
        return heads
    # The second way only when the window may have missed heads: it was full. A window
    # that gave no row said nothing of its size; most often another claim holds every
    # head in it, and a search of every key then would find those locked heads again.
    window_rows = (
        records[0]["window_rows"] if records else await connection.fetchval(WINDOW_ROWS, window)
    )
    if window_rows >= window:
        await connection.execute(BY_KEY_SETTINGS)
        records = await connection.fetch(
            HEADS_BY_KEY, [head.seq for head in heads], batch_size - len(heads), window
        )
        await connection.execute(BY_KEY_RESET)
        heads.extend(PendingRow(*record) for record in records)
        heads.sort(key=lambda row: row.seq)
    return heads


async def mark_published(connection: asyncpg.Connection, rows: Sequence[PendingRow]) -> None:
    if not rows:
        return
    await connection.execute(
        _MARK_PUBLISHED, [row.tenant_id for row in rows], [row.message_id for row in rows]
    )


async def mark_failed(connection: asyncpg.Connection, failures: Sequence[Failure]) -> None:
    if not failures:
        return
    await connection.execute(
        _MARK_FAILED,
        [failure.row.tenant_id for failure in failures],
        [failure.row.message_id for failure in failures],
        [failure.error for failure in failures],
        [failure.retry_in_seconds for failure in failures],
        [failure.park for failure in failures],
    )


async def delete_published(
    connection: AsyncConnection, *, older_than_seconds: float, limit: int
) -> int:
    """Delete up to ``limit`` rows published more than ``older_than_seconds`` ago."""
    result = await connection.execute(DELETE_PUBLISHED, {"age": older_than_seconds, "limit": limit})
    return result.rowcount


async def read_stats(connection: AsyncConnection) -> OutboxStats:
    row = (await connection.execute(_STATS)).one()
    return OutboxStats(int(row.pending), int(row.parked), float(row.oldest_pending_seconds))
