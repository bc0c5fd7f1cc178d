"""Read the outbox's backlog figures from the pending rows alone.

``vigil_outbox_stats`` counted pending and parked rows and found the oldest pending one
with one pass over the whole outbox, published rows included. The relay asks for it
every 5 s, and published rows stay a day: at a few hundred messages a second that is
tens of millions of rows read every 5 s, for figures about a few hundred. It now reads
the partial index of pending rows, a new partial index of parked rows (which are few),
and the oldest pending row by ``seq`` (the order rows are written in, so its age is the
backlog's age).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

from migrations.sql import run, upgrade_script_of

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE INDEX outbox_parked ON outbox (seq)
    WHERE parked_at IS NOT NULL AND published_at IS NULL;

CREATE OR REPLACE FUNCTION vigil_outbox_stats(
    OUT pending bigint, OUT parked bigint, OUT oldest_pending_seconds double precision
) LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT
        (SELECT count(*) FROM outbox WHERE published_at IS NULL AND parked_at IS NULL),
        (SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL AND published_at IS NULL),
        coalesce((SELECT extract(epoch FROM now() - o.created_at) FROM outbox o
                  WHERE o.published_at IS NULL AND o.parked_at IS NULL
                  ORDER BY o.seq LIMIT 1), 0)::double precision
$$;
"""


def _stats_of_0001() -> str:
    """The function as revision 0001 made it, read from that revision, for the downgrade."""
    script = upgrade_script_of("0001_ingestion.py")
    start = script.index("CREATE FUNCTION vigil_outbox_stats(")
    end = script.index("REVOKE ALL ON FUNCTION vigil_outbox_stats()")
    return "CREATE OR REPLACE" + script[start:end].removeprefix("CREATE")


def upgrade() -> None:
    run(UPGRADE)


def downgrade() -> None:
    run(_stats_of_0001())
    run("DROP INDEX outbox_parked;")
