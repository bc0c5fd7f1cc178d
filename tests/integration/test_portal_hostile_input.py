"""Input no client should send, sent anyway: every text field with a NUL or a lone
surrogate, cursors and times out of range, ids that are not ids. Each is refused with a
typed error naming its field, never an INTERNAL error from the database driver."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.auth import Role
from adapters.settings import Settings
from domain.ports import UnitOfWorkFactory
from tests.integration.case_support import open_cases
from tests.integration.portal_support import Portal, error_codes, open_portal, token
from tests.integration.read_support import REVIEW_PAGE, global_id
from tests.integration.test_portal_cases import CLAIM, COMMENT, ESCALATE, PROPOSE, case_gid

SHA = "a" * 64
# Neither can be stored in a PostgreSQL text column.
UNSTORABLE = [pytest.param("\x00", id="NUL"), pytest.param("\ud800", id="lone surrogate")]


@pytest.fixture
async def portal(settings: Settings) -> AsyncIterator[Portal]:
    async with open_portal(settings) as client:
        yield client


async def _graphql(
    portal: Portal, document: str, variables: dict[str, Any], bearer: str
) -> dict[str, Any]:
    """As :meth:`Portal.graphql`, but with the JSON escaped to ASCII, as a client may
    send it, so that a lone surrogate travels as ``\\ud800``."""
    response = await portal.client.post(
        "/graphql",
        content=json.dumps({"query": document, "variables": variables}).encode(),
        headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _cursor(*parts: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode()


@pytest.mark.parametrize("bad", UNSTORABLE)
async def test_unstorable_text_in_any_field_of_a_review_step_is_invalid_input(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    uow_factory: UnitOfWorkFactory,
    transaction_event: Any,
    bad: str,
) -> None:
    (case_id,) = [case_gid(c) for c in await open_cases(uow_factory, tenant, transaction_event, 1)]
    ana = token(settings, tenant, Role.ANALYST, subject="ana")
    claimed = await portal.graphql(
        CLAIM, {"input": {"caseId": case_id, "expectedVersion": 1}}, token=ana
    )
    assert claimed["data"]["caseClaim"]["errors"] == [], claimed
    at = {"caseId": case_id, "expectedVersion": 2}
    evidence = {"documentId": "doc-1", "sha256": SHA}
    calls = [
        (CLAIM, {**at, "clientMutationId": f"m{bad}"}, "clientMutationId"),
        (COMMENT, {**at, "body": f"see{bad}"}, "body"),
        (COMMENT, {**at, "body": "x", "evidence": [{**evidence, "description": bad}]}, None),
        (
            COMMENT,
            {**at, "body": "x", "evidence": [{"url": f"https://a/{bad}", "sha256": SHA}]},
            None,
        ),
        (ESCALATE, {**at, "reason": f"why{bad}"}, "reason"),
        (PROPOSE, {**at, "disposition": "SAR_FILED", "rationale": f"r{bad}"}, "rationale"),
    ]
    answers = []
    for document, fields, field in calls:
        body = await _graphql(portal, document, {"input": fields}, ana)
        assert "errors" not in body, body
        (payload,) = body["data"].values()
        (error,) = payload["errors"]
        answers.append(error["code"])
        if field is not None:
            assert error["field"] == field
        else:
            assert error["field"].startswith("evidence.0.")
    assert answers == ["INVALID_INPUT"] * len(calls)


async def test_unstorable_text_in_a_filter_is_a_bad_request(
    portal: Portal, settings: Settings, tenant: uuid.UUID
) -> None:
    bearer = token(settings, tenant, Role.ANALYST, subject="ana")
    for name in ("queue", "assignee"):
        for bad in ("a\x00", "\ud800"):
            body = await _graphql(
                portal, REVIEW_PAGE, {"first": 5, "filter": {name: [bad]}}, bearer
            )
            assert error_codes(body) == ["BAD_REQUEST"], body
            assert body["errors"][0]["extensions"]["field"] == f"filter.{name}"


LATE = "9999-12-31T23:59:59-14:00"
EARLY = "0001-01-01T00:00:00+14:00"
ANY_ID = str(uuid.UUID(int=1))


@pytest.mark.parametrize(
    ("document", "variables", "field"),
    [
        pytest.param(
            REVIEW_PAGE,
            {"after": _cursor("cases.priority", str(2**31), "2026-01-01T00:00:00+00:00", ANY_ID)},
            "after",
            id="a priority past int4",
        ),
        pytest.param(
            REVIEW_PAGE,
            {"after": _cursor("cases.priority", "1", LATE, ANY_ID)},
            "after",
            id="a cursor time past year 9999 in UTC",
        ),
        pytest.param(
            REVIEW_PAGE,
            {"after": _cursor("cases.sla_due", EARLY, ANY_ID), "sort": "SLA_DUE"},
            "after",
            id="a cursor time before year 1 in UTC",
        ),
        pytest.param(
            REVIEW_PAGE, {"filter": {"openedFrom": EARLY}}, "filter.openedFrom", id="openedFrom"
        ),
        pytest.param(
            REVIEW_PAGE,
            {"filter": {"openedBefore": LATE}},
            "filter.openedBefore",
            id="openedBefore",
        ),
        pytest.param(
            "query($t: DateTime){ events(first: 5, occurredFrom: $t){ edges { cursor } } }",
            {"t": EARLY},
            "occurredFrom",
            id="occurredFrom",
        ),
        pytest.param(
            "query($a: String){ events(first: 5, after: $a){ edges { cursor } } }",
            {"a": _cursor("events", LATE, ANY_ID)},
            "after",
            id="an events cursor",
        ),
    ],
)
async def test_a_number_or_time_out_of_the_database_s_range_is_a_bad_request(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    document: str,
    variables: dict[str, Any],
    field: str,
) -> None:
    bearer = token(settings, tenant, Role.SUPERVISOR, subject="sam")
    body = await portal.graphql(document, {"first": 5, **variables}, token=bearer)

    assert error_codes(body) == ["BAD_REQUEST"], body
    assert body["errors"][0]["extensions"]["field"] == field


async def test_an_audit_cursor_past_bigint_is_a_bad_request(
    portal: Portal, settings: Settings, tenant: uuid.UUID
) -> None:
    bearer = token(settings, tenant, Role.SUPERVISOR, subject="sam")
    body = await portal.graphql(
        "query($of: ID!, $a: String){ auditTrail(of: $of, after: $a){ edges { cursor } } }",
        {"of": global_id("Case", ANY_ID), "a": _cursor("audit", str(2**63))},
        token=bearer,
    )

    assert error_codes(body) == ["BAD_REQUEST"], body


@pytest.mark.parametrize("field", ["case", "node", "subject", "assessment"])
@pytest.mark.parametrize("bad", ["%%%", base64.b64encode(b"no colon").decode()])
async def test_an_id_that_is_not_a_global_id_is_a_bad_request(
    portal: Portal, settings: Settings, tenant: uuid.UUID, field: str, bad: str
) -> None:
    bearer = token(settings, tenant, Role.ANALYST, subject="ana")
    body = await portal.graphql(
        f"query($id: ID!){{ {field}(id: $id){{ id }} }}", {"id": bad}, token=bearer
    )

    assert error_codes(body) == ["BAD_REQUEST"], body
