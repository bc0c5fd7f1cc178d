"""The case review workflow: assignment, proposals and decisions under four eyes,
comments and evidence written once, a history of every step, tenant case policies, SLA
breaches, and the answers to client mutation ids.

The database enforces what no fault of the application may bypass: a case's status
moves only along the allowed transitions, a case is closed (or its proposal rejected) only
by a decider other than the proposer who held the supervisor role, a low case closes
without approval only where its tenant's policy allows it, and comments, evidence and
the history are append-only.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from migrations.sql import run

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

NEW_TABLES = (
    "case_policies",
    "case_transitions",
    "case_comments",
    "case_evidence",
    "case_mutations",
)

UPGRADE = r"""
ALTER TABLE cases
    ADD COLUMN queue text NOT NULL DEFAULT 'default'
        CHECK (queue ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    ADD COLUMN typologies text[] NOT NULL DEFAULT '{}',
    ADD COLUMN assignee text CHECK (length(assignee) BETWEEN 1 AND 200),
    ADD COLUMN disposition text
        CHECK (disposition IN ('false_positive', 'no_further_action', 'sar_filed')),
    ADD COLUMN rationale text CHECK (length(rationale) BETWEEN 1 AND 4000),
    ADD COLUMN proposed_by text,
    ADD COLUMN proposed_at timestamptz,
    ADD COLUMN decision text CHECK (decision IN ('approved', 'rejected')),
    ADD COLUMN decided_by text,
    ADD COLUMN decided_roles text[],
    ADD COLUMN decided_at timestamptz,
    ADD COLUMN decision_reason text CHECK (length(decision_reason) BETWEEN 1 AND 4000),
    ADD COLUMN closed_at timestamptz,
    ADD COLUMN sla_breached_at timestamptz,
    ADD CONSTRAINT cases_in_review_is_assigned
        CHECK (status <> 'in_review' OR assignee IS NOT NULL),
    ADD CONSTRAINT cases_pending_has_a_proposal
        CHECK (status <> 'pending_approval' OR (disposition IS NOT NULL
               AND rationale IS NOT NULL AND proposed_by IS NOT NULL)),
    ADD CONSTRAINT cases_closed_is_approved
        CHECK (status <> 'closed' OR (decision = 'approved' AND decided_by IS NOT NULL
               AND disposition IS NOT NULL AND closed_at IS NOT NULL));

-- "Claim next": a tenant's open cases of one queue, highest priority first, then the
-- earliest due.
CREATE INDEX cases_claim_next ON cases (tenant_id, queue, priority DESC, sla_due_at)
    WHERE status = 'open';
-- The SLA sweep: cases not closed and not yet flagged, by due time.
CREATE INDEX cases_sla_due ON cases (sla_due_at)
    WHERE sla_breached_at IS NULL AND status <> 'closed';

CREATE TABLE case_policies (
    tenant_id         uuid PRIMARY KEY REFERENCES tenants,
    document          jsonb NOT NULL,
    -- Kept beside the document for the review guard; always the document's value.
    low_closes_alone  boolean NOT NULL
        CHECK (low_closes_alone = coalesce((document ->> 'lowClosesAlone')::boolean, false)),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    updated_by        text NOT NULL
);

-- The review guard: the transition table and four eyes, for every role and every path.
CREATE FUNCTION cases_review_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> OLD.status AND NOT (OLD.status || '>' || NEW.status = ANY (ARRAY[
            'open>in_review', 'escalated>in_review', 'in_review>open',
            'in_review>pending_approval', 'in_review>closed', 'pending_approval>closed',
            'pending_approval>in_review', 'open>escalated', 'in_review>escalated',
            'closed>open'])) THEN
        RAISE EXCEPTION 'a case cannot go from % to %', OLD.status, NEW.status
            USING ERRCODE = 'VGTR1';
    END IF;
    IF OLD.status = 'pending_approval' AND NEW.status IN ('closed', 'in_review') THEN
        IF NEW.decided_by IS NULL OR NEW.decided_by = OLD.proposed_by
           OR NOT coalesce('supervisor' = ANY (NEW.decided_roles), false) THEN
            RAISE EXCEPTION 'four eyes: the decider must be a supervisor other than the proposer'
                USING ERRCODE = 'VGFE1';
        END IF;
    ELSIF OLD.status = 'in_review' AND NEW.status = 'closed' THEN
        IF NEW.band <> 'low' OR NEW.decided_by IS DISTINCT FROM NEW.proposed_by
           OR NOT EXISTS (SELECT 1 FROM case_policies p
                          WHERE p.tenant_id = NEW.tenant_id AND p.low_closes_alone) THEN
            RAISE EXCEPTION 'four eyes: only a low case closes without approval, where the policy allows it'
                USING ERRCODE = 'VGFE1';
        END IF;
    ELSIF OLD.status = 'pending_approval' AND NEW.status = 'pending_approval'
          AND (NEW.proposed_by, NEW.disposition, NEW.rationale)
              IS DISTINCT FROM (OLD.proposed_by, OLD.disposition, OLD.rationale) THEN
        RAISE EXCEPTION 'four eyes: a pending proposal is not rewritten'
            USING ERRCODE = 'VGFE1';
    ELSIF OLD.status = 'closed' AND NEW.status = 'closed'
          AND (NEW.decided_by, NEW.decision, NEW.disposition)
              IS DISTINCT FROM (OLD.decided_by, OLD.decision, OLD.disposition) THEN
        RAISE EXCEPTION 'four eyes: a closed case''s decision is not rewritten'
            USING ERRCODE = 'VGFE1';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER cases_review_guard BEFORE UPDATE ON cases
    FOR EACH ROW EXECUTE FUNCTION cases_review_guard();

-- One row per review step, with the roles the actor held: the case's history.
CREATE TABLE case_transitions (
    tenant_id    uuid NOT NULL,
    case_id      uuid NOT NULL,
    version      integer NOT NULL CHECK (version > 0),
    action       text NOT NULL CHECK (action IN ('claim', 'assign', 'unassign', 'comment',
                 'propose', 'close_alone', 'approve', 'reject', 'escalate', 'reopen')),
    from_status  text NOT NULL,
    to_status    text NOT NULL,
    actor        text NOT NULL CHECK (length(actor) BETWEEN 1 AND 200),
    actor_roles  text[] NOT NULL,
    details      jsonb NOT NULL,
    taken_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, case_id, version),
    FOREIGN KEY (tenant_id, case_id) REFERENCES cases
);

