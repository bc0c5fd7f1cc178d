"""The Litestar application: GraphQL at ``/graphql``, health probes and metrics.

``create_app`` wires everything from settings alone, so that tests build the same
application the ``vigil portal`` process serves.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from types import FrameType
from typing import Any, NoReturn

import uvicorn
from graphql import ASTValidationRule
from litestar import Controller, Litestar, Response
from litestar.background_tasks import BackgroundTasks
from litestar.di import Provide
from litestar.exceptions import LitestarDeprecationWarning
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from strawberry.exceptions import ConnectionRejectionError
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
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UNSET, UnsetType
from uvicorn.supervisors import Multiprocess

from adapters.logging import configure_logging
from adapters.metrics import MULTIPROCESS_DIRECTORY
from adapters.runtime import settle_garbage_collector
from adapters.settings import Settings, get_settings
from portal.auth import RequireAuthentication, authenticate_connection
from portal.bodies import NOT_DECODED, decoded, refusal
from portal.cost import ConnectionBudget
from portal.errors import ErrorPolicy, Schema, internal_error
from portal.health import live, ready
from portal.metrics import metrics, start_ingest_counters
from portal.parse_cache import ParsedDocuments, ParseOnce
from portal.read.reader import CloseReads
from portal.requests import GRAPHQL_PATH, RequestContextMiddleware
from portal.resources import lifespan, resources_of
from portal.review_queue import Subscription
from portal.schema import DOOR, Context, Mutation, Query, context_of

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
# A WebSocket client sends small frames (connection_init, a subscription document);
# uvicorn would accept 16 MiB.
MAX_WEBSOCKET_FRAME_BYTES = 64 * 1024
MAX_SUBSCRIPTIONS_PER_CONNECTION = 10
CONNECTION_INIT_WAIT = timedelta(seconds=10)
ORPHAN_CHECK_SECONDS = 1.0
_SUPERVISOR = "VIGIL_PORTAL_SUPERVISOR_PID"
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
        # Parses nothing itself, so a syntax error still passes through the others.
        partial(ParseOnce, documents=ParsedDocuments()),
        partial(AddValidationRules, LIMIT_RULES),
        # Integrations send the same few documents again and again: validate each once.
        # The cache is bounded, so odd documents cannot grow it. (strawberry's parser
        # cache is left out: a syntax error raised inside it skips the other extensions'
        # exits, and with them the error policy that gives every error its code;
        # ParseOnce, above, keeps documents without parsing them.)
        partial(ValidationCache, maxsize=256),
        # Runs once the document is valid, before any resolver: nested pages multiply.
        ConnectionBudget,
        # Last, so that its refusal replaces whatever the validation cache found: a
        # stranger never sees a validation message that would describe the schema.
        RequireAuthentication,
    ]
    if settings.production:
        extensions.append(DisableIntrospection)
    return Schema(query=Query, mutation=Mutation, subscription=Subscription, extensions=extensions)


def create_app(settings: Settings) -> Litestar:
    check_settings(settings)
    start_ingest_counters(DOOR)
    base = make_graphql_controller(
        build_schema(settings),
        path=GRAPHQL_PATH,
        graphql_ide="graphiql" if settings.environment == "development" else None,
        # GET would let a link or an image tag run an operation with the caller's rights.
        allow_queries_via_get=False,
        context_getter=context_of,
        # Subscriptions over graphql-transport-ws only: no legacy graphql-ws, and no
        # multipart or SSE streams over HTTP.
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        connection_init_wait_timeout=CONNECTION_INIT_WAIT,
        max_subscriptions_per_connection=MAX_SUBSCRIPTIONS_PER_CONNECTION,
    )

    class GraphQLController(base):  # type: ignore[valid-type,misc]
        # strawberry makes each request's sub-response in a worker thread (a sync
        # dependency run with sync_to_thread): a thread hop per request for building an
        # empty object. The same object, made on the event loop.
        dependencies = {**base.dependencies, "response": Provide(_sub_response)}

        async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
            """Verify the token of ``connection_init``; without a valid one the
            connection is closed with 4403 before any operation runs."""
            socket = context.websocket
            if socket is None:
                raise ConnectionRejectionError()
            identity = authenticate_connection(
                resources_of(socket.app.state).settings, context.connection_params
            )
            if identity.principal is None:
                raise ConnectionRejectionError()
            context.identity = identity
            acknowledged: UnsetType = UNSET
            return acknowledged

        def decode_json(self, data: str | bytes) -> object:
            """WebSocket frames (text) are held to the bounds of HTTP bodies, which
            arrive as bytes and were checked by the middleware already; a frame
            refused here closes the connection with 4400."""
            if isinstance(data, str):
                reason = refusal(data.encode())
                if reason is not None:
                    raise json.JSONDecodeError(reason, data, 0)
            else:
                # The middleware decoded this body already, with its bounds.
                value = decoded(data)
                if value is not NOT_DECODED:
                    return value
            return super().decode_json(data)

    with warnings.catch_warnings():
        # TODO: drop once strawberry marks its controller's dependencies explicitly (it
        # must before Litestar 3.0, which stops inferring them); nothing of ours to change.
        warnings.filterwarnings(
            "ignore", r".*Inferred dependency field", category=LitestarDeprecationWarning
        )
        return _litestar(settings, GraphQLController)


async def _sub_response() -> Response[Any]:
    """The response strawberry sets headers, cookies and status on for one request."""
    return Response({}, background=BackgroundTasks([]))


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


def run(host: str | None = None, port: int | None = None, workers: int | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then finish the requests in flight and stop.

    With more than one worker (``--workers`` or ``VIGIL_PORTAL_WORKERS``), uvicorn's
    supervisor binds the socket once and runs that many worker processes on it; on
    SIGTERM or SIGINT it passes SIGTERM to each, each drains its requests in flight as a
    single process does, and the supervisor exits once they all have. A worker that dies
    is replaced. Metrics then come from every worker (see :mod:`portal.metrics`).
    """
    settings = get_settings()
    count = workers or settings.portal_workers
    if count < 1:
        raise SystemExit("vigil portal: --workers must be at least 1")
    try:
        check_settings(settings)
    except InsecureSettings as error:
        log.critical("refusing to start", extra={"reason": str(error)})
        raise SystemExit(f"vigil portal: {error}") from error

    config = partial(
        uvicorn.Config,
        host=host or settings.portal_host,
        port=port or settings.portal_port,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        ws_max_size=MAX_WEBSOCKET_FRAME_BYTES,
    )
    if count > 1:
        _run_workers(
            config(f"{__name__}:worker_app", factory=True, workers=count),
            host or settings.portal_host,
            port or settings.portal_port,
        )
        return

    server = uvicorn.Server(config(settled(create_app(settings))))
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, _stopped)
    server.run()
    if not server.started:
        raise SystemExit("vigil portal: the server did not start")


