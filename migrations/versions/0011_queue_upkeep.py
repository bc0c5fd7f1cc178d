"""Have autovacuum visit the queue tables early.

The outbox is a queue: every row is inserted, updated once when it is published and
deleted a day later, so it holds a dead row version for every message relayed, and its
partial index of pending rows keeps an entry for each until a vacuum removes it. The
relay reads that index from its oldest end at every claim, so dead entries there are
read again and again: over a few replays without a vacuum, a claim went from under a
millisecond to ten. ``audit_pending`` holds no row past its transaction, but leaves a
dead one for every sealing transaction. With PostgreSQL's defaults a table is vacuumed
once a fifth of it is dead, which for a queue of millions of rows is far too late.

Both tables are vacuumed after a fixed number of dead rows instead, without the cost
delay, and the outbox is analysed as often. These settings only take effect where
autovacuum runs, as it does by default; where it is off, the operator's own vacuuming
must visit these tables often (``vigil demo`` does so itself when it finds it off).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

from migrations.sql import run

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 5000,
    autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0
);
ALTER TABLE audit_pending SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0
);
"""

DOWNGRADE = r"""
ALTER TABLE audit_pending RESET (
    autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold, autovacuum_vacuum_cost_delay
);
ALTER TABLE outbox RESET (
    autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
    autovacuum_vacuum_insert_scale_factor, autovacuum_vacuum_insert_threshold,
    autovacuum_analyze_scale_factor, autovacuum_analyze_threshold,
    autovacuum_vacuum_cost_delay
);
"""


def upgrade() -> None:
    run(UPGRADE)


def downgrade() -> None:
    run(DOWNGRADE)
