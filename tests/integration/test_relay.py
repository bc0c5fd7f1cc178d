"""The outbox relay against the real PostgreSQL and RabbitMQ, driven batch by batch.

Each test silences the rows earlier tests left pending, writes its own rows, runs
:meth:`Relay.run_once` and looks at what reached a queue bound to the events exchange
and at what became of the rows.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.broker import Names
from adapters.database import plain_url
from adapters.settings import Settings
from domain.ids import new_id
from outbox import store
from outbox.publisher import CONTENT_TYPE, Publisher
from outbox.relay import Backoff, Relay, _work
from outbox.wakeup import Wakeup
from services.ingest import Caller, Outcome, ingest_events
from tests.integration.relay_support import MakeRelay, insert_row, outbox_rows, tap, until
from tests.integration.scoring_support import eventually, sessions_waiting_for_locks

pytestmark = pytest.mark.usefixtures("quiet_outbox")


def published_total(outcome: str) -> float:
    return REGISTRY.get_sample_value("vigil_relay_publish_total", {"outcome": outcome}) or 0.0


async def due_now(owner_engine: AsyncEngine, tenant: uuid.UUID, message_id: uuid.UUID) -> None:
    """Skip a row's back-off, as the passing of time would."""
    async with owner_engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE outbox SET next_attempt_at = now()"
                " WHERE tenant_id = :tenant AND message_id = :id"
            ),
            {"tenant": tenant, "id": message_id},
        )


async def listener_pid(engine: AsyncEngine, application: str, *, other_than: int | None) -> int:
    """The backend that listens for the relay, once it has run its LISTEN."""
    query = text(
        "SELECT pid FROM pg_stat_activity"
        " WHERE application_name = :name AND query LIKE 'LISTEN%' AND pid <> :other"
    )
    async with asyncio.timeout(10):
        while True:
            async with engine.connect() as connection:
                pid = await connection.scalar(
                    query, {"name": application, "other": other_than or 0}
                )
            if pid is not None:
                return int(pid)
            await asyncio.sleep(0.05)


async def test_an_ingested_event_is_published_as_a_cloud_event(
    tenant: uuid.UUID,
    uow_factory: Any,
    transaction_event: Any,
    make_relay: MakeRelay,
    owner_engine: AsyncEngine,
    amqp: AbstractRobustConnection,
    names: Names,
) -> None:
    caller = Caller(tenant, actor="core-banking", door="test", correlation_id="corr-42")
    (result,) = await ingest_events(uow_factory, caller, [transaction_event()])
    assert result.outcome is Outcome.ACCEPTED
    (message_id,) = await outbox_rows(owner_engine, tenant)

    async with tap(amqp, names, tenant, routing_key="#") as queue:
        assert await make_relay().run_once() == 1
        await until(lambda: len(queue.messages) == 1)

    (message,) = queue.messages
    (envelope,) = queue.envelopes()
    assert envelope["id"] == message_id
    assert envelope["specversion"] == "1.0"
    assert envelope["type"] == "event.received"
    assert envelope["tenantid"] == str(tenant)
    assert envelope["correlationid"] == "corr-42"
    assert envelope["data"]["eventId"] == str(result.event_id)
    assert message.message_id == message_id
    assert message.correlation_id == "corr-42"
    assert message.content_type == CONTENT_TYPE
    assert message.delivery_mode == 2
    assert message.routing_key == "event.received"
    assert message.headers == {"tenantid": str(tenant), "type": "event.received"}

    row = (await outbox_rows(owner_engine, tenant))[message_id]
    assert row.published_at is not None
    assert row.parked_at is None


async def test_a_row_that_commits_late_is_still_published(
    tenant: uuid.UUID,
    make_relay: MakeRelay,
    owner_engine: AsyncEngine,
    amqp: AbstractRobustConnection,
    names: Names,
) -> None:
    relay = make_relay()
    async with tap(amqp, names, tenant) as queue, owner_engine.connect() as late:
        transaction = await late.begin()
        late_id, late_seq = await insert_row(late, tenant)
        async with owner_engine.begin() as early:
            early_id, early_seq = await insert_row(early, tenant)
        assert early_seq > late_seq

        assert await relay.run_once() == 1
        await until(lambda: queue.ids == [str(early_id)])

        await transaction.commit()
        assert await relay.run_once() == 1
        await until(lambda: queue.ids == [str(early_id), str(late_id)])

    rows = await outbox_rows(owner_engine, tenant)
    assert all(row.published_at is not None for row in rows.values())


