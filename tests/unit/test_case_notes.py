"""Comments and evidence references."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from domain.case_notes import EvidenceKind, edited, evidence, new_comment
from domain.errors import InvalidCaseInput

NOW = datetime(2026, 6, 1, tzinfo=UTC)
CASE = uuid.uuid4()
HASH = "ab" * 32


def test_an_edit_is_the_next_version_by_the_same_author() -> None:
    first = new_comment(uuid.uuid4(), CASE, " first ", "alice", NOW)
    second = edited(first, "second", "alice", NOW)
    assert (first.body, first.version) == ("first", 1)
    assert (second.comment_id, second.version, second.body) == (first.comment_id, 2, "second")
    with pytest.raises(InvalidCaseInput):
        edited(first, "mine now", "bob", NOW)


@pytest.mark.parametrize("body", ["", "   ", "x" * 10_001])
def test_a_comment_has_some_text_and_not_too_much(body: str) -> None:
    with pytest.raises(InvalidCaseInput):
        new_comment(uuid.uuid4(), CASE, body, "alice", NOW)


def test_evidence_is_a_document_or_a_url_with_its_hash() -> None:
    doc = evidence(
        uuid.uuid4(),
        CASE,
        document_id="dms:4711",
        url=None,
        sha256=HASH,
        description="bank statement",
        added_by="alice",
        now=NOW,
    )
    assert (doc.kind, doc.reference) == (EvidenceKind.DOCUMENT, "dms:4711")
    link = evidence(
        uuid.uuid4(),
        CASE,
        document_id=None,
        url="https://registry.example/co/1",
        sha256=HASH,
        description="",
        added_by="alice",
        now=NOW,
    )
    assert link.kind is EvidenceKind.URL


@pytest.mark.parametrize(
    ("document_id", "url", "sha256", "field"),
    [
        (None, None, "ab" * 32, "evidence"),
        ("d1", "https://x.example", "ab" * 32, "evidence"),
        (None, "ftp://x.example", "ab" * 32, "evidence.url"),
        ("d 1", None, "ab" * 32, "evidence.documentId"),
        ("d1", None, "AB" * 32, "evidence.sha256"),
        ("d1", None, "ab" * 31, "evidence.sha256"),
    ],
)
def test_a_bad_evidence_reference_is_refused_naming_its_field(
    document_id: str | None, url: str | None, sha256: str, field: str
) -> None:
    with pytest.raises(InvalidCaseInput) as refused:
        evidence(
            uuid.uuid4(),
            CASE,
            document_id=document_id,
            url=url,
            sha256=sha256,
            description="",
            added_by="alice",
            now=NOW,
        )
    assert refused.value.field == field


@pytest.mark.parametrize("bad", ["\x00", "\ud800", "\x1b[2J", "\x7f"])
def test_a_comment_or_description_with_a_control_character_is_refused(bad: str) -> None:
    with pytest.raises(InvalidCaseInput) as refused:
        new_comment(uuid.uuid4(), uuid.uuid4(), f"see {bad} here", "ana", NOW)
    assert refused.value.field == "body"


def test_free_text_keeps_its_line_breaks_and_tabs() -> None:
    body = "first line\n\tsecond line\r\nthird"
    assert new_comment(uuid.uuid4(), uuid.uuid4(), body, "ana", NOW).body == body
