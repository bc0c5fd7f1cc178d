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

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import RowMapping, text
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.database import translate_errors
from domain.reference import CURRENCY_MINOR_UNITS
from domain.rules import WINDOWS, Ruleset
from domain.scoring import Features, StoredEvent, to_minor

_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1)}


def window_length(name: str) -> timedelta:
    """``"24h"`` is 24 hours, ``"7d"`` seven days."""
    return int(name[:-1]) * _UNITS[name[-1]]


_LONGEST = max(WINDOWS, key=window_length)


def _since(window: str) -> str:
    """The start of a window before the party's time, as SQL. The lengths are the code's
    own constants, so they are written into the statement rather than bound."""
    return f"p.at - make_interval(secs => {int(window_length(window).total_seconds())})"


def _direction_columns(direction: str) -> str:
    """The FILTER aggregates of one direction's scan, a set per window."""
    other = "counterparty_id" if direction == "out" else "subject_id"
    columns = []
    for window in WINDOWS:
        inside = f"e.occurred_at > {_since(window)}"
        same_currency = f"{inside} AND e.currency = p.currency"
        columns += [
            f"count(*) FILTER (WHERE {inside}) AS {direction}_count_{window}",
            f"sum(e.amount) FILTER (WHERE {same_currency}) AS {direction}_sum_{window}",
            f"count(DISTINCT e.{other}) FILTER (WHERE {inside}) AS {direction}_distinct_{window}",
        ]
        if direction == "out":
            columns += [
                f"count(*) FILTER (WHERE {inside} AND e.counterparty_id = p.beneficiary)"
                f" AS pair_count_{window}",
                f"count(*) FILTER (WHERE {same_currency}"
                f" AND e.amount >= p.near_low AND e.amount < p.near_high)"
                f" AS near_threshold_count_{window}",
            ]
    return ",\n            ".join(columns)


def _scan(direction: str) -> str:
    own = "subject_id" if direction == "out" else "counterparty_id"
    return f"""
    CROSS JOIN LATERAL (
        SELECT
            {_direction_columns(direction)}
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


# One row per party of each event: ``item`` is the event's place in the list, ``role``
# which of its two accounts the row describes.
FEATURES_SQL = f"""
SELECT p.item, p.role, out_window.*, in_window.*,
       greatest(out_last.at, in_last.at) AS last_before
FROM unnest(
    CAST(:items AS integer[]), CAST(:roles AS text[]), CAST(:subjects AS uuid[]),
    CAST(:ats AS timestamptz[]), CAST(:currencies AS text[]), CAST(:beneficiaries AS uuid[]),
    CAST(:near_lows AS numeric[]), CAST(:near_highs AS numeric[])
) AS p (item, role, subject_id, at, currency, beneficiary, near_low, near_high)
{_scan("out")}
{_scan("in")}
{_last_before("out")}
{_last_before("in")}
"""

_FEATURES = text(FEATURES_SQL)

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
) -> list[tuple[Features, Features]]:
    """For each event, in order, the originator's and the beneficiary's features as of
    the event's time; for an event without a counterparty, the subject's and empty ones.
    One statement for all of them."""
    if not events:
        return []
    with translate_errors():
        result = await connection.execute(_FEATURES, feature_parameters(tenant_id, events, ruleset))
        rows: dict[tuple[int, str], RowMapping] = {
            (row.item, row.role): row._mapping for row in result
        }
    found = []
    for item, event in enumerate(events):
        originator_row = rows[(item, "originator")]
        # Transfers from this originator to this beneficiary: one figure for both
        # parties, read from the originator's outgoing scan.
        pairs = {f"pair_count_{w}": int(originator_row[f"pair_count_{w}"]) for w in WINDOWS}
        originator = _features(originator_row, event.currency, event.occurred_at, pairs)
        if event.counterparty_id is None:
            found.append((originator, Features.empty()))
            continue
        beneficiary_row = rows[(item, "beneficiary")]
        found.append(
            (originator, _features(beneficiary_row, event.currency, event.occurred_at, pairs))
        )
    return found


def _features(
    row: RowMapping, currency: str | None, at: datetime, pairs: Mapping[str, int]
) -> Features:
    values = dict(Features.empty().values) | dict(pairs)
    for window in WINDOWS:
        for direction in ("out", "in"):
            values[f"{direction}_count_{window}"] = int(row[f"{direction}_count_{window}"])
            values[f"{direction}_distinct_{window}"] = int(row[f"{direction}_distinct_{window}"])
            values[f"{direction}_sum_minor_{window}"] = _minor(
                row[f"{direction}_sum_{window}"], currency
            )
        near = f"near_threshold_count_{window}"
        values[near] = int(row[near])
    last_before: datetime | None = row["last_before"]
    if last_before is not None:
        # Whole days, rounded down: 2 days and 23 hours is 2.
        values["days_dormant"] = (at - last_before).days
    return Features(values)


def _minor(total: Decimal | None, currency: str | None) -> int:
    if total is None or currency is None:
        return 0
    return to_minor(total, currency)
