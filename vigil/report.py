"""What a replay did, read back from the database: rates, latency, what scoring found,
and how well it found the labelled launderers.

Every figure is counted from the tenant's rows, not from what the sender believes it
sent, so the report cannot claim an event was assessed that was not. Times are the
database's: an event's ``received_at`` (its ingest transaction) and its assessment's
``scored_at``; the end-to-end rate spans the first event received to the last assessed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.quality import AccountQuality

COUNTS = text(
    "SELECT (SELECT count(*) FROM events WHERE tenant_id = :t) AS events,"
    " (SELECT count(*) FROM assessments WHERE tenant_id = :t) AS assessments,"
    " (SELECT count(DISTINCT event_id) FROM assessments WHERE tenant_id = :t) AS assessed,"
    " (SELECT count(*) FROM scoring_failures WHERE tenant_id = :t) AS failed,"
    " (SELECT count(*) FROM outbox WHERE tenant_id = :t AND published_at IS NULL) AS pending"
)
# What the demo's progress bar shows while it runs, as cheap as it can be: plain counts
# (no DISTINCT, which sorts), and events only while they still arrive. At the end of a
# full replay these scans still take a tenth of a second or more, which is why the
# monitor spaces its polls by their cost.
PROGRESS = text(
    "SELECT (SELECT count(*) FROM assessments WHERE tenant_id = :t) AS assessed,"
    " (SELECT count(*) FROM scoring_failures WHERE tenant_id = :t) AS failed"
)
STORED = text("SELECT count(*) FROM events WHERE tenant_id = :t")
TIMING = text(
    "SELECT min(e.received_at) AS first_received, max(e.received_at) AS last_received,"
    " max(a.scored_at) AS last_scored,"
    " percentile_cont(0.5) WITHIN GROUP (ORDER BY a.scored_at - e.received_at) AS p50,"
    " percentile_cont(0.99) WITHIN GROUP (ORDER BY a.scored_at - e.received_at) AS p99,"
    " max(a.scored_at - e.received_at) AS worst"
    " FROM events e JOIN assessments a USING (tenant_id, event_id) WHERE e.tenant_id = :t"
)
BY_BAND = {
    "assessments": text(
        "SELECT band AS key, count(*) AS n FROM assessments WHERE tenant_id = :t GROUP BY band"
    ),
    "alerts": text(
        "SELECT band AS key, count(*) AS n FROM alerts WHERE tenant_id = :t GROUP BY band"
    ),
    "cases": text(
        "SELECT band AS key, count(*) AS n FROM cases WHERE tenant_id = :t GROUP BY band"
    ),
}
BY_TYPOLOGY = {
    "alerts": text(
        "SELECT typology AS key, count(*) AS n FROM alerts, unnest(typologies) AS typology"
        " WHERE tenant_id = :t GROUP BY typology"
    ),
    "cases": text(
        "SELECT typology AS key, count(DISTINCT case_id) AS n"
        " FROM alerts, unnest(typologies) AS typology WHERE tenant_id = :t GROUP BY typology"
    ),
}
FLAGGED = text(
    "SELECT DISTINCT s.external_ref FROM alerts a"
    " JOIN subjects s ON s.tenant_id = a.tenant_id AND s.subject_id = a.subject_id"
    " WHERE a.tenant_id = :t"
)
TOP_CASE = text(
    "SELECT case_id FROM cases WHERE tenant_id = :t"
    " ORDER BY priority DESC, alert_count DESC, opened_at, case_id LIMIT 1"
)
BAND_ORDER = ("low", "medium", "high", "critical")


@dataclass(frozen=True, slots=True)
class Memory:
    """A process's resident memory in MiB: its peak, after the first 10,000 transfers
    (None when the replay was shorter), and at the end."""

    peak: float
    early: float | None
    end: float

    @property
    def growth(self) -> float | None:
        return None if not self.early else (self.end - self.early) / self.early


@dataclass(slots=True)
class Report:
    sent: int
    refused: int
    duplicates: int
    events: int
    assessments: int
    assessed: int
    failed: int
    pending_messages: int
    wall_seconds: float
    ingest_seconds: float
    end_to_end_seconds: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    by_band: dict[str, dict[str, int]] = field(default_factory=dict)
    by_typology: dict[str, dict[str, int]] = field(default_factory=dict)
    flagged: set[str] = field(default_factory=set)
    top_case_id: uuid.UUID | None = None
    quality: AccountQuality | None = None
    floor: AccountQuality | None = None
    readme_floor: str = ""
    memory: dict[str, Memory] = field(default_factory=dict)
    top_case: list[str] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.events / self.end_to_end_seconds if self.end_to_end_seconds else 0.0

    @property
    def exactly_once(self) -> bool:
        return self.assessments == self.assessed == self.events and self.failed == 0

    def as_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["flagged"] = sorted(self.flagged)
        document["top_case_id"] = str(self.top_case_id) if self.top_case_id else None
        document["events_per_second"] = self.events_per_second
        document["exactly_once"] = self.exactly_once
        for name in ("quality", "floor"):
            quality = getattr(self, name)
            if quality is not None:
                document[name].update(
                    precision=quality.precision, recall=quality.recall, f1=quality.f1
                )
        return document

    def lines(self) -> list[str]:
        out = [
            f"transfers sent: {self.sent:,} ({self.refused:,} refused at the door,"
            f" {self.duplicates:,} sent twice and answered as duplicates)",
            f"events stored: {self.events:,}; assessed: {self.assessed:,} in"
            f" {self.assessments:,} assessments; failed: {self.failed:,}"
            f" ({'each assessed exactly once' if self.exactly_once else 'NOT each exactly once'})",
            f"end to end: {self.events_per_second:,.0f} events/s ({self.events:,} events from"
            f" the first received to the last assessed in {self.end_to_end_seconds:.1f} s;"
            f" ingest alone {self.ingest_seconds:.1f} s; wall clock {self.wall_seconds:.1f} s)",
            f"ingest to assessment: p50 {self.latency_p50_ms:,.0f} ms,"
            f" p99 {self.latency_p99_ms:,.0f} ms, max {self.latency_max_ms:,.0f} ms",
        ]
        for kind in ("assessments", "alerts", "cases"):
            out.append(f"{kind} by band: {_counts(self.by_band.get(kind, {}), BAND_ORDER)}")
        for kind in ("alerts", "cases"):
            out.append(f"{kind} by typology: {_counts(self.by_typology.get(kind, {}))}")
        if self.quality is not None and self.floor is not None:
            out.append(f"detection per account: {self.quality.summary()}")
            out.append(
                f"naive floor (9+ distinct payees or payers): {self.floor.summary()};"
                f" the data's README gives {self.readme_floor}"
            )
        if self.memory:
            out.append("peak resident memory (MiB; after 10,000 transfers -> at the end):")
            for name, memory in self.memory.items():
                early = f"{memory.early:.0f}" if memory.early is not None else "-"
                growth = f" ({memory.growth:+.0%})" if memory.growth is not None else ""
                out.append(
                    f"  {name:<12} peak {memory.peak:6.0f}   {early} -> {memory.end:.0f}{growth}"
                )
        if self.pending_messages:
            out.append(f"messages still to relay: {self.pending_messages:,}")
        out.extend(self.top_case)
        return out


def _counts(counts: Mapping[str, int], order: Sequence[str] = ()) -> str:
    keys = [k for k in order if k in counts] + sorted(
        (k for k in counts if k not in order), key=lambda k: (-counts[k], k)
    )
    return ", ".join(f"{key} {counts[key]:,}" for key in keys) or "none"


async def read_report(connection: AsyncConnection, tenant_id: uuid.UUID, **known: Any) -> Report:
    """The figures of the tenant's rows; ``known`` fills what only the sender knows."""
    params = {"t": tenant_id}
    counts = (await connection.execute(COUNTS, params)).one()
    timing = (await connection.execute(TIMING, params)).one()
    report = Report(
        events=counts.events,
        assessments=counts.assessments,
        assessed=counts.assessed,
        failed=counts.failed,
        pending_messages=counts.pending,
        ingest_seconds=_seconds(timing.first_received, timing.last_received),
        end_to_end_seconds=_seconds(timing.first_received, timing.last_scored),
        latency_p50_ms=_ms(timing.p50),
        latency_p99_ms=_ms(timing.p99),
        latency_max_ms=_ms(timing.worst),
        **known,
    )
    for kind, statement in BY_BAND.items():
        rows = (await connection.execute(statement, params)).all()
        report.by_band[kind] = {row.key: row.n for row in rows}
    for kind, statement in BY_TYPOLOGY.items():
        rows = (await connection.execute(statement, params)).all()
        report.by_typology[kind] = {row.key: row.n for row in rows}
    report.flagged = set((await connection.execute(FLAGGED, params)).scalars())
    report.top_case_id = (await connection.execute(TOP_CASE, params)).scalar_one_or_none()
    return report


def _seconds(start: Any, end: Any) -> float:
    return (end - start).total_seconds() if start is not None and end is not None else 0.0


def _ms(interval: Any) -> float:
    return interval.total_seconds() * 1000 if interval is not None else 0.0