async def test_an_unroutable_message_is_retried_then_parked_without_holding_up_others(
    tenant: uuid.UUID,
    make_relay: MakeRelay,
    owner_engine: AsyncEngine,
    amqp: AbstractRobustConnection,
    names: Names,
) -> None:
    relay = make_relay(max_attempts=3, retry=Backoff(base_seconds=60, cap_seconds=90))
    subject, other_subject = new_id(), new_id()
    async with owner_engine.begin() as connection:
        stuck, _ = await insert_row(
            connection, tenant, ordering_key=subject, message_type="test.nobody.listens"
        )
        behind, _ = await insert_row(connection, tenant, ordering_key=subject)
        other, _ = await insert_row(connection, tenant, ordering_key=other_subject)
    returned_before, parked_before = published_total("returned"), published_total("parked")

    async with tap(amqp, names, tenant) as queue:
        # All three are claimed; the row behind the stuck one is left as it was.
        assert await relay.run_once() == 3
        await until(lambda: queue.ids == [str(other)])
        rows = await outbox_rows(owner_engine, tenant)
        assert "NO_ROUTE" in rows[str(stuck)].last_error
        assert (rows[str(behind)].attempts, rows[str(behind)].published_at) == (0, None)

        for attempt, back_off in ((1, 60), (2, 90)):
            row = (await outbox_rows(owner_engine, tenant))[str(stuck)]
            assert (row.attempts, row.published_at, row.parked_at) == (attempt, None, None)
            waits = (row.next_attempt_at - row.now).total_seconds()
            assert back_off - 5 < waits <= back_off
            # Backing off: neither the stuck row nor the one behind it may leave yet.
            assert await relay.run_once() == 0
            await due_now(owner_engine, tenant, stuck)
            assert await relay.run_once() == 2

        row = (await outbox_rows(owner_engine, tenant))[str(stuck)]
        assert row.attempts == 3
        assert row.parked_at is not None
        assert row.published_at is None
        assert await relay.run_once() == 1
        await until(lambda: queue.ids == [str(other), str(behind)])

    rows = await outbox_rows(owner_engine, tenant)
    assert rows[str(behind)].published_at is not None
    assert published_total("returned") - returned_before == 3
    assert published_total("parked") - parked_before == 1


async def test_a_long_queue_in_back_off_does_not_hide_other_subjects(
    tenant: uuid.UUID,
    make_relay: MakeRelay,
    owner_engine: AsyncEngine,
    amqp: AbstractRobustConnection,
    names: Names,
) -> None:
    # A batch of 2 looks first at the 10 oldest pending rows: all of them the blocked
    # subject's, so the other subject's row must be found past them.
    relay = make_relay(batch_size=2)
    blocked = new_id()
    async with owner_engine.begin() as connection:
        for _ in range(12):
            await insert_row(connection, tenant, ordering_key=blocked)
        await connection.execute(
            text(
                "UPDATE outbox SET next_attempt_at = now() + interval '1 hour'"
                " WHERE seq = (SELECT min(seq) FROM outbox WHERE tenant_id = :tenant)"
            ),
            {"tenant": tenant},
        )
        waiting, _ = await insert_row(connection, tenant)

    async with tap(amqp, names, tenant) as queue:
        assert await relay.run_once() == 1
        await until(lambda: queue.ids == [str(waiting)])
        assert await relay.run_once() == 0


