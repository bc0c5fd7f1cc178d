"""Bearer tokens: JWTs carrying the subject, the tenant and the roles."""

from __future__ import annotations

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
    if len(token) > 8192:
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
        tenant_id = uuid.UUID(str(claims["tid"]))
        raw_roles = claims["roles"]
        if not isinstance(raw_roles, list):
            raise TypeError("roles must be a list")
        roles = frozenset(Role(role) for role in raw_roles if role in Role._value2member_map_)
        subject = str(claims["sub"])[:200]
    except (ValueError, TypeError) as error:
        raise InvalidToken("malformed claims") from error
    return Principal(subject, tenant_id, roles, datetime.fromtimestamp(claims["exp"], UTC))
