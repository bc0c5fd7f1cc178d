"""The audit trail: append-only records, hash-chained per tenant.

Each record's hash covers its own canonical encoding and the previous record's hash, so
changing, removing or reordering any record breaks every hash after it. The first record
of a tenant links to :data:`GENESIS`.

Two hash schemes exist, and a chain may hold records of both; each record says which
one sealed it. Scheme 1 hashes :func:`~domain.canonical.canonical_bytes` of the body
(records sealed in Python). Scheme 2 hashes the body, with ``hashScheme`` added, in
PostgreSQL's jsonb text form (:func:`~domain.canonical.jsonb_text`), which the database
computes itself when it seals a transaction's records in one statement.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain.canonical import canonical_bytes, format_time, jsonb_text
from domain.errors import AuditChainBroken

GENESIS = bytes(32)
SCHEMES = (1, 2)
CURRENT_SCHEME = 2


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What happened, before it is placed in the chain."""

    record_id: uuid.UUID
    actor: str
    action: str
    entity_type: str
    entity_id: str
    correlation_id: str | None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    tenant_id: uuid.UUID
    seq: int
    recorded_at: datetime
    entry: AuditEntry
    prev_hash: bytes
    hash: bytes
    scheme: int = 1


def record_body(
    tenant_id: uuid.UUID, seq: int, recorded_at: datetime, entry: AuditEntry, scheme: int = 1
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tenantId": tenant_id,
        "seq": seq,
        "recordId": entry.record_id,
        "recordedAt": recorded_at,
        "actor": entry.actor,
        "action": entry.action,
        "entityType": entry.entity_type,
        "entityId": entry.entity_id,
        "correlationId": entry.correlation_id,
        "details": dict(entry.details),
    }
    if scheme != 1:
        body["hashScheme"] = scheme
        body["recordedAt"] = format_time(recorded_at)
    return body


def chain_hash(prev_hash: bytes, body: Mapping[str, Any], scheme: int = 1) -> bytes:
    if scheme == 1:
        encoded = canonical_bytes(body)
    elif scheme == 2:
        encoded = jsonb_text(body).encode("utf-8")
    else:
        raise ValueError(f"unknown audit hash scheme {scheme}")
    return hashlib.sha256(prev_hash + encoded).digest()


def seal(
    tenant_id: uuid.UUID,
    entries: Iterable[AuditEntry],
    *,
    last_seq: int,
    last_hash: bytes,
    recorded_at: datetime,
    scheme: int = CURRENT_SCHEME,
) -> list[AuditRecord]:
    """Place entries in the chain after the record ``last_seq`` whose hash is ``last_hash``.

    The database seals the records it stores (``vigil_append_audit``); this is the same
    sealing for stores kept in memory, and the reference the database is tested against.
    """
    records = []
    seq, prev = last_seq, last_hash
    for entry in entries:
        seq += 1
        body = record_body(tenant_id, seq, recorded_at, entry, scheme)
        digest = chain_hash(prev, body, scheme)
        records.append(AuditRecord(tenant_id, seq, recorded_at, entry, prev, digest, scheme))
        prev = digest
    return records


def verify_chain(
    records: Iterable[AuditRecord], *, after_seq: int = 0, after_hash: bytes = GENESIS
) -> int:
    """Check records given in sequence order; return how many verified.

    Raises :class:`AuditChainBroken` at the first gap, broken link or wrong hash.
    """
    expected_seq, prev = after_seq + 1, after_hash
    count = 0
    for record in records:
        if record.seq != expected_seq:
            raise AuditChainBroken(expected_seq, f"missing; found {record.seq} instead")
        if record.prev_hash != prev:
            raise AuditChainBroken(record.seq, "does not link to the record before it")
        if record.scheme not in SCHEMES:
            raise AuditChainBroken(record.seq, f"names an unknown hash scheme {record.scheme}")
        body = record_body(
            record.tenant_id, record.seq, record.recorded_at, record.entry, record.scheme
        )
        if chain_hash(prev, body, record.scheme) != record.hash:
            raise AuditChainBroken(record.seq, "its content does not match its hash")
        prev = record.hash
        expected_seq += 1
        count += 1
    return count
