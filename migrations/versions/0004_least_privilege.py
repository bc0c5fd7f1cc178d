"""Least privilege and safer writes, after a review of what each role could do.

- The application role may no longer change stored events.
- The relay role may change only the columns that record delivery, and delete only
  published rows.
- An audit record's time must be the database's time (within a small skew), and the
  tenant's chain head may only move forward, onto a record that exists.
- A subject's attributes remember when they were true: an older event fills gaps but
  never overwrites what a newer one said.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from migrations.sql import run

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = r"""
REVOKE UPDATE ON events FROM vigil_app;

REVOKE UPDATE, DELETE ON outbox FROM vigil_relay;
GRANT UPDATE (attempts, next_attempt_at, last_error, published_at, parked_at)
    ON outbox TO vigil_relay;
GRANT DELETE ON outbox TO vigil_relay;
DROP POLICY relay_reads_all ON outbox;
CREATE POLICY relay_reads ON outbox FOR SELECT TO vigil_relay USING (true);
CREATE POLICY relay_marks ON outbox FOR UPDATE TO vigil_relay USING (true) WITH CHECK (true);
CREATE POLICY relay_purges ON outbox FOR DELETE TO vigil_relay
    USING (published_at IS NOT NULL);

CREATE FUNCTION audit_records_recorded_now() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.recorded_at NOT BETWEEN now() - interval '2 minutes'
                               AND clock_timestamp() + interval '2 minutes' THEN
        RAISE EXCEPTION 'an audit record is written at the time it records'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER audit_records_recorded_now BEFORE INSERT ON audit_records
    FOR EACH ROW EXECUTE FUNCTION audit_records_recorded_now();

CREATE FUNCTION audit_heads_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.tenant_id IS DISTINCT FROM OLD.tenant_id OR NEW.last_seq <= OLD.last_seq THEN
        RAISE EXCEPTION 'the audit chain head only moves forward'
            USING ERRCODE = 'check_violation';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM audit_records r
                   WHERE r.tenant_id = NEW.tenant_id AND r.seq = NEW.last_seq
                     AND r.hash = NEW.last_hash) THEN
        RAISE EXCEPTION 'the audit chain head must name an existing record'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER audit_heads_forward_only BEFORE UPDATE ON audit_heads
    FOR EACH ROW EXECUTE FUNCTION audit_heads_forward_only();

ALTER TABLE subjects ADD COLUMN attributes_at timestamptz NOT NULL DEFAULT '-infinity';
"""

DOWNGRADE = r"""
ALTER TABLE subjects DROP COLUMN attributes_at;
DROP TRIGGER audit_heads_forward_only ON audit_heads;
DROP FUNCTION audit_heads_forward_only();
DROP TRIGGER audit_records_recorded_now ON audit_records;
DROP FUNCTION audit_records_recorded_now();
DROP POLICY relay_purges ON outbox;
DROP POLICY relay_marks ON outbox;
DROP POLICY relay_reads ON outbox;
CREATE POLICY relay_reads_all ON outbox TO vigil_relay USING (true) WITH CHECK (true);
REVOKE DELETE ON outbox FROM vigil_relay;
REVOKE UPDATE (attempts, next_attempt_at, last_error, published_at, parked_at)
    ON outbox FROM vigil_relay;
GRANT UPDATE, DELETE ON outbox TO vigil_relay;
GRANT UPDATE ON events TO vigil_app;
"""


def upgrade() -> None:
    run(UPGRADE)


def downgrade() -> None:
    run(DOWNGRADE)
