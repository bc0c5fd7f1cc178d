"""SQLAlchemy Core descriptions of the tables the migrations create."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSON, JSONB, UUID

metadata = MetaData()


def _tenant() -> Column[object]:
    return Column("tenant_id", UUID(as_uuid=True), primary_key=True)


def _time(name: str, **kwargs: object) -> Column[object]:
    return Column(name, DateTime(timezone=True), **kwargs)  # type: ignore[arg-type]


tenants = Table(
    "tenants",
    metadata,
    _tenant(),
    Column("slug", Text, nullable=False),
    Column("name", Text, nullable=False),
    _time("created_at"),
)

subjects = Table(
    "subjects",
    metadata,
    _tenant(),
    Column("subject_id", UUID(as_uuid=True), primary_key=True),
    Column("kind", Text, nullable=False),
    Column("external_ref", Text, nullable=False),
    Column("attributes", JSONB, nullable=False),
    _time("attributes_at"),
    _time("created_at"),
    _time("updated_at"),
)

events = Table(
    "events",
    metadata,
    _tenant(),
    Column("event_id", UUID(as_uuid=True), primary_key=True),
    Column("idempotency_key", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    _time("occurred_at", nullable=False),
    _time("received_at", nullable=False),
    Column("subject_id", UUID(as_uuid=True), nullable=False),
    Column("counterparty_id", UUID(as_uuid=True)),
    Column("amount", Numeric(22, 4)),
    Column("currency", String(3)),
    Column("payload", JSONB, nullable=False),
    Column("payload_hash", LargeBinary, nullable=False),
    Column("door", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("correlation_id", Text),
)

outbox = Table(
    "outbox",
    metadata,
    _tenant(),
    Column("message_id", UUID(as_uuid=True), primary_key=True),
    Column("seq", BigInteger),
    Column("ordering_key", UUID(as_uuid=True), nullable=False),
    Column("message_type", Text, nullable=False),
    Column("envelope", JSONB, nullable=False),
    _time("created_at"),
    Column("attempts", Integer, nullable=False),
    _time("next_attempt_at"),
    Column("last_error", Text),
    _time("published_at"),
    _time("parked_at"),
)

inbox = Table(
    "inbox",
    metadata,
    _tenant(),
    Column("consumer", Text, primary_key=True),
    Column("message_id", Text, primary_key=True),
    _time("received_at"),
)

audit_records = Table(
    "audit_records",
    metadata,
    _tenant(),
    Column("seq", BigInteger, primary_key=True),
    Column("record_id", UUID(as_uuid=True), nullable=False),
    _time("recorded_at", nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("entity_type", Text, nullable=False),
    Column("entity_id", Text, nullable=False),
    Column("correlation_id", Text),
    Column("details", JSONB, nullable=False),
    Column("prev_hash", LargeBinary, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    Column("hash_scheme", SmallInteger, nullable=False),
)

audit_heads = Table(
    "audit_heads",
    metadata,
    _tenant(),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_hash", LargeBinary, nullable=False),
)

rulesets = Table(
    "rulesets",
    metadata,
    _tenant(),
    Column("version", Integer, primary_key=True),
    Column("document", JSONB, nullable=False),
    Column("document_hash", LargeBinary, nullable=False),
    Column("status", Text, nullable=False),
    _time("created_at"),
    Column("created_by", Text, nullable=False),
    _time("activated_at"),
    Column("activated_by", Text),
)

assessments = Table(
    "assessments",
    metadata,
    _tenant(),
    Column("assessment_id", UUID(as_uuid=True), primary_key=True),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("ruleset_version", Integer, nullable=False),
    Column("scorer", Text, nullable=False),
    Column("score", Integer, nullable=False),
    Column("band", Text, nullable=False),
    Column("alert", Boolean, nullable=False),
    # json, not jsonb: written once and read back whole, never searched (migration 0014).
    Column("explanation", JSON, nullable=False),
    Column("context", JSON, nullable=False),
    _time("scored_at", nullable=False),
)

cases = Table(
    "cases",
    metadata,
    _tenant(),
    Column("case_id", UUID(as_uuid=True), primary_key=True),
    Column("subject_id", UUID(as_uuid=True), nullable=False),
    Column("status", Text, nullable=False),
    Column("band", Text, nullable=False),
    Column("priority", Integer, nullable=False),
    _time("opened_at", nullable=False),
    _time("updated_at", nullable=False),
    _time("sla_due_at", nullable=False),
    Column("alert_count", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("queue", Text, nullable=False),
    Column("typologies", ARRAY(Text), nullable=False),
    Column("assignee", Text),
    Column("disposition", Text),
    Column("rationale", Text),
    Column("proposed_by", Text),
    _time("proposed_at"),
    Column("decision", Text),
    Column("decided_by", Text),
    Column("decided_roles", ARRAY(Text)),
    _time("decided_at"),
    Column("decision_reason", Text),
    _time("closed_at"),
    _time("sla_breached_at"),
)

case_policies = Table(
    "case_policies",
    metadata,
    _tenant(),
    Column("document", JSONB, nullable=False),
    Column("low_closes_alone", Boolean, nullable=False),
    _time("updated_at"),
    Column("updated_by", Text, nullable=False),
)

case_transitions = Table(
    "case_transitions",
    metadata,
    _tenant(),
    Column("case_id", UUID(as_uuid=True), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("action", Text, nullable=False),
    Column("from_status", Text, nullable=False),
    Column("to_status", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("actor_roles", ARRAY(Text), nullable=False),
    Column("details", JSONB, nullable=False),
    _time("taken_at"),
)

case_comments = Table(
    "case_comments",
    metadata,
    _tenant(),
    Column("comment_id", UUID(as_uuid=True), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("case_id", UUID(as_uuid=True), nullable=False),
    Column("body", Text, nullable=False),
    Column("author", Text, nullable=False),
    _time("written_at"),
)

case_evidence = Table(
    "case_evidence",
    metadata,
    _tenant(),
    Column("evidence_id", UUID(as_uuid=True), primary_key=True),
    Column("case_id", UUID(as_uuid=True), nullable=False),
    Column("kind", Text, nullable=False),
    Column("reference", Text, nullable=False),
    Column("sha256", LargeBinary, nullable=False),
    Column("description", Text, nullable=False),
    Column("added_by", Text, nullable=False),
    _time("added_at"),
)

case_mutations = Table(
    "case_mutations",
    metadata,
    _tenant(),
    Column("actor", Text, primary_key=True),
    Column("client_mutation_id", Text, primary_key=True),
    Column("mutation", Text, nullable=False),
    Column("case_id", UUID(as_uuid=True), nullable=False),
    Column("answer", JSONB, nullable=False),
    _time("created_at"),
)

alerts = Table(
    "alerts",
    metadata,
    _tenant(),
    Column("alert_id", UUID(as_uuid=True), primary_key=True),
    Column("assessment_id", UUID(as_uuid=True), nullable=False),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("subject_id", UUID(as_uuid=True), nullable=False),
    Column("case_id", UUID(as_uuid=True), nullable=False),
    Column("score", Integer, nullable=False),
    Column("band", Text, nullable=False),
    Column("typologies", ARRAY(Text), nullable=False),
    _time("created_at", nullable=False),
)

scoring_failures = Table(
    "scoring_failures",
    metadata,
    _tenant(),
    Column("event_id", UUID(as_uuid=True), primary_key=True),
    Column("attempts", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    _time("failed_at"),
)