@pytest.mark.parametrize(
    ("keys", "rows_per_key", "claims"),
    [
        # (claimed, more_due) of each claim until the outbox is empty
        (3, 2, [(6, False)]),
        (12, 1, [(10, True), (2, False)]),
        (1, 15, [(10, True), (5, False)]),
    ],
    ids=["all-taken", "more-heads-than-the-batch", "followers-cut-short"],
)
async def test_a_claim_says_whether_it_left_rows_that_may_leave_now(
    tenant: uuid.UUID,
    make_relay: MakeRelay,
    owner_engine: AsyncEngine,
    amqp: AbstractRobustConnection,
    names: Names,
    keys: int,
    rows_per_key: int,
    claims: list[tuple[int, bool]],
) -> None:
    # The claim loop claims again at once only when rows may have been left behind;
    # otherwise it waits for the next commit's wakeup, instead of paying for an empty
    # claim after every batch.
    relay = make_relay(batch_size=10)
    async with owner_engine.begin() as connection:
        for _ in range(keys):
            key = new_id()
            for _ in range(rows_per_key):
                await insert_row(connection, tenant, ordering_key=key)

    async with tap(amqp, names, tenant) as queue:
        seen = []
        for _ in claims:
            claimed = await relay.run_once()
            seen.append((claimed, relay.more_due))
        assert seen == claims
        await until(lambda: len(queue.ids) == keys * rows_per_key)
        assert await relay.run_once() == 0


@pytest.mark.parametrize(("pending", "searched_by_key"), [(3, False), (12, True)])
async def test_heads_are_searched_by_key_only_when_the_window_may_have_missed_some(
    settings: Settings,
    tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    pending: int,
    searched_by_key: bool,
) -> None:
    # A batch of 2 looks at a window of the 10 oldest pending rows. With 3 pending the
    # window held them all, and the search key by key (a descent per key with pending
    # rows) could find nothing more.
    async with owner_engine.begin() as connection:
        key = new_id()
        for _ in range(pending):
            await insert_row(connection, tenant, ordering_key=key)
    statements: list[str] = []
    connection = await asyncpg.connect(plain_url(settings.relay_database_url))
    try:
        connection.add_query_logger(lambda record: statements.append(record.query))
        async with connection.transaction():
            claimed = await store.claim(connection, 2)
    finally:
        await connection.close()
    assert len(claimed) == 2
    assert (store.HEADS_BY_KEY in statements) is searched_by_key


@pytest.mark.parametrize(("pending", "searched_by_key"), [(6, False), (12, True)])
async def test_a_claim_finding_every_head_held_searches_by_key_only_past_a_full_window(
    settings: Settings,
    tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    pending: int,
    searched_by_key: bool,
) -> None:
    # Another claim holds every pending row. A batch of 2 looks at a window of 10: with 6
    # pending it saw them all, and a descent per key would only meet the same locked
    # rows again (with a backlog, thousands of them, at every claim of a second loop).
    async with owner_engine.begin() as connection:
        for _ in range(pending):
            await insert_row(connection, tenant, ordering_key=new_id())
    holder = await asyncpg.connect(plain_url(settings.relay_database_url))
    connection = await asyncpg.connect(plain_url(settings.relay_database_url))
    statements: list[str] = []
    try:
        async with holder.transaction():
            assert len(await store.claim(holder, 20)) == pending
            connection.add_query_logger(lambda record: statements.append(record.query))
            async with connection.transaction():
                claimed = await store.claim(connection, 2)
    finally:
        await connection.close()
        await holder.close()
    assert len(claimed) == 0
    assert (store.HEADS_BY_KEY in statements) is searched_by_key


async def test_a_message_the_broker_refuses_stays_pending(
    tenant: uuid.UUID,
    make_relay: MakeRelay,
    owner_engine: AsyncEngine,
    amqp: AbstractRobustConnection,
    names: Names,
) -> None:
    message_type = f"test.refused.{secrets.token_hex(4)}"
    async with amqp.channel() as channel:
        # A full queue that refuses more: the broker nacks what is routed to it.
        full = await channel.declare_queue(
            exclusive=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
        )
        await full.bind(names.events_exchange, routing_key=message_type)
        async with owner_engine.begin() as connection:
            refused, _ = await insert_row(connection, tenant, message_type=message_type)
        nacked_before = published_total("nacked")

        assert await make_relay().run_once() == 1

    row = (await outbox_rows(owner_engine, tenant))[str(refused)]
    assert (row.attempts, row.published_at, row.parked_at) == (1, None, None)
    assert row.last_error.startswith("nacked")
    assert published_total("nacked") - nacked_before == 1