CREATE TABLE case_comments (
    tenant_id   uuid NOT NULL,
    comment_id  uuid NOT NULL,
    version     integer NOT NULL CHECK (version > 0),
    case_id     uuid NOT NULL,
    body        text NOT NULL CHECK (length(body) BETWEEN 1 AND 10000),
    author      text NOT NULL CHECK (length(author) BETWEEN 1 AND 200),
    written_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, comment_id, version),
    FOREIGN KEY (tenant_id, case_id) REFERENCES cases
);
CREATE INDEX case_comments_of_case ON case_comments (tenant_id, case_id, written_at);

CREATE TABLE case_evidence (
    tenant_id    uuid NOT NULL,
    evidence_id  uuid NOT NULL,
    case_id      uuid NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('document', 'url')),
    reference    text NOT NULL CHECK (length(reference) BETWEEN 1 AND 2000),
    sha256       bytea NOT NULL CHECK (length(sha256) = 32),
    description  text NOT NULL CHECK (length(description) <= 10000),
    added_by     text NOT NULL CHECK (length(added_by) BETWEEN 1 AND 200),
    added_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, evidence_id),
    FOREIGN KEY (tenant_id, case_id) REFERENCES cases
);
CREATE INDEX case_evidence_of_case ON case_evidence (tenant_id, case_id, added_at);

