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
    # Within depth and aliases, but 20 pages of 100 cases, each with 100 events of its
    # subject: 200,000 rows and 2,000 statements.
    "nested pages multiplied": "{ "
    + " ".join(
        f"p{i}: cases(first: 100) {{ edges {{ node {{ subject {{ events(first: 100) "
        "{ edges { node { id } } } } } } }"
        for i in range(20)
    )
    + " }",
    "nested pages multiplied through a fragment and variables": """
        query($n: Int!) { cases(first: $n) { edges { node { ...S } } } }
        fragment S on Case { subject { assessments(first: $n) { edges { node { id } } } } }
    """,
    "nested pages multiplied by a variable's default": """
        query($m: Int! = 100) {
          cases(first: $m) { edges { node { subject { events(first: $m) { edges { cursor } } } } } }
        }
    """,
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
    response = await portal.client.post(
        "/graphql", json={"query": document, "variables": {"n": 100}}, headers=bearer
    )
    elapsed = time.perf_counter() - started

    assert response.status_code == 200
    body = response.json()
    assert body.get("data") is None
    assert error_codes(body) == ["BAD_REQUEST"] * len(body["errors"])
    # Not a timing assertion on speed, a guard against the whole-document walk that
    # used to take tens of seconds: generous enough for the slowest machine.
    assert elapsed < 5, elapsed


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(
            "{ "
            + " ".join(f"p{i}: cases(first: 100) {{ edges {{ cursor }} }}" for i in range(20))
            + " }",
            id="twenty aliased pages of 100 cases",
        ),
        pytest.param(
            "{ cases(first: 10) { edges { node { subject { events(first: 20) "
            "{ edges { node { id } } } } } } } }",
            id="20 events of each of 10 cases",
        ),
    ],
)
async def test_a_document_within_the_node_budget_is_answered(
    portal: Portal, settings: Settings, tenant: uuid.UUID, document: str
) -> None:
    body = await portal.graphql(document, token=token(settings, tenant, Role.ANALYST))

    assert "errors" not in body, body


async def test_a_document_whose_variables_do_not_coerce_is_refused_for_them_not_its_cost(
    portal: Portal, settings: Settings, tenant: uuid.UUID
) -> None:
    """Such a document never runs, so its pages are not counted: the error names the
    variable, whatever the pages would have cost."""
    document = "query($bad: Int!) { viewer { subject } " + ABUSE["nested pages multiplied"][1:]
    bearer = {"Authorization": f"Bearer {token(settings, tenant, Role.ANALYST)}"}

    response = await portal.client.post(
        "/graphql", json={"query": document, "variables": {"bad": "x"}}, headers=bearer
    )

    body = response.json()
    assert body.get("data") is None
    assert len(body["errors"]) == 1
    assert "$bad" in body["errors"][0]["message"], body
