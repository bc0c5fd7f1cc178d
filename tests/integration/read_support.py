"""Helpers for the read side's tests: cases made by the real scoring service, and the
GraphQL documents an analyst's front-end sends."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from strawberry.relay import to_base64

from adapters.cel_rules import CachedScorers
from domain.ports import UnitOfWorkFactory
from services.scoring import score_event
from tests.integration.scoring_support import activate_default_ruleset, alerting, ingest

REVIEW_PAGE = """
query Review($first: Int!, $after: String, $filter: CaseFilterInput, $sort: CaseSort) {
  cases(first: $first, after: $after, filter: $filter, sort: $sort) {
    edges {
      cursor
      node {
        id status band priority slaDueAt slaBreached alertCount openedAt
        subject { id kind externalRef }
        latestAssessment { id score band }
      }
    }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""

CASE_WITH_EXPLANATION = """
query Case($id: ID!) {
  case(id: $id) {
    id status band alertCount
    subject { externalRef }
    alerts { id score typologies }
    latestAssessment {
      id score band rulesetVersion
      explanation { score band alert rules { code fired points observed thresholds reason } }
      event { id type amount currency }
    }
  }
}
"""


def global_id(type_name: str, value: uuid.UUID | str) -> str:
    return to_base64(type_name, str(value))


async def seed_cases(
    uow_factory: UnitOfWorkFactory,
    tenant: uuid.UUID,
    make_event: Callable[..., dict[str, Any]],
    count: int,
    *,
    activate: bool = True,
) -> list[uuid.UUID]:
    """``count`` alerting events from as many senders, scored: one case each. Returns
    the events' ids."""
    if activate:
        await activate_default_ruleset(uow_factory, tenant)
    marker = uuid.uuid4().hex[:8]
    events = [
        alerting(make_event, originator=f"ACC-{marker}-{index:04d}") for index in range(count)
    ]
    event_ids = await ingest(uow_factory, tenant, events)
    scorers = CachedScorers()
    for event_id in event_ids:
        await score_event(uow_factory, scorers, tenant, event_id)
    return event_ids
