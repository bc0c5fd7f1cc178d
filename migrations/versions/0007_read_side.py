"""Indexes for the read side's keyset pages.

The review page lists a tenant's cases by priority (then SLA due time, then id) or by
SLA due time (then id), whatever their status; each order gets an index that ends with
the primary key, so a page after a cursor is one range scan. Events are listed newest
first across a tenant. Built CONCURRENTLY, so a live system keeps writing meanwhile.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from migrations.sql import run_concurrently

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UPGRADE = (
    """CREATE INDEX CONCURRENTLY IF NOT EXISTS cases_by_priority
    ON cases (tenant_id, priority DESC, sla_due_at, case_id)""",
    """CREATE INDEX CONCURRENTLY IF NOT EXISTS cases_by_sla
    ON cases (tenant_id, sla_due_at, case_id)""",
    """CREATE INDEX CONCURRENTLY IF NOT EXISTS events_by_time
    ON events (tenant_id, occurred_at DESC, event_id DESC)""",
)

DOWNGRADE = (
    "DROP INDEX CONCURRENTLY IF EXISTS events_by_time",
    "DROP INDEX CONCURRENTLY IF EXISTS cases_by_sla",
    "DROP INDEX CONCURRENTLY IF EXISTS cases_by_priority",
)


def upgrade() -> None:
    run_concurrently(UPGRADE)


def downgrade() -> None:
    run_concurrently(DOWNGRADE)
