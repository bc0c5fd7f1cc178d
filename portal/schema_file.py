"""The GraphQL schema as a file: ``schema.graphql`` is committed beside the code, so
that clients and reviewers see every change to the API, and a change that would break a
client (a type, field or argument removed, a type changed, an argument made required)
is reported against it before it is merged.

The text is what strawberry prints for the schema, which does not depend on settings:
the same code always exports the same file.
"""

from __future__ import annotations

from graphql import BreakingChange, DangerousChange, build_schema
from graphql.utilities import find_breaking_changes, find_dangerous_changes

from portal.errors import Schema
from portal.review_queue import Subscription
from portal.schema import Mutation, Query


def current_sdl() -> str:
    """The schema of this code, as the committed file must hold it."""
    return str(Schema(query=Query, mutation=Mutation, subscription=Subscription)) + "\n"


def breaking_changes(committed: str, current: str) -> list[BreakingChange]:
    return find_breaking_changes(build_schema(committed), build_schema(current))


def dangerous_changes(committed: str, current: str) -> list[DangerousChange]:
    return find_dangerous_changes(build_schema(committed), build_schema(current))