def worker_app() -> Litestar:
    """The application of one worker process (started by uvicorn's supervisor, which
    imports it by name in a fresh interpreter)."""
    settings = get_settings()
    configure_logging(settings.log_level)
    # The supervisor's pid comes from the supervisor itself: had it died before this
    # line, the parent now would be whichever process adopted this one.
    _stop_when_orphaned(int(os.environ.get(_SUPERVISOR, os.getppid())))
    return settled(create_app(settings))


def settled(app: Litestar) -> Litestar:
    """``app``, with everything the process holds at this point (modules, the schema,
    the application) set aside from the cyclic garbage collector, and the youngest
    objects collected less often.

    See :mod:`adapters.runtime` for why.
    """
    settle_garbage_collector()
    return app


def _stop_when_orphaned(supervisor: int) -> None:
    """Stop (gracefully, as on SIGTERM) if the supervisor dies without stopping this
    worker, say killed with SIGKILL: a worker left behind would go on serving the port."""

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(ORPHAN_CHECK_SECONDS)
        log.warning("portal supervisor gone; stopping", extra={"supervisor": supervisor})
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


class _ListenerPerWorker(socket.socket):
    """The supervisor's socket: bound with SO_REUSEPORT, so that the address is taken
    (and checked) once, but never listening. Handed to a worker, it becomes a socket of
    the worker's own on the same address (see :func:`_own_listener`).

    One listening socket shared by every worker lets whichever worker wakes first
    accept every connection waiting (uvloop accepts until none is left), so a burst of
    keep-alive connections, a client's pool or a load balancer's, could all land on one
    worker and leave the other cores idle for as long as they lived. With a listening
    socket per worker, the kernel spreads new connections over the workers.
    """

    def __reduce__(self) -> tuple[object, tuple[int, tuple[Any, ...]]]:
        return _own_listener, (int(self.family), self.getsockname())


def _own_listener(family: int, address: tuple[Any, ...]) -> socket.socket:
    """A worker's listening socket on the supervisor's address, in the same
    SO_REUSEPORT group (the same user may join it, no other)."""
    own = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    own.bind(address)
    return own


def _bind_supervisor_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    bound = _ListenerPerWorker(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        bound.bind((host, port))
    except OSError as error:
        bound.close()
        raise SystemExit(f"vigil portal: cannot bind {host}:{port}: {error}") from error
    return bound


def _run_workers(config: uvicorn.Config, host: str, port: int) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="vigil-portal-metrics-") as directory,
        _bind_supervisor_socket(host, port) as bound,
    ):
        # Inherited by the workers, which then keep their metrics in files there.
        os.environ[MULTIPROCESS_DIRECTORY] = directory
        os.environ[_SUPERVISOR] = str(os.getpid())
        log.info("portal supervisor started", extra={"workers": config.workers})
        Multiprocess(config, sockets=[bound]).run()
        log.info("portal supervisor stopped")
