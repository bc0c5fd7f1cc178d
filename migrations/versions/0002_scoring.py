"""Rulesets, assessments with their explanations, alerts, cases and scoring failures.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from migrations.sql import run

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TENANT_TABLES = ("rulesets", "assessments", "alerts", "cases", "scoring_failures")

UPGRADE = r"""
CREATE TABLE rulesets (
    tenant_id      uuid NOT NULL REFERENCES tenants,
    version        integer NOT NULL CHECK (version > 0),
    document       jsonb NOT NULL,
    document_hash  bytea NOT NULL CHECK (length(document_hash) = 32),
    status         text NOT NULL CHECK (status IN ('validated', 'active', 'retired')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    created_by     text NOT NULL,
    activated_at   timestamptz,
    activated_by   text,
    PRIMARY KEY (tenant_id, version)
);
CREATE UNIQUE INDEX rulesets_one_active ON rulesets (tenant_id) WHERE status = 'active';

-- A ruleset version is immutable: only its status moves on.
CREATE FUNCTION rulesets_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.document IS DISTINCT FROM OLD.document
       OR NEW.document_hash IS DISTINCT FROM OLD.document_hash
       OR NEW.version IS DISTINCT FROM OLD.version THEN
        RAISE EXCEPTION 'a ruleset version is immutable' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER rulesets_immutable BEFORE UPDATE ON rulesets
    FOR EACH ROW EXECUTE FUNCTION rulesets_immutable();

CREATE TABLE assessments (
    tenant_id        uuid NOT NULL,
    assessment_id    uuid NOT NULL,
    event_id         uuid NOT NULL,
    ruleset_version  integer NOT NULL,
    scorer           text NOT NULL,
    score            integer NOT NULL CHECK (score BETWEEN 0 AND 100),
    band             text NOT NULL CHECK (band IN ('low', 'medium', 'high', 'critical')),
    alert            boolean NOT NULL,
    explanation      jsonb NOT NULL,
    context          jsonb NOT NULL,
    scored_at        timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, assessment_id),
    UNIQUE (tenant_id, event_id, ruleset_version),
    FOREIGN KEY (tenant_id, event_id) REFERENCES events,
    FOREIGN KEY (tenant_id, ruleset_version) REFERENCES rulesets
);

CREATE TABLE cases (
    tenant_id    uuid NOT NULL,
    case_id      uuid NOT NULL,
    subject_id   uuid NOT NULL,
    status       text NOT NULL
        CHECK (status IN ('open', 'in_review', 'pending_approval', 'escalated', 'closed')),
    band         text NOT NULL CHECK (band IN ('low', 'medium', 'high', 'critical')),
    priority     integer NOT NULL,
    opened_at    timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    sla_due_at   timestamptz NOT NULL,
    alert_count  integer NOT NULL CHECK (alert_count > 0),
    version      integer NOT NULL CHECK (version > 0),
    PRIMARY KEY (tenant_id, case_id),
    FOREIGN KEY (tenant_id, subject_id) REFERENCES subjects
);
CREATE UNIQUE INDEX cases_one_open_per_subject ON cases (tenant_id, subject_id)
    WHERE status <> 'closed';
CREATE INDEX cases_queue ON cases (tenant_id, status, priority DESC, sla_due_at);

CREATE TABLE alerts (
    tenant_id      uuid NOT NULL,
    alert_id       uuid NOT NULL,
    assessment_id  uuid NOT NULL,
    event_id       uuid NOT NULL,
    subject_id     uuid NOT NULL,
    case_id        uuid NOT NULL,
    score          integer NOT NULL,
    band           text NOT NULL,
    typologies     text[] NOT NULL,
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, alert_id),
    UNIQUE (tenant_id, assessment_id, subject_id),
    FOREIGN KEY (tenant_id, assessment_id) REFERENCES assessments,
    FOREIGN KEY (tenant_id, case_id) REFERENCES cases
);
CREATE INDEX alerts_case ON alerts (tenant_id, case_id, created_at);

-- Events whose scoring failed for good, with the reason; cleared when re-driven.
CREATE TABLE scoring_failures (
    tenant_id  uuid NOT NULL,
    event_id   uuid NOT NULL,
    attempts   integer NOT NULL,
    reason     text NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id),
    FOREIGN KEY (tenant_id, event_id) REFERENCES events
);

CREATE INDEX events_received_at ON events (received_at);

-- Accepted events still without an assessment after a deadline, across tenants, for
-- the reconciler; failures are left to the operator's re-drive.
CREATE FUNCTION vigil_unassessed_events(deadline interval, lookback interval, max_rows integer)
RETURNS TABLE (tenant_id uuid, event_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT e.tenant_id, e.event_id
    FROM events e
    WHERE e.received_at < now() - deadline
      AND e.received_at > now() - lookback
      AND NOT EXISTS (SELECT 1 FROM assessments a
                      WHERE a.tenant_id = e.tenant_id AND a.event_id = e.event_id)
      AND NOT EXISTS (SELECT 1 FROM scoring_failures f
                      WHERE f.tenant_id = e.tenant_id AND f.event_id = e.event_id)
    ORDER BY e.received_at
    LIMIT max_rows
$$;
REVOKE ALL ON FUNCTION vigil_unassessed_events(interval, interval, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vigil_unassessed_events(interval, interval, integer) TO vigil_app;

GRANT SELECT, INSERT ON rulesets TO vigil_app;
GRANT UPDATE (status, activated_at, activated_by) ON rulesets TO vigil_app;
GRANT SELECT, INSERT ON assessments, alerts TO vigil_app;
GRANT SELECT, INSERT, UPDATE ON cases TO vigil_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON scoring_failures TO vigil_app;
"""

POLICIES = r"""
ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON {table} TO vigil_app
    USING (tenant_id = vigil_current_tenant())
    WITH CHECK (tenant_id = vigil_current_tenant());
"""

DOWNGRADE = r"""
DROP FUNCTION IF EXISTS vigil_unassessed_events(interval, interval, integer);
DROP INDEX IF EXISTS events_received_at;
DROP TABLE IF EXISTS scoring_failures, alerts, cases, assessments, rulesets CASCADE;
DROP FUNCTION IF EXISTS rulesets_immutable();
"""


def upgrade() -> None:
    run(UPGRADE)
    for table in TENANT_TABLES:
        run(POLICIES.format(table=table))


def downgrade() -> None:
    run(DOWNGRADE)