-- The first answer to each client mutation id, per tenant and actor: a retried call
-- gets it again instead of acting twice.
CREATE TABLE case_mutations (
    tenant_id           uuid NOT NULL,
    actor               text NOT NULL,
    client_mutation_id  text NOT NULL CHECK (length(client_mutation_id) BETWEEN 1 AND 200),
    mutation            text NOT NULL,
    case_id             uuid NOT NULL,
    answer              jsonb NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, actor, client_mutation_id)
);

CREATE FUNCTION vigil_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

-- Tenants with cases past their SLA that are not flagged yet, for the sweeper (which
-- then works in each tenant under row-level security).
CREATE FUNCTION vigil_sla_due_tenants(max_rows integer)
RETURNS TABLE (tenant_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT DISTINCT c.tenant_id FROM cases c
    WHERE c.sla_breached_at IS NULL AND c.status <> 'closed' AND c.sla_due_at <= now()
    LIMIT max_rows
$$;
REVOKE ALL ON FUNCTION vigil_sla_due_tenants(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vigil_sla_due_tenants(integer) TO vigil_app;

-- The application changes a case's workflow columns, never its identity.
REVOKE UPDATE ON cases FROM vigil_app;
GRANT UPDATE (status, band, priority, updated_at, sla_due_at, alert_count, version, queue,
              typologies, assignee, disposition, rationale, proposed_by, proposed_at,
              decision, decided_by, decided_roles, decided_at, decision_reason, closed_at,
              sla_breached_at)
    ON cases TO vigil_app;
GRANT SELECT, INSERT, UPDATE ON case_policies TO vigil_app;
GRANT SELECT, INSERT ON case_transitions, case_comments, case_evidence, case_mutations
    TO vigil_app;
"""

APPEND_ONLY = r"""
CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION vigil_append_only();
CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION vigil_append_only();
"""

POLICIES = r"""
ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON {table} TO vigil_app
    USING (tenant_id = vigil_current_tenant())
    WITH CHECK (tenant_id = vigil_current_tenant());
"""

DOWNGRADE = r"""
REVOKE UPDATE ON cases FROM vigil_app;
GRANT UPDATE ON cases TO vigil_app;
DROP FUNCTION IF EXISTS vigil_sla_due_tenants(integer);
DROP TABLE IF EXISTS case_mutations, case_evidence, case_comments, case_transitions;
DROP FUNCTION IF EXISTS vigil_append_only();
DROP TRIGGER IF EXISTS cases_review_guard ON cases;
DROP FUNCTION IF EXISTS cases_review_guard();
DROP TABLE IF EXISTS case_policies;
DROP INDEX IF EXISTS cases_sla_due;
DROP INDEX IF EXISTS cases_claim_next;
ALTER TABLE cases
    DROP CONSTRAINT cases_closed_is_approved,
    DROP CONSTRAINT cases_pending_has_a_proposal,
    DROP CONSTRAINT cases_in_review_is_assigned,
    DROP COLUMN sla_breached_at,
    DROP COLUMN closed_at,
    DROP COLUMN decision_reason,
    DROP COLUMN decided_at,
    DROP COLUMN decided_roles,
    DROP COLUMN decided_by,
    DROP COLUMN decision,
    DROP COLUMN proposed_at,
    DROP COLUMN proposed_by,
    DROP COLUMN rationale,
    DROP COLUMN disposition,
    DROP COLUMN assignee,
    DROP COLUMN typologies,
    DROP COLUMN queue;
"""


def upgrade() -> None:
    run(UPGRADE)
    for table in ("case_transitions", "case_comments", "case_evidence", "case_mutations"):
        run(APPEND_ONLY.format(table=table))
    for table in NEW_TABLES:
        run(POLICIES.format(table=table))


def downgrade() -> None:
    run(DOWNGRADE)
