"""Seal audit records in the database, in one call per transaction.

``vigil_append_audit`` takes a transaction's audit entries, locks its tenant's chain
head, numbers the entries, hashes each one onto the one before and inserts them, then
moves the head: one round trip where the application made four, and the head is
locked for the time of one statement instead of several round trips.

Records sealed there use hash scheme 2: SHA-256 over the previous hash and the UTF-8
text form PostgreSQL gives the record's jsonb body (``domain.canonical.jsonb_text``
computes the same bytes in Python). Records written before keep scheme 1, so existing
chains, and chains with records of both schemes, verify as they did.

The function runs as the owner; the application role may no longer insert audit
records or move a chain head itself, so a record can only enter a chain sealed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from migrations.sql import run

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE audit_records
    ADD COLUMN hash_scheme smallint NOT NULL DEFAULT 1 CHECK (hash_scheme IN (1, 2));

CREATE FUNCTION vigil_append_audit(
    p_record_ids uuid[], p_actors text[], p_actions text[], p_entity_types text[],
    p_entity_ids text[], p_correlation_ids text[], p_details jsonb[]
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    v_tenant  uuid := vigil_current_tenant();
    v_at      timestamptz := clock_timestamp();
    v_at_text text := to_char(v_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    v_count   integer := coalesce(cardinality(p_record_ids), 0);
    v_seq     bigint;
    v_prev    bytea;
    v_seqs    bigint[] := '{}';
    v_prevs   bytea[] := '{}';
    v_hashes  bytea[] := '{}';
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'no tenant is set for this transaction'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF v_count = 0 THEN
        RAISE EXCEPTION 'no audit entries to append' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(cardinality(p_actors), 0) <> v_count
       OR coalesce(cardinality(p_actions), 0) <> v_count
       OR coalesce(cardinality(p_entity_types), 0) <> v_count
       OR coalesce(cardinality(p_entity_ids), 0) <> v_count
       OR coalesce(cardinality(p_correlation_ids), 0) <> v_count
       OR coalesce(cardinality(p_details), 0) <> v_count THEN
        RAISE EXCEPTION 'audit entry arrays differ in length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT h.last_seq, h.last_hash INTO v_seq, v_prev
    FROM audit_heads h WHERE h.tenant_id = v_tenant FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no such tenant' USING ERRCODE = 'foreign_key_violation';
    END IF;

    FOR i IN 1 .. v_count LOOP
        v_seq := v_seq + 1;
        v_seqs[i] := v_seq;
        v_prevs[i] := v_prev;
        v_prev := sha256(v_prev || convert_to(jsonb_build_object(
            'hashScheme', 2,
            'tenantId', v_tenant,
            'seq', v_seq,
            'recordId', p_record_ids[i],
            'recordedAt', v_at_text,
            'actor', p_actors[i],
            'action', p_actions[i],
            'entityType', p_entity_types[i],
            'entityId', p_entity_ids[i],
            'correlationId', p_correlation_ids[i],
            'details', p_details[i])::text, 'UTF8'));
        v_hashes[i] := v_prev;
    END LOOP;

    INSERT INTO audit_records (tenant_id, seq, record_id, recorded_at, actor, action,
                               entity_type, entity_id, correlation_id, details, prev_hash,
                               hash, hash_scheme)
    SELECT v_tenant, r.seq, r.record_id, v_at, r.actor, r.action, r.entity_type,
           r.entity_id, r.correlation_id, r.details, r.prev_hash, r.hash, 2
    FROM unnest(v_seqs, p_record_ids, p_actors, p_actions, p_entity_types, p_entity_ids,
                p_correlation_ids, p_details, v_prevs, v_hashes)
        AS r(seq, record_id, actor, action, entity_type, entity_id, correlation_id, details,
             prev_hash, hash);

    UPDATE audit_heads SET last_seq = v_seq, last_hash = v_prev WHERE tenant_id = v_tenant;
    RETURN v_seq;
END $$;
REVOKE ALL ON FUNCTION vigil_append_audit(uuid[], text[], text[], text[], text[], text[], jsonb[])
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    vigil_append_audit(uuid[], text[], text[], text[], text[], text[], jsonb[]) TO vigil_app;

REVOKE INSERT ON audit_records FROM vigil_app;
REVOKE UPDATE ON audit_heads FROM vigil_app;
"""

DOWNGRADE = r"""
GRANT UPDATE ON audit_heads TO vigil_app;
GRANT INSERT ON audit_records TO vigil_app;
DROP FUNCTION vigil_append_audit(uuid[], text[], text[], text[], text[], text[], jsonb[]);
ALTER TABLE audit_records DROP COLUMN hash_scheme;
"""


def upgrade() -> None:
    run(UPGRADE)


def downgrade() -> None:
    run(DOWNGRADE)
