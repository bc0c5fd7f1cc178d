"""History features of the two accounts of each of a list of events, in one SQL
statement.

For each of the two accounts of each event (its subject and its counterparty) the
statement reads two index range scans and two single-row probes, each bounded by the
event's time:

- outgoing transfers, by ``events_outgoing`` (tenant, subject, time), over the longest
  window ``(t - 90d, t]``; every window's figures are ``FILTER`` aggregates of that one
  scan. The 90-day window is the account's profile: what it usually sends and receives,
  against which one transfer's amount is judged;
- incoming transfers, by ``events_incoming`` (tenant, counterparty, time), the same way;
- the latest transfer in each direction strictly before ``t``, for dormancy, which may lie
  before the longest window: a backward probe that stops at the first row.

The cost therefore follows the accounts' activity within the windows, never the size of
the table. Both indexes carry the columns the aggregates read, so the scans are
index-only once the visibility map is set (autovacuum sets it on an insert-only table).

Semantics, chosen so that replaying history gives the same figures:

- Everything is as of the event's ``occurred_at`` (``t``), never the clock. A window
  ``w`` is ``(t - w, t]``: the event itself and any other event at exactly ``t`` are in
  it, whatever order they were inserted in; an event exactly ``w`` earlier is not.
- A transfer is an event with a counterparty (a ``transaction``); KYC updates are not
  activity.
- Counts, distinct counterparties, pair counts and dormancy take every currency. Sums
  and near-threshold counts take only transfers in the scored event's currency, since
  amounts in different currencies cannot be added, and the reporting threshold is read
  in the scored event's currency. An event without a currency (a KYC update) has sums
  and near-threshold counts of zero.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import RowMapping, TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.database import translate_errors
from domain.reference import CURRENCY_MINOR_UNITS
from domain.rules import WINDOWS, Ruleset
from domain.scoring import (
    ALL_FEATURES,
    HISTORY_ORDER,
    FeatureNeeds,
    Features,
    StoredEvent,
    to_minor,
)

_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1)}


def window_length(name: str) -> timedelta:
    """``"24h"`` is 24 hours, ``"7d"`` seven days."""
    return int(name[:-1]) * _UNITS[name[-1]]


_LONGEST = max(WINDOWS, key=window_length)


def _since(window: str) -> str:
    """The start of a window before the party's time, as SQL. The lengths are the code's
    own constants, so they are written into the statement rather than bound."""
    return f"p.at - make_interval(secs => {int(window_length(window).total_seconds())})"


def _direction_columns(direction: str, names: frozenset[str]) -> list[str]:
    """The FILTER aggregates of one direction's scan that compute the features named."""
    other = "counterparty_id" if direction == "out" else "subject_id"
    columns = []
    for window in WINDOWS:
        inside = f"e.occurred_at > {_since(window)}"
        same_currency = f"{inside} AND e.currency = p.currency"
        if f"{direction}_count_{window}" in names:
            columns.append(f"count(*) FILTER (WHERE {inside}) AS {direction}_count_{window}")
        if f"{direction}_sum_minor_{window}" in names:
            columns.append(
                f"sum(e.amount) FILTER (WHERE {same_currency}) AS {direction}_sum_{window}"
            )
        if f"{direction}_distinct_{window}" in names:
            columns.append(
                f"count(DISTINCT e.{other}) FILTER (WHERE {inside})"
                f" AS {direction}_distinct_{window}"
            )
        if direction == "out" and f"pair_count_{window}" in names:
            columns.append(
                f"count(*) FILTER (WHERE {inside} AND e.counterparty_id = p.beneficiary)"
                f" AS pair_count_{window}"
            )
        if direction == "out" and f"near_threshold_count_{window}" in names:
            columns.append(
                f"count(*) FILTER (WHERE {same_currency}"
                f" AND e.amount >= p.near_low AND e.amount < p.near_high)"
                f" AS near_threshold_count_{window}"
            )
    return columns


def _scan(direction: str, columns: Sequence[str]) -> str:
    own = "subject_id" if direction == "out" else "counterparty_id"
    selected = ",\n            ".join(columns)
    return f"""
    CROSS JOIN LATERAL (
        SELECT
            {selected}
        FROM events e
        WHERE e.tenant_id = :tenant AND e.{own} = p.subject_id
          AND e.counterparty_id IS NOT NULL
          AND e.occurred_at > {_since(_LONGEST)} AND e.occurred_at <= p.at
    ) AS {direction}_window"""


def _last_before(direction: str) -> str:
    own = "subject_id" if direction == "out" else "counterparty_id"
    # max() over an index range becomes a backward scan that stops at the first row.
    return f"""
    CROSS JOIN LATERAL (
        SELECT max(e.occurred_at) AS at
        FROM events e
        WHERE e.tenant_id = :tenant AND e.{own} = p.subject_id
          AND e.counterparty_id IS NOT NULL AND e.occurred_at < p.at
    ) AS {direction}_last"""


