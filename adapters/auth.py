"""Bearer tokens: JWTs carrying the subject, the tenant and the roles.

A token is refused unless its signature, issuer and audience verify, and also when a
claim is spelled in a way we never mint: times that are not integer timestamps, a
lifetime over ``jwt_max_lifetime_hours`` (counted from ``iat``, else from now), or a
tenant id other than the lower-case hyphenated UUID.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import jwt

from adapters.settings import Settings


class Role(StrEnum):
    INGEST = "ingest"
    ANALYST = "analyst"
    SUPERVISOR = "supervisor"
    REGULATOR = "regulator"
    ADMIN = "admin"


MAX_TOKEN_LENGTH = 8192
# uuid.UUID also reads braces, URNs, bare hex and upper case; a token names its tenant
# in the one spelling that str(uuid) gives.
_TENANT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class InvalidToken(Exception):
    """The token is missing, forged, expired or meant for someone else."""


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    tenant_id: uuid.UUID
    roles: frozenset[Role]
    expires_at: datetime

    def has(self, role: Role) -> bool:
        return role in self.roles


def mint_token(
    settings: Settings,
    *,
    subject: str,
    tenant_id: uuid.UUID,
    roles: list[Role],
    lifetime: timedelta = timedelta(hours=8),
) -> str:
    """A signed token; raise ValueError for a lifetime the portal would refuse."""
    longest = timedelta(hours=settings.jwt_max_lifetime_hours)
    if lifetime > longest:
        raise ValueError(f"a token lives at most {longest} (jwt_max_lifetime_hours)")
    now = datetime.now(UTC)
    claims = {
        "sub": subject,
        "tid": str(tenant_id),
        "roles": sorted(role.value for role in roles),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
    }
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


def verify_token(settings: Settings, token: str) -> Principal:
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("the token is too long")
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=["HS256"],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway_seconds,
            options={"require": ["sub", "tid", "roles", "exp", "iss", "aud"]},
        )
    except jwt.PyJWTError as error:
        raise InvalidToken(str(error)) from error
    try:
        tenant_id = _tenant_id(claims["tid"])
        raw_roles = claims["roles"]
        if not isinstance(raw_roles, list):
            raise TypeError("roles must be a list")
        roles = frozenset(Role(role) for role in raw_roles if role in Role._value2member_map_)
        subject = str(claims["sub"])[:200]
        expires_at = _expiry(settings, claims)
    except (ValueError, TypeError, OverflowError, OSError) as error:
        raise InvalidToken(f"malformed claims: {error}") from error
    return Principal(subject, tenant_id, roles, expires_at)


def _tenant_id(value: object) -> uuid.UUID:
    if not isinstance(value, str) or not _TENANT_ID.fullmatch(value):
        raise ValueError("tid must be a lower-case hyphenated UUID")
    return uuid.UUID(value)


def _expiry(settings: Settings, claims: dict[str, object]) -> datetime:
    """When the token expires, once its times are plain integers and its lifetime is
    within the maximum."""
    expires = _timestamp(claims, "exp")
    issued = _timestamp(claims, "iat")
    _timestamp(claims, "nbf")
    if expires is None:
        raise ValueError("exp is required")
    start = issued if issued is not None else int(datetime.now(UTC).timestamp())
    if expires - start > settings.jwt_max_lifetime_hours * 3600:
        raise ValueError(f"the token lives longer than {settings.jwt_max_lifetime_hours} hours")
    return datetime.fromtimestamp(expires, UTC)


def _timestamp(claims: dict[str, object], name: str) -> int | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer timestamp")
    return value
