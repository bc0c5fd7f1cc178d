"""Settings, read from ``VIGIL_`` environment variables; the defaults fit a machine that
runs PostgreSQL, Redis and RabbitMQ on their standard local ports."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIGIL_", extra="ignore")

    environment: str = Field("development", pattern="^(development|test|production)$")

    # Each process connects as the least-privileged role that does its job.
    database_url: str = "postgresql://vigil_app@127.0.0.1:5432/vigil"
    relay_database_url: str = "postgresql://vigil_relay@127.0.0.1:5432/vigil"
    owner_database_url: str = "postgresql://vigil_owner@127.0.0.1:5432/vigil"
    database_pool_size: int = Field(10, ge=1, le=200)
    # How long a request waits for a pooled connection before it is answered UNAVAILABLE.
    database_pool_timeout_seconds: float = Field(10.0, gt=0, le=300)

    redis_url: str = "redis://127.0.0.1:6379/0"
    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    # Every exchange and queue name starts with this, so that tests and tenants of a
    # shared broker can keep to their own.
    amqp_prefix: str = Field("vigil", pattern="^[a-z][a-z0-9_.-]{0,40}$")

    # HS256 with a shared secret for local use; RS256 with keys from a JWKS URL (the
    # identity provider's) in production.
    jwt_algorithm: str = Field("HS256", pattern="^(HS256|RS256)$")
    jwks_url: str | None = None
    jwks_cache_seconds: float = Field(300.0, gt=0, le=86400)
    # A token naming a key we do not hold makes us fetch the key set again, at most
    # this often, so that forged key ids cannot make us hammer the identity provider.
    jwks_min_refresh_seconds: float = Field(30.0, ge=0, le=3600)
    jwks_timeout_seconds: float = Field(5.0, gt=0, le=60)
    jwt_secret: SecretStr = SecretStr("change-me-local-development-only-secret")
    jwt_issuer: str = "vigil"
    jwt_audience: str = "vigil-api"
    jwt_leeway_seconds: int = Field(30, ge=0, le=300)
    # A token that lives longer is refused, however it was signed.
    jwt_max_lifetime_hours: float = Field(24.0, gt=0, le=24 * 31)

    portal_host: str = "127.0.0.1"
    portal_port: int = Field(8000, ge=1, le=65535)
    # Worker processes serving the portal's socket; each has its own database pool.
    portal_workers: int = Field(1, ge=1, le=32)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    # GraphQL requests per tenant per window, shared by all replicas (in Redis); 0 turns
    # the limit off.
    rate_limit_requests: int = Field(1200, ge=0)
    rate_limit_window_seconds: float = Field(60.0, gt=0, le=3600)
    # Live review queues: each subscriber holds at most live_buffer_size changes (past
    # that it is sent a resync); a reconnecting one is sent at most live_catch_up_limit
    # missed changes; every live_poll_seconds the portal looks for changes whose
    # message it may have missed (a broker outage drops its queue).
    live_buffer_size: int = Field(256, ge=1, le=10_000)
    live_catch_up_limit: int = Field(1000, ge=1, le=10_000)
    live_poll_seconds: float = Field(10.0, gt=0, le=3600)
    # Subscriptions one portal process serves at most; past it a new one is answered
    # UNAVAILABLE (run another replica).
    live_max_subscribers: int = Field(5000, ge=1, le=1_000_000)

    relay_batch_size: int = Field(200, ge=1, le=5000)
    relay_concurrency: int = Field(2, ge=1, le=16)
    relay_poll_seconds: float = Field(1.0, gt=0, le=60)
    # How long a claim loop woken by a commit waits for the commits that follow.
    relay_linger_seconds: float = Field(0.02, ge=0, le=1)
    relay_publish_timeout_seconds: float = Field(5.0, gt=0, le=120)
    relay_max_attempts: int = Field(10, ge=1, le=1000)
    relay_retention_hours: float = Field(24.0, gt=0)
    relay_metrics_port: int = Field(9101, ge=0, le=65535)

    inbound_prefetch: int = Field(100, ge=1, le=10000)
    inbound_metrics_port: int = Field(9102, ge=0, le=65535)

    # Scoring: the dispatcher feeds the arq queue, workers score, the reconciler re-drives.
    # The queue's name defaults to one derived from amqp_prefix, so a test run that has
    # its own prefix has its own queue too.
    arq_queue: str | None = Field(None, pattern="^[A-Za-z0-9_.:-]{1,100}$")
    dispatch_prefetch: int = Field(500, ge=1, le=10000)
    # Messages of one tenant that reach the dispatcher together become one score job of
    # up to this many events; the first waits this long for the rest.
    dispatch_batch_size: int = Field(100, ge=1, le=500)
    dispatch_batch_linger_seconds: float = Field(0.01, ge=0, le=1)
    # While this many of a tenant's batches run, its next one gathers past the linger
    # (until one ends, or it is full): batches grow with the load.
    dispatch_tenant_batches: int = Field(2, ge=1, le=100)
    dispatch_metrics_port: int = Field(9103, ge=0, le=65535)
    worker_concurrency: int = Field(20, ge=1, le=500)
    # Jobs of one tenant running at once in a worker are scored together, up to this
    # many in one transaction (1 scores each job alone).
    worker_batch_size: int = Field(16, ge=1, le=500)
    worker_batch_linger_seconds: float = Field(0.005, ge=0, le=1)
    worker_job_timeout_seconds: float = Field(60.0, gt=0, le=3600)
    worker_max_tries: int = Field(5, ge=1, le=100)
    worker_retry_seconds: float = Field(1.0, gt=0, le=600)
    worker_stop_grace_seconds: int = Field(20, ge=0, le=600)
    worker_metrics_port: int = Field(9104, ge=0, le=65535)
    # An accepted event still unassessed after the deadline is enqueued again; 0 turns
    # the dispatcher's periodic pass off (`vigil reconcile` still runs one pass).
    reconcile_deadline_seconds: float = Field(300.0, ge=0)
    reconcile_interval_seconds: float = Field(60.0, ge=0)
    reconcile_lookback_hours: float = Field(72.0, gt=0)
    reconcile_batch_size: int = Field(5000, ge=1, le=100_000)
    # The dispatcher flags cases past their SLA every interval; 0 turns it off (`vigil
    # sla` still runs one pass).
    sla_sweep_interval_seconds: float = Field(30.0, ge=0)
    sla_sweep_batch_size: int = Field(500, ge=1, le=10_000)
    # Background processes serve /metrics here; in a container, bind 0.0.0.0.
    metrics_host: str = "127.0.0.1"

    log_level: str = "INFO"

    @property
    def production(self) -> bool:
        return self.environment == "production"

    @property
    def score_queue(self) -> str:
        """The arq queue (a Redis sorted set) of score jobs."""
        return self.arq_queue or f"{self.amqp_prefix}.score"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
