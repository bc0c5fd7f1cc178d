"""Shared test set-up.

Integration and end-to-end tests talk to the real PostgreSQL, Redis and RabbitMQ. They
use the ``vigil_test`` database (migrated once per run) and a broker prefix of their own,
so a run never touches the data or queues of a running Vigil.
"""

from __future__ import annotations

import os
import secrets
import uuid
from typing import Any

import pytest

# Settings are read from the environment: point them at the test resources before any
# Vigil module reads them.
_DB = os.environ.get("VIGIL_TEST_DATABASE", "vigil_test")
os.environ.setdefault("VIGIL_ENVIRONMENT", "test")
os.environ["VIGIL_DATABASE_URL"] = f"postgresql://vigil_app@127.0.0.1:5432/{_DB}"
os.environ["VIGIL_RELAY_DATABASE_URL"] = f"postgresql://vigil_relay@127.0.0.1:5432/{_DB}"
os.environ["VIGIL_OWNER_DATABASE_URL"] = f"postgresql://vigil_owner@127.0.0.1:5432/{_DB}"
os.environ["VIGIL_AMQP_PREFIX"] = f"vigiltest{secrets.token_hex(4)}"
os.environ.setdefault("VIGIL_REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("VIGIL_RELAY_METRICS_PORT", "0")
os.environ.setdefault("VIGIL_INBOUND_METRICS_PORT", "0")


@pytest.fixture
def transaction_event() -> Any:
    """A factory of valid transaction events (as an integration would send them)."""

    def make(
        key: str | None = None,
        *,
        amount: str = "125.50",
        originator: str = "DE89370400440532013000",
        beneficiary: str = "FR1420041010050500013M02606",
        occurred_at: str = "2026-03-01T09:30:00+01:00",
    ) -> dict[str, Any]:
        return {
            "idempotencyKey": key or f"k-{uuid.uuid4().hex}",
            "type": "transaction",
            "occurredAt": occurred_at,
            "data": {
                "amount": amount,
                "currency": "EUR",
                "originator": {"account": originator, "country": "DE"},
                "beneficiary": {"account": beneficiary, "country": "FR"},
                "channel": "sepa",
                "reference": "invoice 42",
            },
        }

    return make
