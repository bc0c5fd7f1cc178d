"""Documents built to cost the server: each refused cheaply, with a clear error."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest

from adapters.auth import Role
from adapters.settings import Settings
from tests.integration.portal_support import Portal, error_codes, open_portal, token


@pytest.fixture
async def portal(settings: Settings) -> AsyncIterator[Portal]:
    async with open_portal(settings) as client:
        yield client


ALIASES = " ".join(f"a{i}: viewer {{ subject }}" for i in range(1000))
ABUSE = {
    "a thousand aliases": "{ "
    + " ".join(f"a{i}: viewer {{ subject }}" for i in range(1000))
    + " }",
    "a huge token count": "{ " + "viewer { subject } " * 50_000 + "}",
    # Nesting past the limit is refused whether the fields exist or not.
    "a deep query": "query { " + "viewer { " * 12 + "subject" + " }" * 13,
    "a deep query over real types": "query { cases { edges { node { "
    + "subject { events { edges { node { " * 3
    + "id"
    + " } } } }" * 3
    + " } } } }",
    # Under the token limit, past the alias limit: 25 pages of 100 cases.
    "aliased pages past the limit": "{ "
    + " ".join(f"p{i}: cases(first: 100) {{ edges {{ cursor }} }}" for i in range(25))
    + " }",
    "a thousand aliased pages": "{ "
    + " ".join(f"p{i}: cases(first: 100) {{ edges {{ cursor }} }}" for i in range(1000))
    + " }",
}


@pytest.mark.parametrize("document", ABUSE.values(), ids=ABUSE.keys())
async def test_an_abusive_document_is_refused_quickly(
    portal: Portal, settings: Settings, tenant: uuid.UUID, document: str
) -> None:
    bearer = {"Authorization": f"Bearer {token(settings, tenant, Role.ANALYST)}"}

    started = time.perf_counter()
    response = await portal.client.post("/graphql", json={"query": document}, headers=bearer)
    elapsed = time.perf_counter() - started

    assert response.status_code == 200
    body = response.json()
    assert body.get("data") is None
    assert error_codes(body) == ["BAD_REQUEST"] * len(body["errors"])
    # Not a timing assertion on speed, a guard against the whole-document walk that
    # used to take tens of seconds: generous enough for the slowest machine.
    assert elapsed < 5, elapsed
