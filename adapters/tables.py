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
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

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
    Column("explanation", JSONB, nullable=False),
    Column("context", JSONB, nullable=False),
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
