"""Read the AMLSim sample bank and turn its transfers into Vigil events.

The mapping: every account (a node id) is an account subject ``AMLSIM-<id>``; a
simulation step is a day counted from :data:`START`; a value is an amount in
:data:`CURRENCY`; every account is domestic (:data:`COUNTRY`), as the data gives none.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

START = datetime(2025, 1, 1, tzinfo=UTC)
CURRENCY = "EUR"
COUNTRY = "NL"
# What the data's README gives for its naive rule (see vigil.quality), to print beside
# the floor the demo computes itself on the transfers it replayed.
README_FLOOR = "precision 0.21, recall 0.48, F1 0.29"


def account(node_id: str) -> str:
    return f"AMLSIM-{int(node_id):05d}"


def transfers(data_dir: Path, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Yield transfers as ingestEvents inputs, in file order, with stable keys."""
    with (data_dir / "transactions.csv").open(newline="") as handle:
        for index, row in enumerate(csv.DictReader(handle)):
            if limit is not None and index >= limit:
                return
            step = int(row["time"])
            # Spread a day's transfers over its seconds so that their times are distinct.
            moment = START + timedelta(days=step - 1, seconds=index % 86_400)
            yield {
                "idempotencyKey": f"amlsim-{index}",
                "type": "transaction",
                "occurredAt": moment.isoformat(),
                "data": {
                    "amount": str(Decimal(row["value"]).quantize(Decimal("0.01"))),
                    "currency": CURRENCY,
                    "originator": {"account": account(row["sourceNodeId"]), "country": COUNTRY},
                    "beneficiary": {"account": account(row["targetNodeId"]), "country": COUNTRY},
                    "channel": "sepa",
                },
            }


def laundering_accounts(data_dir: Path) -> set[str]:
    """The accounts the data labels as laundering (``isFraud`` 1), as subject references."""
    with (data_dir / "nodes.csv").open(newline="") as handle:
        return {account(row["nodeid"]) for row in csv.DictReader(handle) if row["isFraud"] == "1"}


def parties(event: dict[str, Any]) -> tuple[str, str]:
    """The originator's and the beneficiary's account of a transfer made here."""
    data = event["data"]
    return data["originator"]["account"], data["beneficiary"]["account"]
