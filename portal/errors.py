"""The one place where failures become GraphQL error codes.

    PortalError                 refused at the edge; its message is safe to show
    ├── Unauthenticated         no bearer token, or one that does not verify
    ├── Forbidden               a valid token without the role the operation needs
    └── BadRequest              a request no retry can fix (a batch of the wrong size)

Domain errors that escape a resolver are mapped here too (an unknown tenant, a transient
failure). Anything else is a defect: it is logged with its traceback and the request's
context, and the client sees only ``internal error`` with the code ``INTERNAL``.
Parse, validation and variable errors carry no path and come from graphql-core's own
checks of the request; they keep their message under the code ``BAD_REQUEST``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import strawberry
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import GraphQLError
from litestar import MediaType, Request, Response
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from strawberry.exceptions import StrawberryInputCoercionError
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import DEFAULT_ALLOWED_OPERATION_TYPES, StreamResult
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.execution import StreamExecutionResult
from strawberry.types.graphql import OperationType

from domain.errors import TransientFailure, UnknownTenant

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error"


class PortalError(Exception):
    code = "INTERNAL"

    def __init__(self, message: str, **extensions: str) -> None:
        super().__init__(message)
        self.message = message
        self.extensions = extensions


class Unauthenticated(PortalError):
    code = "UNAUTHENTICATED"


class Forbidden(PortalError):
    code = "FORBIDDEN"


class BadRequest(PortalError):
    code = "BAD_REQUEST"


def _public(error: GraphQLError, code: str, message: str, extra: Mapping[str, str]) -> GraphQLError:
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions={"code": code, **extra},
    )


def public_error(error: GraphQLError) -> GraphQLError:
    """The error as the client may see it, with ``extensions.code`` always set."""
    original = error.original_error
    if original is None and error.extensions and "code" in error.extensions:
        return error  # made public already (the last item of a stream is seen twice)
    if isinstance(original, PortalError):
        return _public(error, original.code, original.message, original.extensions)
    if isinstance(original, UnknownTenant):
        return _public(error, Forbidden.code, "the token names an unknown tenant", {})
    if isinstance(original, TransientFailure):
        log.warning("operation gave up after retries", extra={"reason": original.message})
        return _public(error, "UNAVAILABLE", "temporarily unavailable: try again", {})
    if error.path is None and (original is None or isinstance(original, GraphQLError)):
        return _public(error, BadRequest.code, error.message, {})
    if isinstance(original, StrawberryInputCoercionError):
        # An argument strawberry could not read (an id that is not a global id): the
        # client's input, raised while resolving and so with a path.
        return _public(error, BadRequest.code, original.message, {})

    log.error(
        "graphql operation failed",
        exc_info=original,
        extra={"path": ".".join(str(key) for key in error.path or ())},
    )
    return _public(error, "INTERNAL", INTERNAL_MESSAGE, {})


class ErrorPolicy(SchemaExtension):
    """Rewrite every error of a result with :func:`public_error`: the one result of a
    query or mutation, and each result a subscription streams."""

    def on_operation(self) -> Iterator[None]:
        yield
        _make_public(self.execution_context.result)

    def on_stream_result(self, result: StreamExecutionResult) -> Iterator[None]:
        _make_public(result)
        yield


def _make_public(result: object) -> None:
    if isinstance(result, GraphQLExecutionResult | ExecutionResult) and result.errors:
        result.errors = [public_error(error) for error in result.errors]


def internal_error(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """Litestar's last resort outside GraphQL (health, metrics): log, answer 500 without
    detail."""
    log.error(
        "request failed", exc_info=error, extra={"method": request.method, "path": request.url.path}
    )
    return Response(
        {"status_code": HTTP_500_INTERNAL_SERVER_ERROR, "detail": INTERNAL_MESSAGE},
        status_code=HTTP_500_INTERNAL_SERVER_ERROR,
        media_type=MediaType.JSON,
    )


class Schema(strawberry.Schema):
    async def execute(self, *args: Any, **kwargs: Any) -> ExecutionResult:
        """A single answer (HTTP) is never a subscription: those stream over the
        WebSocket only."""
        allowed = kwargs.get("allowed_operation_types") or DEFAULT_ALLOWED_OPERATION_TYPES
        kwargs["allowed_operation_types"] = set(allowed) - {OperationType.SUBSCRIPTION}
        return await super().execute(*args, **kwargs)

    async def stream(self, *args: Any, **kwargs: Any) -> StreamResult:
        """Streams (the WebSocket) carry subscriptions only: queries and mutations go
        over HTTP, where bodies are bounded and checked before they are decoded."""
        kwargs["allowed_operation_types"] = (OperationType.SUBSCRIPTION,)
        return await super().stream(*args, **kwargs)

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Leave logging to :class:`ErrorPolicy`, which logs only what is a defect; the
        default would log every refused token and typo with a traceback."""