async def test_in_a_batch_only_the_refused_message_is_counted_against_its_row(
    tenant: uuid.UUID,
    make_relay: MakeRelay,
    owner_engine: AsyncEngine,
    amqp: AbstractRobustConnection,
    names: Names,
) -> None:
    # The batch's messages leave together; each broker answer must reach its own row.
    message_type = f"test.refused.{secrets.token_hex(4)}"
    async with amqp.channel() as channel, tap(amqp, names, tenant) as queue:
        full = await channel.declare_queue(
            exclusive=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
        )
        await full.bind(names.events_exchange, routing_key=message_type)
        async with owner_engine.begin() as connection:
            before = [(await insert_row(connection, tenant))[0] for _ in range(3)]
            refused, _ = await insert_row(connection, tenant, message_type=message_type)
            after = [(await insert_row(connection, tenant))[0] for _ in range(3)]

        assert await make_relay().run_once() == 7
        await until(lambda: len(queue.messages) == 6)

    assert sorted(queue.ids) == sorted(str(message_id) for message_id in before + after)
    rows = await outbox_rows(owner_engine, tenant)
    assert rows[str(refused)].last_error.startswith("nacked")
    assert rows[str(refused)].published_at is None
    assert all(rows[str(message_id)].published_at for message_id in before + after)


async def test_a_message_larger_than_a_frame_arrives_whole(
    tenant: uuid.UUID,
    make_relay: MakeRelay,
    owner_engine: AsyncEngine,
    amqp: AbstractRobustConnection,
    names: Names,
) -> None:
    padding = secrets.token_hex(150_000)  # 300,000 characters: above the 128 KiB frame
    async with owner_engine.begin() as connection:
        message_id, _ = await insert_row(connection, tenant)
        await connection.execute(
            text(
                "UPDATE outbox SET envelope = jsonb_set(envelope, '{data,padding}', to_jsonb("
                "CAST(:padding AS text))) WHERE tenant_id = :tenant AND message_id = :id"
            ),
            {"padding": padding, "tenant": tenant, "id": message_id},
        )

    async with tap(amqp, names, tenant) as queue:
        assert await make_relay().run_once() == 1
        await until(lambda: len(queue.messages) == 1)

    (envelope,) = queue.envelopes()
    assert envelope["id"] == str(message_id)
    assert envelope["data"]["padding"] == padding


@pytest.mark.usefixtures("amqp")
async def test_a_publish_without_an_answer_in_time_stays_pending(
    settings: Settings, tenant: uuid.UUID, relay_engine: AsyncEngine, owner_engine: AsyncEngine
) -> None:
    async with owner_engine.begin() as connection:
        late, _ = await insert_row(connection, tenant)
    impatient = Publisher(
        settings.amqp_url.get_secret_value(), Names(settings.amqp_prefix), timeout_seconds=1e-6
    )
    relay = Relay(relay_engine, impatient)
    try:
        assert await relay.run_once() == 1
    finally:
        await relay.close()

    row = (await outbox_rows(owner_engine, tenant))[str(late)]
    assert (row.attempts, row.published_at) == (1, None)
    assert row.last_error.startswith("timeout")


async def test_three_relays_publish_each_message_once_and_each_subject_in_order(
    tenant: uuid.UUID,
    uow_factory: Any,
    transaction_event: Any,
    make_relay: MakeRelay,
    owner_engine: AsyncEngine,
    amqp: AbstractRobustConnection,
    names: Names,
) -> None:
    total, subjects, batch = 10_000, 50, 1_000
    relays = [make_relay() for _ in range(3)]
    stop = asyncio.Event()

    async def keep_relaying(relay: Relay) -> None:
        while not stop.is_set():
            if await relay.run_once() == 0:
                await asyncio.sleep(0.01)

    async def ingest(first: int) -> None:
        events = [
            transaction_event(f"k-{n}", originator=f"ACC-{n % subjects:03d}")
            for n in range(first, first + batch)
        ]
        results = await ingest_events(uow_factory, Caller(tenant, "test", "test"), events)
        assert {result.outcome for result in results} == {Outcome.ACCEPTED}

    async with tap(amqp, names, tenant) as queue:
        workers = [asyncio.create_task(keep_relaying(relay)) for relay in relays]
        try:
            for first in range(0, total, 2 * batch):
                await asyncio.gather(ingest(first), ingest(first + batch))
            # Generous: a loaded machine slows this down, a broken relay never finishes it.
            await until(lambda: len(queue.messages) >= total, seconds=180)
        finally:
            stop.set()
            await asyncio.gather(*workers)
        for relay in relays:
            assert await relay.run_once() == 0
        await asyncio.sleep(0.5)

    assert len(queue.ids) == total
    assert len(set(queue.ids)) == total
    rows = await outbox_rows(owner_engine, tenant)
    assert set(rows) == set(queue.ids)
    assert all(row.published_at is not None for row in rows.values())

    arrivals: dict[uuid.UUID, list[int]] = defaultdict(list)
    for message_id in queue.ids:
        row = rows[message_id]
        arrivals[row.ordering_key].append(row.seq)
    assert len(arrivals) == subjects
    for seqs in arrivals.values():
        assert seqs == sorted(seqs)


