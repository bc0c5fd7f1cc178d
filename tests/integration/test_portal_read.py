"""The review portal's reads: the review page, a case with its explanation, a subject
with its events and assessments, audit trails, pages and their cursors, filters."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.auth import Role
from adapters.settings import Settings
from tests.integration.case_support import assign_case, close_case
from tests.integration.portal_support import Portal, error_codes, open_portal, token
from tests.integration.read_support import (
    CASE_WITH_EXPLANATION,
    REVIEW_PAGE,
    seed_cases,
)


@pytest.fixture
async def portal(settings: Settings) -> AsyncIterator[Portal]:
    async with open_portal(settings) as client:
        yield client


def analyst(settings: Settings, tenant: uuid.UUID) -> str:
    return token(settings, tenant, Role.ANALYST, subject="analyst-1")


async def review(portal: Portal, bearer: str, **variables: Any) -> dict[str, Any]:
    body = await portal.graphql(REVIEW_PAGE, {"first": 50, **variables}, token=bearer)
    assert "errors" not in body, body
    page: dict[str, Any] = body["data"]["cases"]
    return page


def ids(page: dict[str, Any]) -> list[str]:
    return [edge["node"]["id"] for edge in page["edges"]]


async def test_the_review_page_lists_cases_with_their_subject_and_latest_assessment(
    portal: Portal, settings: Settings, tenant: uuid.UUID, uow_factory: Any, transaction_event: Any
) -> None:
    await seed_cases(uow_factory, tenant, transaction_event, 3)

    page = await review(portal, analyst(settings, tenant))

    assert len(page["edges"]) == 3
    assert page["pageInfo"]["hasNextPage"] is False
    for edge in page["edges"]:
        case = edge["node"]
        assert case["status"] == "OPEN"
        assert case["alertCount"] == 1
        assert case["slaBreached"] is False
        assert case["subject"]["externalRef"].startswith("ACC-")
        assert case["latestAssessment"]["band"] == case["band"]
    priorities = [(-edge["node"]["priority"], edge["node"]["slaDueAt"]) for edge in page["edges"]]
    assert priorities == sorted(priorities)


async def test_a_case_shows_its_explanation_rule_by_rule(
    portal: Portal, settings: Settings, tenant: uuid.UUID, uow_factory: Any, transaction_event: Any
) -> None:
    await seed_cases(uow_factory, tenant, transaction_event, 1)
    bearer = analyst(settings, tenant)
    case_id = ids(await review(portal, bearer))[0]

    body = await portal.graphql(CASE_WITH_EXPLANATION, {"id": case_id}, token=bearer)

    assert "errors" not in body, body
    case = body["data"]["case"]
    assessment = case["latestAssessment"]
    rules = assessment["explanation"]["rules"]
    fired = [rule for rule in rules if rule["fired"]]
    assert fired, rules
    assert len(rules) > len(fired)  # rules that did not fire are explained too
    assert sum(rule["points"] for rule in fired) >= assessment["score"] > 0
    assert all(rule["reason"] for rule in rules)
    assert any(rule["observed"] for rule in rules)
    assert assessment["event"]["amount"] == "125.5"
    assert case["alerts"][0]["score"] == assessment["score"]


async def test_pages_follow_each_other_without_gaps_or_repeats_while_cases_arrive(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    uow_factory: Any,
    transaction_event: Any,
    owner_engine: AsyncEngine,
) -> None:
    await seed_cases(uow_factory, tenant, transaction_event, 7)
    bearer = analyst(settings, tenant)
    for sort in ("PRIORITY", "SLA_DUE"):
        seen: list[str] = []
        before = ids(await review(portal, bearer, sort=sort))
        after = None
        while True:
            page = await review(portal, bearer, first=3, after=after, sort=sort)
            seen += ids(page)
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
            if len(seen) == 3:
                # New cases arrive between two pages: nothing shown before moves.
                await seed_cases(uow_factory, tenant, transaction_event, 2, activate=False)
        assert [case for case in seen if case in before] == before
        assert len(seen) == len(set(seen))


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"first": 0}, "first"),
        ({"first": 101}, "first"),
        ({"first": -1}, "first"),
        ({"after": "not a cursor"}, "after"),
        ({"after": "WyJldmVudHMiLCAiMjAyNi0wMS0wMVQwMDowMDowMCswMDowMCIsICJ4Il0="}, "after"),
    ],
)
async def test_a_bad_page_size_or_cursor_is_a_bad_request_naming_it(
    portal: Portal, settings: Settings, tenant: uuid.UUID, variables: dict[str, Any], field: str
) -> None:
    body = await portal.graphql(
        REVIEW_PAGE, {"first": 10, **variables}, token=analyst(settings, tenant)
    )

    assert body["data"] is None
    assert error_codes(body) == ["BAD_REQUEST"]
    assert body["errors"][0]["extensions"]["field"] == field


async def test_a_cursor_of_one_order_is_refused_in_the_other(
    portal: Portal, settings: Settings, tenant: uuid.UUID, uow_factory: Any, transaction_event: Any
) -> None:
    await seed_cases(uow_factory, tenant, transaction_event, 2)
    bearer = analyst(settings, tenant)
    cursor = (await review(portal, bearer, first=1))["pageInfo"]["endCursor"]

    body = await portal.graphql(
        REVIEW_PAGE, {"first": 1, "after": cursor, "sort": "SLA_DUE"}, token=bearer
    )

    assert error_codes(body) == ["BAD_REQUEST"]


async def test_cases_are_filtered_by_status_band_time_sla_queue_and_assignee(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    uow_factory: Any,
    transaction_event: Any,
    owner_engine: AsyncEngine,
) -> None:
    await seed_cases(uow_factory, tenant, transaction_event, 4)
    bearer = analyst(settings, tenant)
    every = ids(await review(portal, bearer))
    late, closed, old, held = (uuid.UUID(_node_id(case)) for case in every[:4])
    await close_case(uow_factory, tenant, closed)
    await assign_case(uow_factory, tenant, held, "erin")
    async with owner_engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE cases SET sla_due_at = now() - interval '1 hour'"
                " WHERE case_id = :late OR case_id = :closed"
            ),
            {"late": late, "closed": closed},
        )
        await connection.execute(
            text("UPDATE cases SET opened_at = '2020-01-01T00:00:00Z' WHERE case_id = :c"),
            {"c": old},
        )

    async def matching(**filter: Any) -> set[str]:
        return set(ids(await review(portal, bearer, filter=filter)))

    assert await matching(slaBreached=True) == {every[0]}
    assert await matching(slaBreached=False) == set(every) - {every[0]}
    assert await matching(status=["CLOSED"]) == {every[1]}
    assert await matching(status=["OPEN", "IN_REVIEW"]) == set(every) - {every[1]}
    assert await matching(status=["IN_REVIEW"]) == {every[3]}
    assert await matching(assignee=["erin"]) == {every[3]}
    assert await matching(assignee=["erin", "ana"]) == {every[1], every[3]}
    assert await matching(unassigned=True) == {every[0], every[2]}
    assert await matching(queue=["default"]) == set(every)
    assert await matching(queue=["sanctions"]) == set()
    assert await matching(band=["LOW"]) == set()
    assert await matching(openedBefore="2021-01-01T00:00:00Z") == {every[2]}
    assert await matching(openedFrom="2021-01-01T00:00:00Z") == set(every) - {every[2]}


def _node_id(global_value: str) -> str:
    from strawberry.relay import from_base64

    return from_base64(global_value)[1]


async def test_a_failure_while_reading_is_masked_as_internal(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    uow_factory: Any,
    transaction_event: Any,
    owner_engine: AsyncEngine,
) -> None:
    await seed_cases(uow_factory, tenant, transaction_event, 1)
    bearer = analyst(settings, tenant)
    case_id = ids(await review(portal, bearer))[0]
    async with owner_engine.begin() as connection:
        # An explanation the reader cannot make sense of: a defect, not the client's fault.
        await connection.execute(
            text("UPDATE assessments SET explanation = '{\"secret\": 1}' WHERE tenant_id = :t"),
            {"t": tenant},
        )

    body = await portal.graphql(CASE_WITH_EXPLANATION, {"id": case_id}, token=bearer)

    assert error_codes(body) == ["INTERNAL"]
    assert body["errors"][0]["message"] == "internal error"
    assert "secret" not in str(body)
