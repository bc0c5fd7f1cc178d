"""The live review queue reads a tenant's case changes from its audit chain: index them.

A partial index on the records of cases only, so that finding the changes after a
cursor never walks the tenant's other records (one per assessed event, for a start).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from migrations.sql import run

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE INDEX audit_records_case_feed ON audit_records (tenant_id, seq)
    WHERE entity_type = 'case';
"""

DOWNGRADE = """
DROP INDEX IF EXISTS audit_records_case_feed;
"""


def upgrade() -> None:
    run(UPGRADE)


def downgrade() -> None:
    run(DOWNGRADE)