PENDING_INDEXES = {"outbox_pending", "outbox_pending_by_key"}


async def explain(
    settings: Settings, relay_engine: AsyncEngine, statement: Any, arguments: Any
) -> str:
    """The plan of a relay statement, with sequential scans priced out, under the
    settings the relay gives it. The claim's statements are asyncpg's ($1, ...), the
    retention's SQLAlchemy's (:name)."""
    if not isinstance(statement, str):
        async with relay_engine.connect() as engine_connection:
            await engine_connection.execute(text("SET LOCAL enable_seqscan = off"))
            result = await engine_connection.execute(text(f"EXPLAIN {statement.text}"), arguments)
            lines = [line for (line,) in result]
            await engine_connection.rollback()
        return "\n".join(lines).lower()
    connection = await asyncpg.connect(plain_url(settings.relay_database_url))
    try:
        async with connection.transaction():
            await connection.execute("SET LOCAL enable_seqscan = off")
            if statement == store.HEADS_BY_KEY:
                await connection.execute(store.BY_KEY_SETTINGS)
            plan = await connection.fetch(f"EXPLAIN {statement}", *arguments)
    finally:
        await connection.close()
    return "\n".join(line for (line,) in plan).lower()


@pytest.mark.parametrize(
    ("statement", "arguments", "indexes"),
    [
        (store.HEADS_IN_WINDOW, (1000, 200), PENDING_INDEXES),
        (store.HEADS_BY_KEY, ([], 200, 1000), {"outbox_pending_by_key"}),
        (store.WINDOW_ROWS, (1000,), PENDING_INDEXES),
        (store.FOLLOWERS, ([new_id()], [new_id()], [0], 10), PENDING_INDEXES),
        (store.DELETE_PUBLISHED, {"age": 3600, "limit": 5000}, {"outbox_published"}),
    ],
    ids=["heads-in-window", "heads-by-key", "window-rows", "followers", "retention"],
)
async def test_the_relay_queries_can_use_the_partial_indexes(
    settings: Settings,
    relay_engine: AsyncEngine,
    statement: Any,
    arguments: Any,
    indexes: set[str],
) -> None:
    # With sequential scans priced out, a plan that reads the outbox through none of the
    # partial indexes means the query's conditions no longer match their predicates.
    # Which of the matching indexes the planner prefers depends on the statistics.
    lines = await explain(settings, relay_engine, statement, arguments)
    used = set(re.findall(r"(?:using|index scan on) (outbox_[a-z_]+)", lines))
    assert used, lines
    assert used & indexes, lines
    assert "seq scan on outbox" not in lines, lines


async def test_heads_are_found_by_index_on_an_outbox_never_analysed(settings: Settings) -> None:
    # A new outbox has no statistics until autovacuum gets to it. The head test must
    # still probe each candidate's key through the index, not filter a scan of the
    # whole index per candidate (0.6 s per claim with 10,000 rows pending).
    connection = await asyncpg.connect(plain_url(settings.owner_database_url))
    try:
        async with connection.transaction():
            # A temporary table of the same shape hides the outbox within this session.
            await connection.execute(
                "CREATE TEMPORARY TABLE outbox (LIKE public.outbox INCLUDING ALL) ON COMMIT DROP"
            )
            await connection.execute(
                "INSERT INTO outbox (tenant_id, message_id, ordering_key, message_type, envelope)"
                " SELECT $1, gen_random_uuid(), ($2::uuid[])[1 + i % 2000], 'event.received',"
                " '{}'::jsonb FROM generate_series(1, 10000) AS i",
                new_id(),
                [new_id() for _ in range(2000)],
            )
            plan = await connection.fetch(f"EXPLAIN {store.HEADS_IN_WINDOW}", 1000, 200)
    finally:
        await connection.close()
    lines = [line.lower() for (line,) in plan]
    assert not any("join filter" in line for line in lines), "\n".join(lines)
    probes = [line for line in lines if "index cond" in line and "o.ordering_key" in line]
    assert probes, "\n".join(lines)
    # The window is read once, for both its size and its last seq.
    assert sum("aggregate" in line for line in lines) == 1, "\n".join(lines)