def features_sql(names: frozenset[str]) -> str:
    """One row per party of each event, with the aggregates of the features named and no
    others: ``item`` is the event's place in the list, ``role`` which of its two
    accounts the row describes. A direction none of them needs is not scanned, and the
    dormancy probes run only for ``days_dormant``."""
    selected = ["p.item", "p.role"]
    joins = []
    for direction in ("out", "in"):
        columns = _direction_columns(direction, names)
        if columns:
            selected.append(f"{direction}_window.*")
            joins.append(_scan(direction, columns))
    if "days_dormant" in names:
        selected.append("greatest(out_last.at, in_last.at) AS last_before")
        joins += [_last_before("out"), _last_before("in")]
    return f"""
SELECT {", ".join(selected)}
FROM unnest(
    CAST(:items AS integer[]), CAST(:roles AS text[]), CAST(:subjects AS uuid[]),
    CAST(:ats AS timestamptz[]), CAST(:currencies AS text[]), CAST(:beneficiaries AS uuid[]),
    CAST(:near_lows AS numeric[]), CAST(:near_highs AS numeric[])
) AS p (item, role, subject_id, at, currency, beneficiary, near_low, near_high)
{"".join(joins)}
"""


@functools.lru_cache(maxsize=64)
def _statement(names: frozenset[str]) -> TextClause:
    return text(features_sql(names))


_ROLES = ("originator", "beneficiary")


def feature_parameters(
    tenant_id: uuid.UUID, events: Sequence[StoredEvent], ruleset: Ruleset
) -> dict[str, Any]:
    """The statement's parameters: for each event, its two accounts, its time, and the
    near-threshold band in its currency (in major units, exact)."""
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "items",
            "roles",
            "subjects",
            "ats",
            "currencies",
            "beneficiaries",
            "near_lows",
            "near_highs",
        )
    }
    for item, event in enumerate(events):
        low = high = None
        if event.currency is not None:
            exponent = CURRENCY_MINOR_UNITS[event.currency]
            threshold = ruleset.reporting_threshold_minor
            # [ratio% of the threshold, the threshold): exact decimals, no rounding.
            low = Decimal(threshold * ruleset.near_threshold_ratio_percent).scaleb(-2 - exponent)
            high = Decimal(threshold).scaleb(-exponent)
        for role, subject in zip(_ROLES, (event.subject_id, event.counterparty_id), strict=True):
            columns["items"].append(item)
            columns["roles"].append(role)
            columns["subjects"].append(subject)
            columns["ats"].append(event.occurred_at)
            columns["currencies"].append(event.currency)
            columns["beneficiaries"].append(event.counterparty_id)
            columns["near_lows"].append(low)
            columns["near_highs"].append(high)
    return {"tenant": tenant_id, **columns}


async def history_features(
    connection: AsyncConnection,
    tenant_id: uuid.UUID,
    events: Sequence[StoredEvent],
    ruleset: Ruleset,
    needs: FeatureNeeds = ALL_FEATURES,
) -> list[tuple[Features, Features]]:
    """For each event, in order, the originator's and the beneficiary's features as of
    the event's time (those ``needs`` names for each); for an event without a
    counterparty, the subject's and empty ones. At most one statement for all of them."""
    if not events:
        return []
    originator_names = _in_order(needs.originator)
    beneficiary_names = _in_order(needs.beneficiary)
    names = needs.union()
    if not names:
        return [(Features({}), Features({})) for _ in events]
    with translate_errors():
        result = await connection.execute(
            _statement(names), feature_parameters(tenant_id, events, ruleset)
        )
        rows: dict[tuple[int, str], RowMapping] = {
            (row.item, row.role): row._mapping for row in result
        }
    found = []
    for item, event in enumerate(events):
        originator_row = rows[(item, "originator")]
        # Transfers from this originator to this beneficiary: one figure for both
        # parties, read from the originator's outgoing scan.
        pairs = {name: int(originator_row[name]) for name in names if name in _PAIRS}
        originator = _features(
            originator_row, originator_names, event.currency, event.occurred_at, pairs
        )
        if event.counterparty_id is None:
            found.append((originator, Features.empty(beneficiary_names)))
            continue
        beneficiary_row = rows[(item, "beneficiary")]
        found.append(
            (
                originator,
                _features(
                    beneficiary_row, beneficiary_names, event.currency, event.occurred_at, pairs
                ),
            )
        )
    return found


_PAIRS = frozenset(f"pair_count_{window}" for window in WINDOWS)


@functools.lru_cache(maxsize=64)
def _in_order(names: frozenset[str]) -> tuple[str, ...]:
    return tuple(name for name in HISTORY_ORDER if name in names)


def _features(
    row: RowMapping,
    names: Sequence[str],
    currency: str | None,
    at: datetime,
    pairs: Mapping[str, int],
) -> Features:
    values: dict[str, int] = {}
    for name in names:
        if name == "days_dormant":
            last_before: datetime | None = row["last_before"]
            # Whole days, rounded down: 2 days and 23 hours is 2.
            values[name] = -1 if last_before is None else (at - last_before).days
        elif name in pairs:
            values[name] = pairs[name]
        elif "_sum_minor_" in name:
            values[name] = _minor(row[name.replace("_sum_minor_", "_sum_")], currency)
        else:
            values[name] = int(row[name])
    return Features(values)


def _minor(total: Decimal | None, currency: str | None) -> int:
    if total is None or currency is None:
        return 0
    return to_minor(total, currency)
