"""Seal audit records at commit, inside the commit, instead of when they are handed over.

Until now ``vigil_append_audit`` locked its tenant's chain head as it sealed, and the
lock was held until the client sent ``COMMIT``: one round trip through a client that,
under load, is busy with other requests. Every writer of a tenant waits on that lock, so
its hold time bounded the tenant's write rate (about 3 ms a transaction through a busy
portal, against a few tenths of a millisecond of work).

Now ``vigil_append_audit`` checks and queues the entries in ``audit_pending``, taking no
lock, and a deferred constraint trigger on that table seals them when the transaction
commits: it locks the head, numbers and hashes the entries exactly as before (scheme 2),
inserts the records, moves the head and drops the queued row. The head is then held
only for the commit itself, and no client round trip lies inside it.

What stays the same: a record can enter a chain only sealed (the application role has
no right on ``audit_pending``, ``audit_records`` or the head); records appear in chain
order in commit order; a transaction that rolls back, wholly or to a savepoint, seals
nothing of what it rolled back; every check of the arguments, and the check that the
tenant exists, still fails the call itself. What changes: the call returns nothing (the
sequence numbers are only known at commit), and a transaction no longer sees its own
audit records before it commits.

``audit_pending`` is unlogged: a row lives only inside the transaction that wrote it,
so there is nothing in it for a crash to lose, and no WAL is spent on it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

from migrations.sql import run, upgrade_script_of

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_SIGNATURE = "vigil_append_audit(uuid[], text[], text[], text[], text[], text[], jsonb[])"

UPGRADE = rf"""
CREATE UNLOGGED TABLE audit_pending (
    pending_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    record_ids       uuid[] NOT NULL,
    actors           text[] NOT NULL,
    actions          text[] NOT NULL,
    entity_types     text[] NOT NULL,
    entity_ids       text[] NOT NULL,
    correlation_ids  text[] NOT NULL,
    details          jsonb[] NOT NULL
);
ALTER TABLE audit_pending ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON audit_pending FROM PUBLIC;

DROP FUNCTION {_SIGNATURE};

CREATE FUNCTION vigil_append_audit(
    p_record_ids uuid[], p_actors text[], p_actions text[], p_entity_types text[],
    p_entity_ids text[], p_correlation_ids text[], p_details jsonb[]
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    v_tenant  uuid := vigil_current_tenant();
    v_count   integer := coalesce(cardinality(p_record_ids), 0);
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
    -- Only whether the chain exists: its head is locked at commit, not here.
    PERFORM FROM audit_heads h WHERE h.tenant_id = v_tenant;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no such tenant' USING ERRCODE = 'foreign_key_violation';
    END IF;

    INSERT INTO audit_pending (tenant_id, record_ids, actors, actions, entity_types,
                               entity_ids, correlation_ids, details)
    VALUES (v_tenant, p_record_ids, p_actors, p_actions, p_entity_types, p_entity_ids,
            p_correlation_ids, p_details);
END $$;
REVOKE ALL ON FUNCTION {_SIGNATURE} FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {_SIGNATURE} TO vigil_app;

CREATE FUNCTION vigil_seal_pending_audit() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    v_tenant  uuid := NEW.tenant_id;
    v_at      timestamptz := clock_timestamp();
    v_at_text text := to_char(v_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    v_count   integer := cardinality(NEW.record_ids);
    v_seq     bigint;
    v_prev    bytea;
    v_seqs    bigint[] := '{{}}';
    v_prevs   bytea[] := '{{}}';
    v_hashes  bytea[] := '{{}}';
BEGIN
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
            'recordId', NEW.record_ids[i],
            'recordedAt', v_at_text,
            'actor', NEW.actors[i],
            'action', NEW.actions[i],
            'entityType', NEW.entity_types[i],
            'entityId', NEW.entity_ids[i],
            'correlationId', NEW.correlation_ids[i],
            'details', NEW.details[i])::text, 'UTF8'));
        v_hashes[i] := v_prev;
    END LOOP;

    INSERT INTO audit_records (tenant_id, seq, record_id, recorded_at, actor, action,
                               entity_type, entity_id, correlation_id, details, prev_hash,
                               hash, hash_scheme)
    SELECT v_tenant, r.seq, r.record_id, v_at, r.actor, r.action, r.entity_type,
           r.entity_id, r.correlation_id, r.details, r.prev_hash, r.hash, 2
    FROM unnest(v_seqs, NEW.record_ids, NEW.actors, NEW.actions, NEW.entity_types,
                NEW.entity_ids, NEW.correlation_ids, NEW.details, v_prevs, v_hashes)
        AS r(seq, record_id, actor, action, entity_type, entity_id, correlation_id, details,
             prev_hash, hash);

    UPDATE audit_heads SET last_seq = v_seq, last_hash = v_prev WHERE tenant_id = v_tenant;
    DELETE FROM audit_pending WHERE pending_id = NEW.pending_id;
    RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION vigil_seal_pending_audit() FROM PUBLIC;

CREATE CONSTRAINT TRIGGER audit_pending_sealed_at_commit
    AFTER INSERT ON audit_pending
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION vigil_seal_pending_audit();
"""


def _append_of_0005() -> str:
    """``vigil_append_audit`` and its grants as revision 0005 made them, read from that
    revision, for the downgrade."""
    script = upgrade_script_of("0005_audit_sealing.py")
    start = script.index("CREATE FUNCTION vigil_append_audit(")
    end = script.index("REVOKE INSERT ON audit_records")
    return script[start:end]


def upgrade() -> None:
    run(UPGRADE)


def downgrade() -> None:
    run(
        "DROP TABLE audit_pending;\n"
        "DROP FUNCTION vigil_seal_pending_audit();\n"
        f"DROP FUNCTION {_SIGNATURE};"
    )
    run(_append_of_0005())