@pytest.mark.parametrize("keys", [2_000, 8_000])
async def test_a_search_by_key_reads_as_much_with_a_long_backlog_as_with_a_short_one(
    settings: Settings, keys: int
) -> None:
    # A backlog of events, each its own key, on an outbox never analysed (the state a
    # replay starts in). The search must not grow with the backlog: it had joined every
    # pending row to every key it found (a minute per claim with 40,000 pending).
    connection = await asyncpg.connect(plain_url(settings.owner_database_url))
    try:
        async with connection.transaction():
            await connection.execute(
                "CREATE TEMPORARY TABLE outbox (LIKE public.outbox INCLUDING ALL) ON COMMIT DROP"
            )
            await connection.execute(
                "INSERT INTO outbox (tenant_id, message_id, ordering_key, message_type, envelope)"
                " SELECT $1, gen_random_uuid(), gen_random_uuid(), 'event.received', '{}'::jsonb"
                " FROM generate_series(1, $2) AS i",
                new_id(),
                keys,
            )
            await connection.execute(store.BY_KEY_SETTINGS)
            (plan,) = await connection.fetchrow(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {store.HEADS_BY_KEY}", [], 200, 1000
            )
            heads = await connection.fetch(store.HEADS_BY_KEY, [], 200, 1000)
    finally:
        await connection.close()
    explained = json.loads(plan)[0]
    assert "JIT" not in explained, "compiling the plan would cost more than running it"
    nodes = list(_plan_nodes(explained["Plan"]))
    assert not any("Join Filter" in node for node in nodes), plan
    walked = max(n["Actual Rows"] for n in nodes if n["Node Type"] == "Recursive Union")
    assert walked == 1000
    # The oldest heads among those visited, oldest first.
    assert len(heads) == 200
    assert [row["seq"] for row in heads] == sorted(row["seq"] for row in heads)


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


async def test_published_rows_past_the_retention_period_are_deleted(
    tenant: uuid.UUID, make_relay: MakeRelay, owner_engine: AsyncEngine
) -> None:
    relay = make_relay(retention_hours=24)
    async with owner_engine.begin() as connection:
        # More than one deletion batch of old rows.
        await connection.execute(
            text(
                "INSERT INTO outbox (tenant_id, message_id, ordering_key, message_type, envelope,"
                " published_at)"
                " SELECT :tenant, gen_random_uuid(), gen_random_uuid(), 'event.received',"
                " '{}'::jsonb, now() - interval '25 hours' FROM generate_series(1, 5100)"
            ),
            {"tenant": tenant},
        )
        recent, _ = await insert_row(connection, tenant)
        pending, _ = await insert_row(connection, tenant)
        await connection.execute(
            text(
                "UPDATE outbox SET published_at = now() - interval '23 hours'"
                " WHERE tenant_id = :tenant AND message_id = :id"
            ),
            {"tenant": tenant, "id": recent},
        )
        await connection.execute(
            text(
                "UPDATE outbox SET created_at = now() - interval '30 hours'"
                " WHERE tenant_id = :tenant AND message_id = :id"
            ),
            {"tenant": tenant, "id": pending},
        )

    assert await relay.purge_published() >= 5100

    rows = await outbox_rows(owner_engine, tenant)
    assert set(rows) == {str(recent), str(pending)}
    assert rows[str(pending)].published_at is None


