"""RS256 tokens verified with keys read from a JWKS URL: an identity provider served on
127.0.0.1 by the test, with keys made by the test."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from adapters.settings import Settings
from portal.app import InsecureSettings, create_app
from tests.integration.portal_support import VIEWER, Portal, error_codes, open_portal

ISSUER = "https://idp.bank.test"
AUDIENCE = "vigil-api"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class IdentityProvider:
    """A JWKS endpoint whose keys the test changes, counting the fetches."""

    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)
    fetches: int = 0
    url: str = ""

    def document(self) -> bytes:
        listed = []
        for kid, key in self.keys.items():
            jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            listed.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return json.dumps({"keys": listed}).encode()

    def sign(self, kid: str, key: rsa.RSAPrivateKey | None = None, **changes: Any) -> str:
        claims = token_claims(**changes)
        signer = key or self.keys[kid]
        return jwt.encode(claims, signer, algorithm="RS256", headers={"kid": kid})


TENANT = uuid.UUID("0190a8f2-7c1e-7d3a-9b4f-2a6c8e0d1f35")


def token_claims(**changes: Any) -> dict[str, Any]:
    """An analyst's claims, as the identity provider issues them, with ``changes``."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "analyst@bank",
        "tid": str(TENANT),
        "roles": ["analyst"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
    }
    return claims | changes


def hmac_signed(claims: dict[str, Any], secret: bytes, *, kid: str) -> str:
    """An HS256 token made by hand: PyJWT itself refuses to key HMAC with a PEM key."""

    def part(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    header = part(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = part(json.dumps(claims).encode())
    signature = part(hmac.new(secret, header + b"." + payload, hashlib.sha256).digest())
    return (header + b"." + payload + b"." + signature).decode()


@pytest.fixture
def provider() -> Iterator[IdentityProvider]:
    """The provider, on a port of its own: each test's URL is new, so is its key cache."""
    idp = IdentityProvider(keys={"k1": new_key()})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            idp.fetches += 1
            body = idp.document()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    idp.url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield idp
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def rs256(settings: Settings, provider: IdentityProvider, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "jwt_algorithm": "RS256",
        "jwks_url": provider.url,
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "jwks_min_refresh_seconds": 30.0,
    }
    values.update(changes)
    return settings.model_copy(update=values)


@pytest.fixture
async def portal(settings: Settings, provider: IdentityProvider) -> AsyncIterator[Portal]:
    async with open_portal(rs256(settings, provider)) as client:
        yield client


async def test_a_token_signed_by_the_identity_provider_is_accepted(
    portal: Portal, provider: IdentityProvider
) -> None:
    body = await portal.graphql(VIEWER, token=provider.sign("k1"))

    assert body == {
        "data": {
            "viewer": {"subject": "analyst@bank", "tenantId": str(TENANT), "roles": ["analyst"]}
        }
    }
    # The key set is read once and then cached.
    await portal.graphql(VIEWER, token=provider.sign("k1"))
    assert provider.fetches == 1


async def test_forged_expired_and_misaddressed_tokens_are_refused(
    portal: Portal, provider: IdentityProvider, settings: Settings
) -> None:
    public_pem = (
        provider.keys["k1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    now = int(time.time())
    refused = {
        "signed by another key under a known kid": provider.sign("k1", key=new_key()),
        "expired": provider.sign("k1", iat=now - 900, exp=now - 600),
        "wrong audience": provider.sign("k1", aud="another-api"),
        "wrong issuer": provider.sign("k1", iss="https://mallory.test"),
        "HS256 with the shared secret": jwt.encode(
            token_claims(roles=["admin"]),
            settings.jwt_secret.get_secret_value(),
            algorithm="HS256",
            headers={"kid": "k1"},
        ),
        # The classic confusion: the public key used as an HMAC secret.
        "HS256 keyed with the public key": hmac_signed(
            token_claims(roles=["admin"]),
            public_pem,
            kid="k1",
        ),
        "no kid": jwt.encode(
            token_claims(roles=["analyst"]),
            provider.keys["k1"],
            algorithm="RS256",
        ),
    }
    for name, bearer in refused.items():
        body = await portal.graphql(VIEWER, token=bearer)
        assert error_codes(body) == ["UNAUTHENTICATED"], name


async def test_unknown_key_ids_refetch_the_key_set_at_most_once_per_interval(
    portal: Portal, provider: IdentityProvider
) -> None:
    await portal.graphql(VIEWER, token=provider.sign("k1"))
    for _ in range(20):
        forged = provider.sign(f"kid-{uuid.uuid4().hex}", key=new_key())
        assert error_codes(await portal.graphql(VIEWER, token=forged)) == ["UNAUTHENTICATED"]

    assert provider.fetches == 2


async def test_a_rotated_key_is_picked_up(settings: Settings, provider: IdentityProvider) -> None:
    async with open_portal(rs256(settings, provider, jwks_min_refresh_seconds=0.0)) as portal:
        assert "errors" not in await portal.graphql(VIEWER, token=provider.sign("k1"))
        provider.keys["k2"] = new_key()

        body = await portal.graphql(VIEWER, token=provider.sign("k2"))

        assert "errors" not in body, body


def test_production_refuses_to_start_without_issuer_audience_or_an_https_key_set(
    settings: Settings, provider: IdentityProvider
) -> None:
    production = rs256(settings, provider, environment="production")
    with pytest.raises(InsecureSettings, match="JWKS_URL"):
        create_app(production)

    https = production.model_copy(update={"jwks_url": "https://idp.bank.test/jwks.json"})
    create_app(https)
    for name in ("jwt_issuer", "jwt_audience"):
        unset = Settings(
            environment="production",
            jwt_algorithm="RS256",
            jwks_url=https.jwks_url,
            **{other: "x" for other in ("jwt_issuer", "jwt_audience") if other != name},
        )
        with pytest.raises(InsecureSettings, match=name.upper()):
            create_app(unset)
