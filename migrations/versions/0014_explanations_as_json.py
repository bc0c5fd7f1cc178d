"""Keep assessments' explanations and contexts as the JSON text they were written in.

An explanation is about 5.5 KB of JSON, and nothing in the database looks inside it: it
is written once and read back whole. As ``jsonb`` each row was parsed into PostgreSQL's
binary form on its way in (56 us a row for an explanation with its context, against
22 us to check the same text as ``json``) and stored nearly twice as large (79 MB
against 42 MB for 20,000 rows with LZ4), which every scored event also wrote to the
WAL. As ``json`` the column keeps the text exactly as written, which is also what was
hashed into the audit record for the context.

Converting rewrites the table, with LZ4 as migration 0013 set it.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

from migrations.sql import run

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# Changing a column's type resets its compression, so LZ4 is set again in the same
# statement (and left out where the server has none, as in migration 0013).
_CONVERT = r"""
DO $$
BEGIN
    ALTER TABLE assessments
        ALTER COLUMN explanation TYPE {type} USING explanation::{type},
        ALTER COLUMN explanation SET COMPRESSION lz4,
        ALTER COLUMN context TYPE {type} USING context::{type},
        ALTER COLUMN context SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    ALTER TABLE assessments
        ALTER COLUMN explanation TYPE {type} USING explanation::{type},
        ALTER COLUMN context TYPE {type} USING context::{type};
END
$$;
"""

UPGRADE = _CONVERT.format(type="json")
DOWNGRADE = _CONVERT.format(type="jsonb")


def upgrade() -> None:
    run(UPGRADE)


def downgrade() -> None:
    run(DOWNGRADE)
