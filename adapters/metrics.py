"""Prometheus metrics. Every process registers in the default registry; the portal
serves them at ``/metrics`` and the background processes on their own port.

A portal with several worker processes runs prometheus_client's multiprocess mode: the
supervisor names a fresh directory in :data:`MULTIPROCESS_DIRECTORY` before it starts
the workers, each worker writes its samples to files there, and ``/metrics`` (whichever
worker answers) adds up every worker's counters and histograms. The outbox gauges are
read from the database by the worker that answers, so the most recent value is shown.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

# prometheus_client's own setting: set, it keeps samples in files in that directory.
MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"

EVENTS_INGESTED = Counter(
    "vigil_events_ingested_total",
    "Events answered at a door in, by door and outcome.",
    ["door", "outcome"],
)
OUTBOX_PENDING = Gauge(
    "vigil_outbox_pending",
    "Outbox messages waiting to be published.",
    multiprocess_mode="mostrecent",
)
OUTBOX_PARKED = Gauge(
    "vigil_outbox_parked",
    "Outbox messages parked after too many failures.",
    multiprocess_mode="mostrecent",
)
OUTBOX_OLDEST_AGE = Gauge(
    "vigil_outbox_oldest_pending_seconds",
    "Age of the oldest message waiting to be published.",
    multiprocess_mode="mostrecent",
)
RELAY_PUBLISHED = Counter(
    "vigil_relay_publish_total",
    "Outbox messages the relay tried to publish, by outcome.",
    ["outcome"],
)
RELAY_PUBLISH_SECONDS = Histogram(
    "vigil_relay_publish_seconds",
    "Time from the start of a publish to the broker's confirm.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
INBOUND_MESSAGES = Counter(
    "vigil_inbound_messages_total",
    "Messages taken from the inbound queue, by outcome.",
    ["outcome"],
)

DISPATCH_MESSAGES = Counter(
    "vigil_dispatch_messages_total",
    "Messages taken from the dispatch queue, by outcome.",
    ["outcome"],
)
SCORING_JOBS = Counter(
    "vigil_scoring_jobs_total",
    "Score jobs run, by outcome (assessed, already_assessed, retried, failed, ...).",
    ["outcome"],
)
SCORING_SECONDS = Histogram(
    "vigil_scoring_seconds",
    "Time to score one event, from the start of its job to its commit.",
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SCORING_WAIT_SECONDS = Histogram(
    "vigil_scoring_queue_wait_seconds",
    "Time a score job waited in the queue before a worker started it.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
SCORING_FAILURES = Counter(
    "vigil_scoring_failures_total",
    "Events marked as failed for good, by error code.",
    ["code"],
)
SCORING_REDRIVEN = Counter(
    "vigil_scoring_redriven_total",
    "Events enqueued again, by who asked (reconciler or operator).",
    ["by"],
)

CASE_SLA_BREACHES = Counter(
    "vigil_case_sla_breaches_total", "Cases flagged as past their SLA due time."
)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Expose the default registry over HTTP (port 0: do not serve)."""
    if port:
        start_http_server(port, addr=host)
