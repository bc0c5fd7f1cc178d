"""Close three ways around the review guard open to SQL run as the application role.

- A high case closed "alone" by lowering its band in the same UPDATE: the guard read the
  new band. It now reads the band the case had, and refuses a band changed by the
  closing statement.
- Four eyes compared names byte for byte, so "Alice", " alice" or "alice" in full-width
  letters could decide on alice's proposal. Names are now compared as
  ``lower(normalize(btrim(name), NFKC))``, the database's side of
  ``domain.case_workflow.same_person``.
- A decision taken by a token that also carried the regulator role, who only ever
  reads; and a proposal sent back recorded as approved. Both are refused.
- A closed case kept only its decider, decision and disposition: its rationale, the
  roles the decider held, the reason and the times could be rewritten. The whole record
  of the proposal and the decision is now fixed until the case is reopened (and a
  pending proposal's time with the rest of it).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

from migrations.sql import run, upgrade_script_of

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE FUNCTION vigil_person(name text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT lower(normalize(btrim(name), NFKC))
$$;

CREATE OR REPLACE FUNCTION cases_review_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> OLD.status AND NOT (OLD.status || '>' || NEW.status = ANY (ARRAY[
            'open>in_review', 'escalated>in_review', 'in_review>open',
            'in_review>pending_approval', 'in_review>closed', 'pending_approval>closed',
            'pending_approval>in_review', 'open>escalated', 'in_review>escalated',
            'closed>open'])) THEN
        RAISE EXCEPTION 'a case cannot go from % to %', OLD.status, NEW.status
            USING ERRCODE = 'VGTR1';
    END IF;
    IF NEW.decided_by IS DISTINCT FROM OLD.decided_by
       AND coalesce('regulator' = ANY (NEW.decided_roles), false) THEN
        RAISE EXCEPTION 'a regulator only reads: no decision is taken with that role'
            USING ERRCODE = 'VGFE1';
    END IF;
    IF OLD.status = 'pending_approval' AND NEW.status IN ('closed', 'in_review') THEN
        IF NEW.decided_by IS NULL
           OR vigil_person(NEW.decided_by) = vigil_person(OLD.proposed_by)
           OR NOT coalesce('supervisor' = ANY (NEW.decided_roles), false)
           OR NEW.decision IS DISTINCT FROM
              (CASE NEW.status WHEN 'closed' THEN 'approved' ELSE 'rejected' END) THEN
            RAISE EXCEPTION 'four eyes: the decider must be a supervisor other than the proposer'
                USING ERRCODE = 'VGFE1';
        END IF;
    ELSIF OLD.status = 'in_review' AND NEW.status = 'closed' THEN
        IF OLD.band <> 'low' OR NEW.band <> OLD.band
           OR NEW.decided_by IS NULL OR NEW.proposed_by IS NULL
           OR vigil_person(NEW.decided_by) <> vigil_person(NEW.proposed_by)
           OR NOT EXISTS (SELECT 1 FROM case_policies p
                          WHERE p.tenant_id = NEW.tenant_id AND p.low_closes_alone) THEN
            RAISE EXCEPTION 'four eyes: only a low case closes without approval, where the policy allows it'
                USING ERRCODE = 'VGFE1';
        END IF;
    ELSIF OLD.status = 'pending_approval' AND NEW.status = 'pending_approval'
          AND (NEW.proposed_by, NEW.proposed_at, NEW.disposition, NEW.rationale)
              IS DISTINCT FROM
              (OLD.proposed_by, OLD.proposed_at, OLD.disposition, OLD.rationale) THEN
        RAISE EXCEPTION 'four eyes: a pending proposal is not rewritten'
            USING ERRCODE = 'VGFE1';
    ELSIF OLD.status = 'closed' AND NEW.status = 'closed'
          AND (NEW.proposed_by, NEW.proposed_at, NEW.disposition, NEW.rationale,
               NEW.decided_by, NEW.decided_roles, NEW.decided_at, NEW.decision,
               NEW.decision_reason, NEW.closed_at)
              IS DISTINCT FROM
              (OLD.proposed_by, OLD.proposed_at, OLD.disposition, OLD.rationale,
               OLD.decided_by, OLD.decided_roles, OLD.decided_at, OLD.decision,
               OLD.decision_reason, OLD.closed_at) THEN
        RAISE EXCEPTION 'four eyes: a closed case''s decision is not rewritten'
            USING ERRCODE = 'VGFE1';
    END IF;
    RETURN NEW;
END $$;
"""


def _guard_of_0006() -> str:
    """The guard as revision 0006 made it, read from that revision, for the downgrade."""
    script = upgrade_script_of("0006_case_workflow.py")
    start = script.index("CREATE FUNCTION cases_review_guard()")
    end = script.index("CREATE TRIGGER cases_review_guard")
    return "CREATE OR REPLACE" + script[start:end].removeprefix("CREATE")


def upgrade() -> None:
    run(UPGRADE)


def downgrade() -> None:
    run(_guard_of_0006())
    run("DROP FUNCTION IF EXISTS vigil_person(text);")