async def test_the_backlog_figures_reach_the_metrics(
    tenant: uuid.UUID, make_relay: MakeRelay, owner_engine: AsyncEngine
) -> None:
    async with owner_engine.begin() as connection:
        for _ in range(3):
            await insert_row(connection, tenant)
        await connection.execute(
            text("UPDATE outbox SET created_at = now() - interval '1 hour' WHERE tenant_id = :t"),
            {"t": tenant},
        )

    await make_relay().refresh_stats()

    assert REGISTRY.get_sample_value("vigil_outbox_pending") == 3
    assert (REGISTRY.get_sample_value("vigil_outbox_oldest_pending_seconds") or 0) >= 3600


async def test_a_commit_wakes_the_relay_and_a_lost_listener_comes_back(
    settings: Settings, tenant: uuid.UUID, relay_engine: AsyncEngine, owner_engine: AsyncEngine
) -> None:
    name = f"vigil-test-{secrets.token_hex(4)}"
    wakeup = Wakeup(plain_url(settings.relay_database_url), application_name=name)
    listening = asyncio.create_task(wakeup.listen())
    try:
        lost_pid = None
        for _ in range(2):
            pid = await listener_pid(relay_engine, f"{name}-listen", other_than=lost_pid)
            await asyncio.sleep(0.1)
            await wakeup.wait(0)

            started = time.monotonic()
            await wakeup.wait(0.3)
            assert time.monotonic() - started >= 0.3, "woken without a commit"

            async with owner_engine.begin() as connection:
                await insert_row(connection, tenant)
            started = time.monotonic()
            await wakeup.wait(5)
            assert time.monotonic() - started < 1, "a commit did not wake the relay"

            async with relay_engine.connect() as connection:
                await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            lost_pid = pid
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)


async def test_a_loop_holding_a_key_claims_again_for_a_row_committed_behind_it(
    settings: Settings,
    tenant: uuid.UUID,
    make_relay: MakeRelay,
    relay_engine: AsyncEngine,
    owner_engine: AsyncEngine,
    amqp: AbstractRobustConnection,
    names: Names,
) -> None:
    """Two claim loops. Loop A holds a key's head while a row of that key is committed;
    the commit wakes loop B, which finds the key held and waits again. When A's claim
    ends, the new row is the key's head and nothing else will wake anyone: A itself must
    claim again at once, not at the next poll (30 s here)."""
    key = new_id()
    async with owner_engine.begin() as connection:
        head, _ = await insert_row(connection, tenant, ordering_key=key)
        held, _ = await insert_row(connection, tenant, ordering_key=key)
    name = f"vigil-test-{secrets.token_hex(4)}"
    wakeup = Wakeup(plain_url(settings.relay_database_url), application_name=name)
    stop = asyncio.Event()
    loops: list[asyncio.Task[None]] = []
    listening = asyncio.create_task(wakeup.listen())
    try:
        await listener_pid(relay_engine, f"{name}-listen", other_than=None)
        async with tap(amqp, names, tenant) as queue, owner_engine.connect() as holder:
            # A claims the head, then waits to lock the follower the test holds.
            transaction = await holder.begin()
            await holder.execute(
                text("SELECT 1 FROM outbox WHERE message_id = :id FOR UPDATE"), {"id": held}
            )
            loops.append(asyncio.create_task(_work(make_relay(), wakeup, stop, 30.0)))
            await eventually(
                lambda: _waiting_for_a_lock(owner_engine, "vigil-relay"),
                what="loop A waiting to lock the held follower",
            )
            # B finds the key held, and waits.
            loops.append(asyncio.create_task(_work(make_relay(), wakeup, stop, 30.0)))
            await asyncio.sleep(0.5)

            async with owner_engine.begin() as connection:
                behind, _ = await insert_row(connection, tenant, ordering_key=key)
            await asyncio.sleep(0.5)  # B woke, found the head held, and waits again
            await transaction.rollback()

            await until(lambda: queue.ids == [str(head), str(held), str(behind)], seconds=5)
    finally:
        stop.set()
        wakeup.kick()
        await asyncio.gather(*loops, return_exceptions=True)
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)


async def _waiting_for_a_lock(owner_engine: AsyncEngine, application: str) -> bool:
    return await sessions_waiting_for_locks(owner_engine, application) > 0


