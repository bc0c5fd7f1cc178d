"""Tenants, subjects, events, outbox, inbox and the hash-chained audit trail.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from migrations.sql import run

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TENANT_TABLES = ("tenants", "subjects", "events", "outbox", "inbox", "audit_records", "audit_heads")

UPGRADE = r"""
CREATE FUNCTION vigil_current_tenant() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('vigil.tenant_id', true), '')::uuid $$;

CREATE TABLE tenants (
    tenant_id   uuid PRIMARY KEY,
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE subjects (
    tenant_id     uuid NOT NULL REFERENCES tenants,
    subject_id    uuid NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('customer', 'account')),
    external_ref  text NOT NULL CHECK (length(external_ref) BETWEEN 1 AND 64),
    attributes    jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, subject_id),
    UNIQUE (tenant_id, kind, external_ref)
);

CREATE TABLE events (
    tenant_id        uuid NOT NULL,
    event_id         uuid NOT NULL,
    idempotency_key  text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    event_type       text NOT NULL,
    occurred_at      timestamptz NOT NULL,
    received_at      timestamptz NOT NULL,
    subject_id       uuid NOT NULL,
    counterparty_id  uuid,
    amount           numeric(22, 4) CHECK (amount > 0),
    currency         char(3),
    payload          jsonb NOT NULL,
    payload_hash     bytea NOT NULL CHECK (length(payload_hash) = 32),
    door             text NOT NULL,
    actor            text NOT NULL,
    correlation_id   text,
    PRIMARY KEY (tenant_id, event_id),
    UNIQUE (tenant_id, idempotency_key),
    FOREIGN KEY (tenant_id, subject_id) REFERENCES subjects,
    FOREIGN KEY (tenant_id, counterparty_id) REFERENCES subjects (tenant_id, subject_id)
);
CREATE INDEX events_subject_time ON events (tenant_id, subject_id, occurred_at);
CREATE INDEX events_counterparty_time ON events (tenant_id, counterparty_id, occurred_at)
    WHERE counterparty_id IS NOT NULL;

-- One row per message to publish. seq orders the messages of one ordering key; it is
-- never used as a cursor, so a row that commits late is still found.
CREATE TABLE outbox (
    tenant_id        uuid NOT NULL,
    message_id       uuid NOT NULL,
    seq              bigint GENERATED ALWAYS AS IDENTITY,
    ordering_key     uuid NOT NULL,
    message_type     text NOT NULL,
    envelope         jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT '-infinity',
    last_error       text,
    published_at     timestamptz,
    parked_at        timestamptz,
    PRIMARY KEY (tenant_id, message_id)
);
CREATE INDEX outbox_pending ON outbox (seq)
    WHERE published_at IS NULL AND parked_at IS NULL;
CREATE INDEX outbox_pending_by_key ON outbox (tenant_id, ordering_key, seq)
    WHERE published_at IS NULL AND parked_at IS NULL;
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;

CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('vigil_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

CREATE TABLE inbox (
    tenant_id    uuid NOT NULL,
    consumer     text NOT NULL,
    message_id   text NOT NULL CHECK (length(message_id) BETWEEN 1 AND 300),
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, consumer, message_id)
);

CREATE TABLE audit_records (
    tenant_id       uuid NOT NULL REFERENCES tenants,
    seq             bigint NOT NULL CHECK (seq > 0),
    record_id       uuid NOT NULL,
    recorded_at     timestamptz NOT NULL,
    actor           text NOT NULL,
    action          text NOT NULL,
    entity_type     text NOT NULL,
    entity_id       text NOT NULL,
    correlation_id  text,
    details         jsonb NOT NULL,
    prev_hash       bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash            bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (tenant_id, seq),
    UNIQUE (tenant_id, record_id)
);
CREATE INDEX audit_records_entity ON audit_records (tenant_id, entity_type, entity_id, seq);

-- The tip of each tenant's chain. Writers lock it just before commit, so records are
-- numbered in commit order without gaps.
CREATE TABLE audit_heads (
    tenant_id  uuid PRIMARY KEY REFERENCES tenants,
    last_seq   bigint NOT NULL DEFAULT 0,
    last_hash  bytea NOT NULL DEFAULT decode(repeat('00', 32), 'hex')
);

CREATE FUNCTION audit_records_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit records are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_records_append_only
    BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION audit_records_append_only();
CREATE TRIGGER audit_records_no_truncate
    BEFORE TRUNCATE ON audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION audit_records_append_only();

-- Outbox figures for /metrics, across tenants, without opening the rows to the caller.
CREATE FUNCTION vigil_outbox_stats(
    OUT pending bigint, OUT parked bigint, OUT oldest_pending_seconds double precision
) LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT
        count(*) FILTER (WHERE published_at IS NULL AND parked_at IS NULL),
        count(*) FILTER (WHERE parked_at IS NOT NULL AND published_at IS NULL),
        coalesce(extract(epoch FROM now() - min(created_at)
            FILTER (WHERE published_at IS NULL AND parked_at IS NULL)), 0)::double precision
    FROM outbox
$$;
REVOKE ALL ON FUNCTION vigil_outbox_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vigil_outbox_stats() TO vigil_app, vigil_relay;

REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO vigil_app, vigil_relay;

GRANT SELECT ON tenants TO vigil_app;
GRANT SELECT, INSERT, UPDATE ON subjects, events TO vigil_app;
GRANT SELECT, INSERT ON outbox, inbox TO vigil_app;
GRANT SELECT, INSERT ON audit_records TO vigil_app;
GRANT SELECT, UPDATE ON audit_heads TO vigil_app;
GRANT SELECT, UPDATE, DELETE ON outbox TO vigil_relay;
"""

POLICIES = r"""
ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON {table} TO vigil_app
    USING (tenant_id = vigil_current_tenant())
    WITH CHECK (tenant_id = vigil_current_tenant());
"""

RELAY_POLICY = r"""
CREATE POLICY relay_reads_all ON outbox TO vigil_relay USING (true) WITH CHECK (true);
"""

DOWNGRADE = r"""
DROP TABLE IF EXISTS audit_heads, audit_records, inbox, outbox, events, subjects, tenants CASCADE;
DROP FUNCTION IF EXISTS vigil_outbox_stats();
DROP FUNCTION IF EXISTS audit_records_append_only();
DROP FUNCTION IF EXISTS outbox_notify();
DROP FUNCTION IF EXISTS vigil_current_tenant();
GRANT USAGE ON SCHEMA public TO PUBLIC;
"""


def upgrade() -> None:
    run(UPGRADE)
    for table in TENANT_TABLES:
        run(POLICIES.format(table=table))
    run(RELAY_POLICY)


def downgrade() -> None:
    run(DOWNGRADE)
