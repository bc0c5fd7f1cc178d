"""Compress assessments' explanations and contexts with LZ4.

An assessment row carries its explanation (every rule, what it read, its thresholds:
about 5.5 KB of JSON) and its evaluation context (about 2.3 KB), so every row is
compressed on its way into TOAST. PostgreSQL's own compression (pglz) took about 80 us
a row on the machine the figures come from, LZ4 about 15: a scored event is that much
cheaper for the database, at about a third more space for these two columns. Rows
already stored keep their compression until they are rewritten; both kinds read back
the same.

A server built without LZ4 refuses the setting; there the columns stay as they were and
the migration says so.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

from migrations.sql import run

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

UPGRADE = r"""
DO $$
BEGIN
    ALTER TABLE assessments
        ALTER COLUMN explanation SET COMPRESSION lz4,
        ALTER COLUMN context SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this server has no LZ4: assessments keep the default compression';
END
$$;
"""

DOWNGRADE = r"""
ALTER TABLE assessments
    ALTER COLUMN explanation SET COMPRESSION default,
    ALTER COLUMN context SET COMPRESSION default;
"""


def upgrade() -> None:
    run(UPGRADE)


def downgrade() -> None:
    run(DOWNGRADE)
