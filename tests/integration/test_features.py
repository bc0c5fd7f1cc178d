"""History features against the real PostgreSQL: exact figures at the edges of the
windows, and the same figures whatever order the events were inserted in."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.features import features_sql, history_features, window_length
from adapters.tenants import create_tenant
from domain.rules import WINDOWS, Band, Ruleset
from domain.scoring import FeatureNeeds, Features, to_minor
from services.ingest import Caller, Outcome, ingest_events

T = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
NOW = datetime(2026, 6, 1, tzinfo=UTC)
SECOND = timedelta(seconds=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# Reporting threshold 10,000.00; "near" is from 9,000.00 up to just below it.
RULESET = Ruleset(
    name="features",
    alert_threshold=50,
    bands={Band.LOW: 0, Band.MEDIUM: 25, Band.HIGH: 50, Band.CRITICAL: 75},
    rules=(),
    reporting_threshold_minor=1_000_000,
    near_threshold_ratio_percent=90,
)


def transfer(
    key: str, origin: str, target: str, at: datetime, amount: str, currency: str = "EUR"
) -> dict[str, Any]:
    return {
        "idempotencyKey": key,
        "type": "transaction",
        "occurredAt": at.isoformat(),
        "data": {
            "amount": amount,
            "currency": currency,
            "originator": {"account": origin, "country": "NL"},
            "beneficiary": {"account": target, "country": "NL"},
            "channel": "sepa",
        },
    }


def kyc_update(key: str, account: str, at: datetime) -> dict[str, Any]:
    return {
        "idempotencyKey": key,
        "type": "kyc.updated",
        "occurredAt": at.isoformat(),
        "data": {
            "subject": {"kind": "account", "ref": account},
            "attributes": {"riskRating": "high"},
        },
    }


async def ingest(
    uow_factory: Any, tenant: uuid.UUID, events: list[dict[str, Any]]
) -> dict[str, uuid.UUID]:
    """Store the events in batches, in the order given; their ids by key."""
    ids: dict[str, uuid.UUID] = {}
    for start in range(0, len(events), 7):
        batch = events[start : start + 7]
        results = await ingest_events(
            uow_factory, Caller(tenant, "test", "graphql"), batch, now=NOW
        )
        for raw, result in zip(batch, results, strict=True):
            assert result.outcome is Outcome.ACCEPTED, result
            assert result.event_id is not None
            ids[raw["idempotencyKey"]] = result.event_id
    return ids


async def features_of(
    uow_factory: Any, tenant: uuid.UUID, event_id: uuid.UUID, ruleset: Ruleset = RULESET
) -> tuple[Features, Features]:
    async with uow_factory(tenant) as uow:
        event = await uow.scoring.load_event(event_id)
        assert event is not None
        features: tuple[Features, Features] = await uow.scoring.features(event, ruleset)
        return features


def by_window(features: Features, name: str) -> list[int]:
    """One feature across the windows, shortest first: ``out_count`` → [1h, 24h, 7d, 30d, 90d]."""
    return [features.values[f"{name}_{window}"] for window in WINDOWS]


# A history around T for account A. Each event sits on or just inside a window's edge.
EDGES = [
    transfer("e01", "A", "B", T - 30 * DAY, "100.00"),  # on the 30d edge: outside
    transfer("e02", "A", "F", T - 30 * DAY + SECOND, "200.00"),  # inside 30d
    transfer("e03", "A", "B", T - 24 * HOUR, "300.00"),  # on the 24h edge: 7d only
    transfer("e04", "A", "D", T - 24 * HOUR + SECOND, "400.00"),  # inside 24h
    transfer("e05", "A", "B", T - HOUR, "9500.00"),  # on the 1h edge; near the threshold
    transfer("e06", "A", "B", T - HOUR + SECOND, "9000.00"),  # inside 1h; the lowest "near"
    transfer("e07", "A", "B", T, "10000.00"),  # the scored event: at the threshold, not near
    transfer("e08", "A", "B", T + SECOND, "700.00"),  # after the scored event: never counted
    transfer("e09", "C", "A", T - 2 * HOUR, "50.00"),  # into A
    transfer("e10", "A", "C", T - 3 * HOUR, "8999.99"),  # just below "near"
    transfer("e11", "A", "E", T - 2 * DAY, "500.00", "USD"),  # counted, but not summed in EUR
    transfer("e12", "A", "G", T - 90 * DAY, "70.00"),  # on the 90d edge: outside
    transfer("e13", "A", "G", T - 90 * DAY + SECOND, "60.00"),  # inside 90d only
]


async def test_each_window_is_open_at_its_start_and_closed_at_the_event(
    uow_factory: Any, tenant: uuid.UUID
) -> None:
    ids = await ingest(uow_factory, tenant, EDGES)

    originator, beneficiary = await features_of(uow_factory, tenant, ids["e07"])

    assert by_window(originator, "out_count") == [2, 5, 7, 8, 10]
    assert by_window(originator, "out_sum_minor") == [
        1_900_000,
        3_789_999,
        3_819_999,
        3_839_999,
        3_855_999,
    ]
    assert by_window(originator, "out_distinct") == [1, 3, 4, 5, 6]
    assert by_window(originator, "in_count") == [0, 1, 1, 1, 1]
    assert by_window(originator, "in_sum_minor") == [0, 5_000, 5_000, 5_000, 5_000]
    assert by_window(originator, "in_distinct") == [0, 1, 1, 1, 1]
    assert by_window(originator, "pair_count") == [2, 3, 4, 4, 5]
    assert by_window(originator, "near_threshold_count") == [1, 2, 2, 2, 2]
    assert originator.values["days_dormant"] == 0

    assert by_window(beneficiary, "in_count") == [2, 3, 4, 4, 5]
    assert by_window(beneficiary, "in_sum_minor") == [
        1_900_000,
        2_850_000,
        2_880_000,
        2_880_000,
        2_890_000,
    ]
    assert by_window(beneficiary, "in_distinct") == [1, 1, 1, 1, 1]
    assert by_window(beneficiary, "out_count") == [0, 0, 0, 0, 0]
    assert by_window(beneficiary, "out_sum_minor") == [0, 0, 0, 0, 0]
    assert by_window(beneficiary, "near_threshold_count") == [0, 0, 0, 0, 0]
    assert by_window(beneficiary, "pair_count") == [2, 3, 4, 4, 5]
    assert beneficiary.values["days_dormant"] == 0
    assert set(originator.values) == set(Features.empty().values)


async def test_sums_take_only_the_scored_events_currency(
    uow_factory: Any, tenant: uuid.UUID
) -> None:
    ids = await ingest(uow_factory, tenant, EDGES)

    originator, beneficiary = await features_of(uow_factory, tenant, ids["e11"])

    # As of T - 2 days: e02 and e11 were sent, e01 is 28 days earlier and in the 30d window,
    # e12 and e13 are 88 days earlier and in the 90d window.
    assert by_window(originator, "out_count") == [1, 1, 1, 3, 5]
    assert by_window(originator, "out_sum_minor") == [50_000, 50_000, 50_000, 50_000, 50_000]
    assert by_window(beneficiary, "in_sum_minor") == [50_000, 50_000, 50_000, 50_000, 50_000]


async def test_the_near_threshold_band_follows_the_ruleset(
    uow_factory: Any, tenant: uuid.UUID
) -> None:
    ids = await ingest(uow_factory, tenant, EDGES)
    # Threshold 9,500.00 at 94%: from 8,930.00 up to just below 9,500.00.
    ruleset = Ruleset(
        "other",
        50,
        RULESET.bands,
        (),
        reporting_threshold_minor=950_000,
        near_threshold_ratio_percent=94,
    )

    originator, _ = await features_of(uow_factory, tenant, ids["e07"], ruleset)

    assert by_window(originator, "near_threshold_count") == [1, 2, 2, 2, 2]  # e06 and e10


async def test_dormancy_counts_whole_days_since_the_last_transfer_before_the_event(
    uow_factory: Any, tenant: uuid.UUID
) -> None:
    ids = await ingest(
        uow_factory,
        tenant,
        [
            transfer("g1", "G", "H", T - 100 * DAY - 5 * HOUR, "10.00"),
            transfer("g2", "G", "K", T, "10.00"),
            transfer("k1", "M", "K", T - 3 * DAY + HOUR, "10.00"),
            transfer("n1", "N", "P", T, "10.00"),
            transfer("n2", "N", "Q", T, "10.00"),
            kyc_update("kyc", "G", T - DAY),
        ],
    )

    g, k = await features_of(uow_factory, tenant, ids["g2"])
    n, p = await features_of(uow_factory, tenant, ids["n1"])
    _, q = await features_of(uow_factory, tenant, ids["n2"])

    assert (
        g.values["days_dormant"] == 100
    )  # beyond the longest window, and a KYC update is no transfer
    assert k.values["days_dormant"] == 2  # 2 days 23 hours
    # Transfers at the very same time are not before one another, but share the windows.
    assert (n.values["days_dormant"], p.values["days_dormant"], q.values["days_dormant"]) == (
        -1,
        -1,
        -1,
    )
    assert by_window(n, "out_count") == [2, 2, 2, 2, 2]
    assert by_window(n, "out_distinct") == [2, 2, 2, 2, 2]
    assert by_window(p, "pair_count") == [1, 1, 1, 1, 1]


async def test_a_kyc_update_gets_its_subjects_features_and_no_counterparty(
    uow_factory: Any, tenant: uuid.UUID
) -> None:
    ids = await ingest(uow_factory, tenant, [*EDGES, kyc_update("kyc", "A", T)])

    subject, missing = await features_of(uow_factory, tenant, ids["kyc"])

    assert missing == Features.empty()
    assert by_window(subject, "out_count") == [2, 5, 7, 8, 10]
    assert by_window(subject, "in_count") == [0, 1, 1, 1, 1]
    assert by_window(subject, "pair_count") == [0, 0, 0, 0, 0]
    # No currency to add amounts in.
    assert by_window(subject, "out_sum_minor") == [0, 0, 0, 0, 0]
    assert by_window(subject, "near_threshold_count") == [0, 0, 0, 0, 0]
    assert subject.values["days_dormant"] == 0


# -- order independence, checked against a reference written the slow, obvious way ----


@dataclass(frozen=True)
class Transfer:
    key: str
    origin: str
    target: str
    at: datetime
    amount: Decimal
    currency: str


def reference(history: list[Transfer], scored: Transfer) -> tuple[dict[str, int], dict[str, int]]:
    t = scored.at
    low = Decimal(RULESET.reporting_threshold_minor * RULESET.near_threshold_ratio_percent) / 100

    def party(account: str) -> dict[str, int]:
        values: dict[str, int] = {}
        for window in WINDOWS:
            inside = [x for x in history if t - window_length(window) < x.at <= t]
            sent = [x for x in inside if x.origin == account]
            received = [x for x in inside if x.target == account]
            for name, flows, other in (("out", sent, "target"), ("in", received, "origin")):
                values[f"{name}_count_{window}"] = len(flows)
                values[f"{name}_sum_minor_{window}"] = sum(
                    to_minor(x.amount, x.currency) for x in flows if x.currency == scored.currency
                )
                values[f"{name}_distinct_{window}"] = len({getattr(x, other) for x in flows})
            values[f"pair_count_{window}"] = sum(
                1 for x in inside if (x.origin, x.target) == (scored.origin, scored.target)
            )
            values[f"near_threshold_count_{window}"] = sum(
                1
                for x in sent
                if x.currency == scored.currency
                and low <= to_minor(x.amount, x.currency) < RULESET.reporting_threshold_minor
            )
        before = [x.at for x in history if account in (x.origin, x.target) and x.at < t]
        values["days_dormant"] = (t - max(before)).days if before else -1
        return values

    return party(scored.origin), party(scored.target)


def random_history(seed: int, size: int) -> list[Transfer]:
    """Transfers among a few accounts over six weeks, with shared timestamps and amounts
    near the threshold, in time order."""
    rng = random.Random(seed)
    accounts = ["R1", "R2", "R3", "R4", "R5", "R6"]
    moments = [T - timedelta(minutes=rng.randrange(0, 60 * 24 * 42)) for _ in range(size // 2)]
    history = []
    for index in range(size):
        origin, target = rng.sample(accounts, 2)
        amount = rng.choice(["12.34", "9000.00", "9999.99", "10000.00", "250.00", "8999.99"])
        history.append(
            Transfer(
                f"r{index:03d}",
                origin,
                target,
                rng.choice(moments),  # about half the transfers share a moment with another
                Decimal(amount),
                "EUR" if rng.random() < 0.8 else "GBP",
            )
        )
    return sorted(history, key=lambda x: (x.at, x.key))


async def test_events_inserted_out_of_order_get_the_same_features_as_in_order(
    uow_factory: Any, owner_engine: AsyncEngine, tenant: uuid.UUID
) -> None:
    history = random_history(seed=7, size=80)
    shuffled = history[:]
    random.Random(11).shuffle(shuffled)
    other = await create_tenant(owner_engine, f"t-{uuid.uuid4().hex[:12]}", "Shuffled bank")

    def raw(x: Transfer) -> dict[str, Any]:
        return transfer(x.key, x.origin, x.target, x.at, str(x.amount), x.currency)

    in_order = await ingest(uow_factory, tenant, [raw(x) for x in history])
    out_of_order = await ingest(uow_factory, other, [raw(x) for x in shuffled])

    for scored in history:
        ordered = await features_of(uow_factory, tenant, in_order[scored.key])
        unordered = await features_of(uow_factory, other, out_of_order[scored.key])
        expected = reference(history, scored)
        assert ordered == unordered, scored.key
        assert (dict(ordered[0].values), dict(ordered[1].values)) == expected, scored.key


async def test_one_statement_for_many_events_gives_each_its_own_features(
    uow_factory: Any, tenant: uuid.UUID
) -> None:
    # Events of different times, accounts and currencies, and a KYC update, asked for in
    # one list (in an order of their own, one of them twice): each gets exactly what it
    # gets when asked for alone.
    history = random_history(seed=3, size=60)
    raws = [transfer(x.key, x.origin, x.target, x.at, str(x.amount), x.currency) for x in history]
    ids = await ingest(uow_factory, tenant, [*raws, kyc_update("kyc", "R1", T)])
    keys = [*random.Random(5).sample(sorted(ids), len(ids)), "r010"]

    async with uow_factory(tenant) as uow:
        loaded = await uow.scoring.load_events([ids[key] for key in keys])
        together = await uow.scoring.features_of([loaded[ids[key]] for key in keys], RULESET)
    alone = [await features_of(uow_factory, tenant, ids[key]) for key in keys]

    assert len(loaded) == len(ids)
    assert together == alone
    by_key = {x.key: x for x in history}
    for key, (originator, beneficiary) in zip(keys, together, strict=True):
        if key != "kyc":
            expected = reference(history, by_key[key])
            assert (dict(originator.values), dict(beneficiary.values)) == expected, key


async def test_only_the_features_named_are_computed_and_each_is_the_full_figure(
    uow_factory: Any, tenant: uuid.UUID
) -> None:
    # A ruleset needs a few features of each party: the statement computes those alone,
    # and each is exactly what computing every feature gives.
    history = random_history(seed=7, size=60)
    raws = [transfer(x.key, x.origin, x.target, x.at, str(x.amount), x.currency) for x in history]
    ids = await ingest(uow_factory, tenant, [*raws, kyc_update("kyc", "R1", T)])
    needs = FeatureNeeds(
        originator=frozenset({"out_count_1h", "out_sum_minor_7d", "pair_count_24h"}),
        beneficiary=frozenset({"in_distinct_7d", "pair_count_24h", "days_dormant"}),
    )
    async with uow_factory(tenant) as uow:
        loaded = await uow.scoring.load_events(list(ids.values()))
        events = [loaded[ids[key]] for key in sorted(ids)]
        everything = await uow.scoring.features_of(events, RULESET)
        named = await uow.scoring.features_of(events, RULESET, needs)

    for (all_o, all_b), (o, b) in zip(everything, named, strict=True):
        assert dict(o.values) == {n: all_o.values[n] for n in needs.originator}
        assert dict(b.values) == {n: all_b.values[n] for n in needs.beneficiary}


def test_the_statement_scans_and_aggregates_only_for_the_features_named() -> None:
    outgoing_only = features_sql(frozenset({"out_count_24h", "pair_count_7d"}))
    assert "out_window" in outgoing_only
    assert "in_window" not in outgoing_only
    assert "DISTINCT" not in outgoing_only
    assert "last_before" not in outgoing_only
    assert "out_count_1h" not in outgoing_only
    assert "near_threshold" not in outgoing_only

    incoming = features_sql(frozenset({"in_distinct_7d", "days_dormant"}))
    assert "out_window" not in incoming
    assert "in_window" in incoming
    assert incoming.count("DISTINCT") == 1
    assert "last_before" in incoming


async def test_a_ruleset_that_needs_no_history_runs_no_statement(
    uow_factory: Any, tenant: uuid.UUID
) -> None:
    ids = await ingest(uow_factory, tenant, EDGES[:2])
    nothing = FeatureNeeds(frozenset(), frozenset())
    async with uow_factory(tenant) as uow:
        loaded = await uow.scoring.load_events(list(ids.values()))

    class Refuses:
        async def execute(self, *_: Any) -> None:
            raise AssertionError("no statement was expected")

    found = await history_features(Refuses(), tenant, list(loaded.values()), RULESET, nothing)  # type: ignore[arg-type]
    assert found == [(Features({}), Features({}))] * 2
