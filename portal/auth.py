"""Who is calling: the bearer token, verified once per request, and the role checks.

The token is read and verified by the request middleware, before GraphQL runs, so that
the tenant is known to every log line of the request; a WebSocket client sends it in its
``connection_init`` payload instead, verified once for the connection.
:class:`RequireAuthentication` then refuses any operation of a caller without a valid
token, introspection included, before the document is validated against the schema (so
that field suggestions are not shown to strangers). Resolvers check roles with :func:`authorize`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass

import jwt
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from adapters.auth import InvalidToken, Principal, Role, verify_token
from adapters.settings import Settings
from portal.errors import Forbidden, Unauthenticated

log = logging.getLogger(__name__)

MISSING = "authentication required: send 'Authorization: Bearer <token>'"
EXPIRED = "the bearer token has expired"
REFUSED = "the bearer token is not valid"


@dataclass(frozen=True, slots=True)
class Identity:
    """The outcome of authentication: a principal, or why there is none."""

    principal: Principal | None
    refusal: str = MISSING


def authenticate(settings: Settings, authorization: str | None) -> Identity:
    if not authorization:
        return Identity(None, MISSING)
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return Identity(None, MISSING)
    try:
        return Identity(verify_token(settings, token.strip()))
    except InvalidToken as error:
        # The reason comes from the JWT library and names a claim, never the token.
        log.info("bearer token refused", extra={"reason": error.args[0] if error.args else ""})
        expired = isinstance(error.__cause__, jwt.ExpiredSignatureError)
        return Identity(None, EXPIRED if expired else REFUSED)


def authenticate_connection(settings: Settings, params: Mapping[str, object] | None) -> Identity:
    """The identity a WebSocket client claims in its ``connection_init`` payload, as
    ``{"authorization": "Bearer <token>"}`` (the HTTP middleware never sees it)."""
    value = (params or {}).get("authorization") or (params or {}).get("Authorization")
    return authenticate(settings, value if isinstance(value, str) else None)


def authenticated(identity: Identity) -> Principal:
    if identity.principal is None:
        raise Unauthenticated(identity.refusal)
    return identity.principal


def authorize(identity: Identity, role: Role) -> Principal:
    """The caller, if it holds ``role``; else :class:`Forbidden`."""
    principal = authenticated(identity)
    if not principal.has(role):
        raise Forbidden(f"this operation needs the {role.value} role")
    return principal


def authorize_write(identity: Identity, role: Role) -> Principal:
    """The caller, if it holds ``role`` and may write at all: a token that carries the
    regulator role only ever reads, whatever other roles it also carries."""
    principal = authorize(identity, role)
    if principal.has(Role.REGULATOR):
        raise Forbidden("a regulator's token only reads")
    return principal


def authorize_any(identity: Identity, roles: Collection[Role]) -> Principal:
    """The caller, if it holds one of ``roles``; else :class:`Forbidden`."""
    principal = authenticated(identity)
    if not any(principal.has(role) for role in roles):
        names = ", ".join(sorted(role.value for role in roles))
        raise Forbidden(f"this operation needs one of the roles {names}")
    return principal


class RequireAuthentication(SchemaExtension):
    """Answer UNAUTHENTICATED to every operation of a caller without a valid token.

    Setting the errors before validation runs makes strawberry skip validation and
    execution and return them as they are.
    """

    def on_validate(self) -> Iterator[None]:
        identity = getattr(self.execution_context.context, "identity", None)
        if not isinstance(identity, Identity) or identity.principal is None:
            refusal = identity.refusal if isinstance(identity, Identity) else MISSING
            self.execution_context.pre_execution_errors = [
                GraphQLError(refusal, original_error=Unauthenticated(refusal))
            ]
        yield
