"""The Litestar application: GraphQL at ``/graphql``, health probes and metrics.

``create_app`` wires everything from settings alone, so that tests build the same
application the ``vigil portal`` process serves.
"""

from __future__ import annotations

import logging
import signal
import warnings
from collections.abc import Callable
from functools import partial
from types import FrameType
from typing import NoReturn

import uvicorn
from graphql import ASTValidationRule
from litestar import Controller, Litestar
from litestar.exceptions import LitestarDeprecationWarning
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaxTokensLimiter,
    ValidationCache,
)
from strawberry.extensions.base_extension import SchemaExtension
from strawberry.extensions.max_aliases import create_validator as alias_limit
from strawberry.extensions.query_depth_limiter import create_validator as depth_limit
from strawberry.litestar import make_graphql_controller

from adapters.settings import Settings, get_settings
from portal.auth import RequireAuthentication
from portal.cost import ConnectionBudget
from portal.errors import ErrorPolicy, Schema, internal_error
from portal.health import live, ready
from portal.metrics import metrics, start_ingest_counters
from portal.read.reader import CloseReads
from portal.requests import GRAPHQL_PATH, RequestContextMiddleware
from portal.resources import lifespan
from portal.schema import DOOR, Mutation, Query, context_of

log = logging.getLogger(__name__)

MAX_QUERY_DEPTH = 10
MAX_ALIASES = 20
# A document is lexed only up to this many tokens, so a huge one costs little; our own
# mutation with a batch in variables takes well under a hundred.
MAX_TOKENS = 2000
# The limits' rules are made once: rules made per request would never hit the
# validation cache, whose key includes them.
LIMIT_RULES: list[type[ASTValidationRule]] = [
    depth_limit(MAX_QUERY_DEPTH, None),
    alias_limit(MAX_ALIASES),
]
SHUTDOWN_GRACE_SECONDS = 15
MIN_SECRET_BYTES = 32


class InsecureSettings(Exception):
    """Settings that must never reach production."""


def check_settings(settings: Settings) -> None:
    if not settings.production:
        return
    for name in ("jwt_issuer", "jwt_audience"):
        if name not in settings.model_fields_set or not getattr(settings, name).strip():
            raise InsecureSettings(
                f"set VIGIL_{name.upper()}: tokens must name who made them for whom"
            )
    if settings.jwt_algorithm == "RS256":
        if not (settings.jwks_url or "").startswith("https://"):
            raise InsecureSettings("set VIGIL_JWKS_URL to the identity provider's https:// key set")
        return
    secret = settings.jwt_secret.get_secret_value()
    default = Settings.model_fields["jwt_secret"].get_default()
    if secret == default.get_secret_value():
        raise InsecureSettings("set VIGIL_JWT_SECRET: the default secret is public")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise InsecureSettings(f"VIGIL_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")


def build_schema(settings: Settings) -> Schema:
    extensions: list[Callable[[], SchemaExtension]] = [
        ErrorPolicy,
        # After the error policy, so that a failure to close the reads is given a code.
        CloseReads,
        partial(MaxTokensLimiter, max_token_count=MAX_TOKENS),
        partial(AddValidationRules, LIMIT_RULES),
        # Integrations send the same few documents again and again: validate each once.
        # The cache is bounded, so odd documents cannot grow it. (strawberry's parser
        # cache is left out: a syntax error raised inside it skips the other extensions'
        # exits, and with them the error policy that gives every error its code.)
        partial(ValidationCache, maxsize=256),
        # Runs once the document is valid, before any resolver: nested pages multiply.
        ConnectionBudget,
        # Last, so that its refusal replaces whatever the validation cache found: a
        # stranger never sees a validation message that would describe the schema.
        RequireAuthentication,
    ]
    if settings.production:
        extensions.append(DisableIntrospection)
    return Schema(query=Query, mutation=Mutation, extensions=extensions)


def create_app(settings: Settings) -> Litestar:
    check_settings(settings)
    start_ingest_counters(DOOR)
    graphql = make_graphql_controller(
        build_schema(settings),
        path=GRAPHQL_PATH,
        graphql_ide="graphiql" if settings.environment == "development" else None,
        # GET would let a link or an image tag run an operation with the caller's rights.
        allow_queries_via_get=False,
        context_getter=context_of,
        # No subscriptions yet: a WebSocket handshake is closed as "not acceptable".
        subscription_protocols=(),
    )
    with warnings.catch_warnings():
        # TODO: drop once strawberry marks its controller's dependencies explicitly (it
        # must before Litestar 3.0, which stops inferring them); nothing of ours to change.
        warnings.filterwarnings(
            "ignore", r".*Inferred dependency field", category=LitestarDeprecationWarning
        )
        return _litestar(settings, graphql)


def _litestar(settings: Settings, graphql: type[Controller]) -> Litestar:
    return Litestar(
        route_handlers=[graphql, live, ready, metrics],
        lifespan=[lifespan(settings)],
        middleware=[RequestContextMiddleware(settings)],
        request_max_body_size=settings.max_body_bytes,
        exception_handlers={HTTP_500_INTERNAL_SERVER_ERROR: internal_error},
        # Logging is configured once per process (adapters.logging), not by Litestar.
        logging_config=None,
        openapi_config=None,
    )


def _stopped(signum: int, frame: FrameType | None) -> NoReturn:
    # uvicorn drains the requests in flight on SIGTERM or SIGINT, then raises the signal
    # again under the handler it found: a stop that was asked for ends with status 0.
    raise SystemExit(0)


def run(host: str | None = None, port: int | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then finish the requests in flight and stop."""
    settings = get_settings()
    try:
        app = create_app(settings)
    except InsecureSettings as error:
        log.critical("refusing to start", extra={"reason": str(error)})
        raise SystemExit(f"vigil portal: {error}") from error

    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host or settings.portal_host,
            port=port or settings.portal_port,
            lifespan="on",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        )
    )
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, _stopped)
    server.run()
    if not server.started:
        raise SystemExit("vigil portal: the server did not start")
