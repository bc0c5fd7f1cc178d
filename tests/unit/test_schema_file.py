"""The committed ``schema.graphql`` is the schema of the code, and changes that would
break a client are told apart from those that would not."""

from __future__ import annotations

from pathlib import Path

from adapters.settings import Settings
from portal.app import build_schema
from portal.schema_file import breaking_changes, current_sdl, dangerous_changes
from vigil.cli import SCHEMA_FILE, main

COMMITTED = Path(SCHEMA_FILE).read_text(encoding="utf-8")


def test_the_committed_schema_is_the_code_s_schema() -> None:
    # On failure: run 'vigil schema export' and commit schema.graphql.
    assert current_sdl() == COMMITTED


def test_the_export_is_the_schema_the_portal_serves() -> None:
    # Queries, mutations and subscriptions alike: a root left out of the export would
    # let its changes reach clients unreviewed.
    served = build_schema(Settings())
    assert current_sdl() == str(served) + "\n"


def test_the_export_is_the_same_every_time() -> None:
    assert current_sdl() == current_sdl()


def test_a_removed_field_or_a_new_required_argument_is_breaking() -> None:
    assert breaking_changes(COMMITTED, COMMITTED) == []
    removed = COMMITTED.replace("  alertCount: Int!\n", "", 1)
    assert removed != COMMITTED
    # What clients had (the committed file) against what the code would now serve.
    found = breaking_changes(COMMITTED, removed)
    assert [change.type.name for change in found] == ["FIELD_REMOVED"]
    required = COMMITTED.replace("case(id: ID!): Case", "case(id: ID!, reason: String!): Case", 1)
    assert [change.type.name for change in breaking_changes(COMMITTED, required)] == [
        "REQUIRED_ARG_ADDED"
    ]


def test_an_added_field_is_not_breaking() -> None:
    added = COMMITTED.replace("  alertCount: Int!\n", "  alertCount: Int!\n  note: String\n", 1)
    assert breaking_changes(COMMITTED, added) == []
    assert dangerous_changes(COMMITTED, added) == []


def test_the_check_fails_on_a_breaking_change(tmp_path: Path) -> None:
    stale = tmp_path / "schema.graphql"
    stale.write_text(
        COMMITTED.replace(
            "type Case implements Node {", "type Case implements Node {\n  gone: Int", 1
        )
    )

    assert main(["schema", "check", "--file", str(stale)]) == 1
    assert main(["schema", "check", "--file", str(SCHEMA_FILE)]) == 0
