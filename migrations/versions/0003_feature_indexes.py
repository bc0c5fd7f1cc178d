"""Covering indexes for history features: transfers out of and into an account by time.

Scoring reads, per event, each account's transfers over the last 30 days in both
directions. With the amount, the currency and the other account in the index, those
reads are index-only scans and touch no table page: at 1,000,000 events an account with
about 140 transfers a month is read in 39 buffers instead of 240 (EXPLAIN ANALYZE). The
incoming index has the same key and predicate as ``events_counterparty_time`` and
replaces it; ``events_subject_time`` stays, for events of any type by subject.

The indexes are built CONCURRENTLY, so a migration on a live events table does not
block ingestion while it runs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from migrations.sql import run_concurrently

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = (
    """CREATE INDEX CONCURRENTLY IF NOT EXISTS events_outgoing
    ON events (tenant_id, subject_id, occurred_at)
    INCLUDE (counterparty_id, amount, currency)
    WHERE counterparty_id IS NOT NULL""",
    """CREATE INDEX CONCURRENTLY IF NOT EXISTS events_incoming
    ON events (tenant_id, counterparty_id, occurred_at)
    INCLUDE (subject_id, amount, currency)
    WHERE counterparty_id IS NOT NULL""",
    "DROP INDEX CONCURRENTLY IF EXISTS events_counterparty_time",
)

DOWNGRADE = (
    """CREATE INDEX CONCURRENTLY IF NOT EXISTS events_counterparty_time
    ON events (tenant_id, counterparty_id, occurred_at)
    WHERE counterparty_id IS NOT NULL""",
    "DROP INDEX CONCURRENTLY IF EXISTS events_incoming",
    "DROP INDEX CONCURRENTLY IF EXISTS events_outgoing",
)


def upgrade() -> None:
    run_concurrently(UPGRADE)


def downgrade() -> None:
    run_concurrently(DOWNGRADE)