async def test_the_backlog_figures_do_not_read_the_published_rows(
    tenant: uuid.UUID, owner_engine: AsyncEngine
) -> None:
    # Published rows stay a day and outnumber the pending ones by far; the figures,
    # asked for every 5 s, must come from the pending (and parked) rows alone.
    async with owner_engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO outbox (tenant_id, message_id, ordering_key, message_type, envelope,"
                " published_at) SELECT :tenant, gen_random_uuid(), gen_random_uuid(),"
                " 'event.received', '{}'::jsonb, now() FROM generate_series(1, 5000)"
            ),
            {"tenant": tenant},
        )
        await insert_row(connection, tenant)
    seq_scans = text("SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'outbox'")
    async with owner_engine.begin() as connection:
        before = (await connection.execute(seq_scans)).scalar_one()
        await connection.execute(text("SELECT * FROM vigil_outbox_stats()"))
        after = (await connection.execute(seq_scans)).scalar_one()
        await connection.execute(
            text("DELETE FROM outbox WHERE tenant_id = :tenant AND published_at IS NOT NULL"),
            {"tenant": tenant},
        )
    # The view holds this session's counts not yet reported, earlier transactions' too.
    assert after - before == 0


async def test_a_row_behind_one_just_parked_leaves_without_waiting_for_the_poll(
    settings: Settings,
    tenant: uuid.UUID,
    make_relay: MakeRelay,
    owner_engine: AsyncEngine,
    amqp: AbstractRobustConnection,
    names: Names,
) -> None:
    # Parking a row makes the row behind it its key's head when the batch commits, and
    # no commit of an outbox row wakes the relay for it: the loop that parked it must
    # look again at once rather than wait for the poll, here far longer than the test.
    relay = make_relay(max_attempts=1)
    key = new_id()
    async with owner_engine.begin() as connection:
        parked, _ = await insert_row(
            connection, tenant, ordering_key=key, message_type="test.nobody.listens"
        )
        behind, _ = await insert_row(connection, tenant, ordering_key=key)
    stop = asyncio.Event()
    wakeup = Wakeup(plain_url(settings.relay_database_url))
    async with tap(amqp, names, tenant) as queue:
        work = asyncio.create_task(_work(relay, wakeup, stop, 60))
        try:
            await until(lambda: queue.ids == [str(behind)], seconds=10)
        finally:
            stop.set()
            wakeup.kick()
            await asyncio.gather(work, return_exceptions=True)
    assert (await outbox_rows(owner_engine, tenant))[str(parked)].parked_at is not None


async def test_a_woken_loop_lingers_so_that_commits_close_together_share_a_claim(
    settings: Settings,
    tenant: uuid.UUID,
    make_relay: MakeRelay,
    owner_engine: AsyncEngine,
    relay_engine: AsyncEngine,
    amqp: AbstractRobustConnection,
    names: Names,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Under load the commits come a few milliseconds apart; a loop that claimed at each
    # one paid a claim's statements for every commit's rows.
    claims: list[set[str]] = []
    claim = store.claim

    async def recorded(connection: asyncpg.Connection, batch_size: int) -> store.Claim:
        claimed = await claim(connection, batch_size)
        claims.append({str(row.message_id) for rows in claimed.groups.values() for row in rows})
        return claimed

    monkeypatch.setattr(store, "claim", recorded)
    name = f"vigil-test-{secrets.token_hex(4)}"
    wakeup = Wakeup(plain_url(settings.relay_database_url), application_name=name)
    stop = asyncio.Event()
    listening = asyncio.create_task(wakeup.listen())
    work: asyncio.Task[None] | None = None
    try:
        await listener_pid(relay_engine, f"{name}-listen", other_than=None)
        async with tap(amqp, names, tenant) as queue:
            work = asyncio.create_task(_work(make_relay(), wakeup, stop, 30.0, linger_seconds=0.5))
            await asyncio.sleep(1.0)  # the loop has claimed what was there, and waits
            rows = []
            for _ in range(2):
                async with owner_engine.begin() as connection:
                    message_id, _ = await insert_row(connection, tenant)
                rows.append(str(message_id))
                await asyncio.sleep(0.05)
            await until(lambda: sorted(queue.ids) == sorted(rows), seconds=10)
    finally:
        stop.set()
        wakeup.kick()
        if work is not None:
            await asyncio.gather(work, return_exceptions=True)
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
    assert [claimed & set(rows) for claimed in claims if claimed & set(rows)] == [set(rows)]
