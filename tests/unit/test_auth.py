"""Bearer tokens: what is minted, and which signed tokens are still refused."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import jwt
import pytest

from adapters.auth import InvalidToken, Role, mint_token, verify_token
from adapters.settings import Settings

SETTINGS = Settings()
TENANT = uuid.UUID("0190a8f2-7c1e-7d3a-9b4f-2a6c8e0d1f35")
HOUR = 3600


def _signed(**changes: Any) -> str:
    """A token signed with the right key; ``changes`` set claims, None removes one."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "core-banking",
        "tid": str(TENANT),
        "roles": ["ingest"],
        "iss": SETTINGS.jwt_issuer,
        "aud": SETTINGS.jwt_audience,
        "iat": now,
        "nbf": now,
        "exp": now + HOUR,
    }
    claims.update(changes)
    present = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(present, SETTINGS.jwt_secret.get_secret_value(), algorithm="HS256")


def test_a_minted_token_verifies() -> None:
    token = mint_token(SETTINGS, subject="core-banking", tenant_id=TENANT, roles=[Role.INGEST])

    principal = verify_token(SETTINGS, token)

    assert (principal.subject, principal.tenant_id) == ("core-banking", TENANT)
    assert principal.roles == frozenset({Role.INGEST})


def test_a_token_signed_by_hand_verifies() -> None:
    assert verify_token(SETTINGS, _signed()).tenant_id == TENANT


@pytest.mark.parametrize(
    "exp",
    [
        pytest.param(1e300, id="a huge float"),
        pytest.param(10**30, id="a huge integer"),
        pytest.param("99999999999", id="a numeric string"),
        pytest.param(float(int(time.time()) + HOUR), id="a float"),
        pytest.param(True, id="a boolean"),
    ],
)
def test_an_expiry_that_is_not_a_plain_timestamp_is_refused(exp: object) -> None:
    with pytest.raises(InvalidToken):
        verify_token(SETTINGS, _signed(exp=exp))


@pytest.mark.parametrize("iat", [pytest.param("1", id="a string"), pytest.param(1.5, id="a float")])
def test_an_issue_time_that_is_not_a_plain_timestamp_is_refused(iat: object) -> None:
    with pytest.raises(InvalidToken):
        verify_token(SETTINGS, _signed(iat=iat))


def test_a_token_that_lives_longer_than_the_maximum_is_refused() -> None:
    now = int(time.time())

    with pytest.raises(InvalidToken):
        verify_token(SETTINGS, _signed(iat=now, exp=now + 25 * HOUR))


def test_without_an_issue_time_the_lifetime_counts_from_now() -> None:
    now = int(time.time())

    with pytest.raises(InvalidToken):
        verify_token(SETTINGS, _signed(iat=None, exp=now + 25 * HOUR))
    assert verify_token(SETTINGS, _signed(iat=None, exp=now + 23 * HOUR)).tenant_id == TENANT


def test_the_maximum_lifetime_is_a_setting() -> None:
    short = SETTINGS.model_copy(update={"jwt_max_lifetime_hours": 1})
    now = int(time.time())

    assert verify_token(SETTINGS, _signed(iat=now, exp=now + 2 * HOUR)).tenant_id == TENANT
    with pytest.raises(InvalidToken):
        verify_token(short, _signed(iat=now, exp=now + 2 * HOUR))


def test_a_token_is_minted_within_the_maximum_lifetime_only() -> None:
    longest = timedelta(hours=SETTINGS.jwt_max_lifetime_hours)

    token = mint_token(
        SETTINGS, subject="s", tenant_id=TENANT, roles=[Role.INGEST], lifetime=longest
    )
    assert verify_token(SETTINGS, token).tenant_id == TENANT
    with pytest.raises(ValueError, match="at most"):
        mint_token(
            SETTINGS,
            subject="s",
            tenant_id=TENANT,
            roles=[Role.INGEST],
            lifetime=longest + timedelta(minutes=1),
        )


@pytest.mark.parametrize(
    "tid",
    [
        pytest.param("{" + str(TENANT) + "}", id="braces"),
        pytest.param("urn:uuid:" + str(TENANT), id="a URN"),
        pytest.param(TENANT.hex, id="bare hex"),
        pytest.param(str(TENANT).upper(), id="upper case"),
        pytest.param(TENANT.int, id="an integer"),
        pytest.param(" " + str(TENANT), id="a leading space"),
        pytest.param(str(TENANT) + "\n", id="a final newline"),
    ],
)
def test_a_tenant_id_in_another_spelling_is_refused(tid: object) -> None:
    with pytest.raises(InvalidToken):
        verify_token(SETTINGS, _signed(tid=tid))


@pytest.mark.parametrize(
    "sub",
    [
        pytest.param("", id="empty"),
        pytest.param(" alice", id="a leading space"),
        pytest.param("alice\n", id="a final newline"),
        pytest.param("al\x00ice", id="a control character"),
        pytest.param("al\u200bice", id="a zero-width space"),
        pytest.param("\uff41\uff4c\uff49\uff43\uff45", id="not in NFKC form"),
        pytest.param("a" * 201, id="longer than 200 characters"),
    ],
)
def test_a_subject_in_a_spelling_we_would_not_record_is_refused(sub: str) -> None:
    """Truncating or keeping such a name would let two spellings pass for one person, or
    one person for two, in the review's four eyes and its history."""
    with pytest.raises(InvalidToken):
        verify_token(SETTINGS, _signed(sub=sub))


def test_a_subject_the_portal_would_refuse_is_not_minted() -> None:
    with pytest.raises(ValueError, match="sub"):
        mint_token(SETTINGS, subject=" alice", tenant_id=TENANT, roles=[Role.ANALYST])
