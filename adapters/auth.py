"""Bearer tokens: JWTs carrying the subject, the tenant and the roles.

Tokens are signed with HS256 and a shared secret for local use, or with RS256 by an
identity provider whose public keys we read from its JWKS URL (:class:`JwksKeys`). Only
the configured algorithm is accepted, so a token signed with the RS256 public key taken
as an HMAC secret never verifies. A token is refused unless its signature, issuer and
audience verify, and also when a
claim is spelled in a way we never mint: times that are not integer timestamps, a
lifetime over ``jwt_max_lifetime_hours`` (counted from ``iat``, else from now), a
tenant id other than the lower-case hyphenated UUID, or a subject that is not a plain
name (see :func:`_subject`).
"""

from __future__ import annotations

import functools
import math
import re
import threading
import time
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import jwt

from adapters.settings import Settings


class Role(StrEnum):
    INGEST = "ingest"
    ANALYST = "analyst"
    SUPERVISOR = "supervisor"
    REGULATOR = "regulator"
    ADMIN = "admin"


MAX_TOKEN_LENGTH = 8192
MAX_SUBJECT = 200
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
    """A token signed with the shared secret (HS256, for local use); raise ValueError for
    a lifetime or a subject the portal would refuse."""
    _subject(subject)
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


class JwksKeys:
    """The identity provider's signing keys, read from its JWKS URL.

    The key set is cached for ``cache_seconds``; a token naming a key id that is not in
    it makes us fetch the set again (the provider may have rotated its keys), but at
    most once every ``min_refresh_seconds``, whatever the tokens say. Fetching blocks:
    call :meth:`key_for` from a thread when an event loop must not wait.
    """

    def __init__(
        self,
        url: str,
        *,
        cache_seconds: float = 300.0,
        min_refresh_seconds: float = 30.0,
        timeout_seconds: float = 5.0,
    ) -> None:
        self._client = jwt.PyJWKClient(
            url, cache_keys=False, lifespan=cache_seconds, timeout=timeout_seconds
        )
        self._min_refresh = min_refresh_seconds
        self._refreshed_at = -math.inf
        self._lock = threading.Lock()

    def key_for(self, token: str) -> Any:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as error:
            raise InvalidToken(str(error)) from error
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("the token names no key (kid)")
        key = self._find(kid, refresh=False)
        if key is None and self._may_refresh():
            key = self._find(kid, refresh=True)
        if key is None:
            raise InvalidToken("the token names a key the identity provider does not list")
        return key

    def _may_refresh(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._refreshed_at < self._min_refresh:
                return False
            self._refreshed_at = now
            return True

    def _find(self, kid: str, *, refresh: bool) -> Any:
        try:
            keys = self._client.get_signing_keys(refresh=refresh)
        except jwt.PyJWKClientError as error:
            # Fail closed: without the provider's keys no token verifies.
            raise InvalidToken(f"the signing keys could not be read: {error}") from error
        for key in keys:
            if key.key_id == kid:
                return key.key
        return None


@functools.lru_cache(maxsize=4)
def _jwks(url: str, cache: float, min_refresh: float, timeout: float) -> JwksKeys:
    return JwksKeys(
        url, cache_seconds=cache, min_refresh_seconds=min_refresh, timeout_seconds=timeout
    )


def jwks_keys(settings: Settings) -> JwksKeys:
    """The key set of these settings, one per URL in a process (its cache is shared)."""
    if settings.jwks_url is None:
        raise InvalidToken("RS256 needs VIGIL_JWKS_URL")
    return _jwks(
        settings.jwks_url,
        settings.jwks_cache_seconds,
        settings.jwks_min_refresh_seconds,
        settings.jwks_timeout_seconds,
    )


def _verification_key(settings: Settings, token: str) -> Any:
    if settings.jwt_algorithm == "RS256":
        return jwks_keys(settings).key_for(token)
    return settings.jwt_secret.get_secret_value()


def verify_token(settings: Settings, token: str) -> Principal:
    """The token's principal, or :class:`InvalidToken`. With RS256 this may fetch the
    key set (see :class:`JwksKeys`)."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("the token is too long")
    key = _verification_key(settings, token)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[settings.jwt_algorithm],
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
        subject = _subject(claims["sub"])
        expires_at = _expiry(settings, claims)
    except (ValueError, TypeError, OverflowError, OSError) as error:
        raise InvalidToken(f"malformed claims: {error}") from error
    return Principal(subject, tenant_id, roles, expires_at)


def _subject(value: object) -> str:
    """The subject as the review records it (assignee, proposer, decider, audit actor):
    1 to 200 characters, in NFKC form, without surrounding spaces or control or format
    characters. Anything else is refused rather than cut or cleaned, since a cleaned
    name could be another person's."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_SUBJECT:
        raise ValueError(f"sub must be a string of 1 to {MAX_SUBJECT} characters")
    if value != value.strip() or unicodedata.normalize("NFKC", value) != value:
        raise ValueError("sub must be trimmed and in NFKC form")
    if any(unicodedata.category(char) in {"Cc", "Cf", "Cs", "Zl", "Zp"} for char in value):
        raise ValueError("sub must hold no control or format characters")
    return value


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
