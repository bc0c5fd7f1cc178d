"""Comments and evidence on a case: written once, never changed.

An edit of a comment is a new version of it (same id, version + 1), written by its
author; every version stays, so what a reviewer read at any time can be shown again.
Evidence is a reference to a document (its id in the bank's document store) or a URL,
with the SHA-256 of its content, so that a document swapped later is detected.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from domain.errors import InvalidCaseInput
from domain.text import unprintable

MAX_COMMENT = 10_000
MAX_REFERENCE = 2_000
MAX_EVIDENCE_PER_STEP = 20
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
URL = re.compile(r"https?://[^\s]+")
DOCUMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}")


class EvidenceKind(StrEnum):
    DOCUMENT = "document"
    URL = "url"


@dataclass(frozen=True, slots=True)
class Comment:
    comment_id: uuid.UUID
    version: int
    case_id: uuid.UUID
    body: str
    author: str
    written_at: datetime


@dataclass(frozen=True, slots=True)
class Evidence:
    evidence_id: uuid.UUID
    case_id: uuid.UUID
    kind: EvidenceKind
    reference: str
    sha256: str
    description: str
    added_by: str
    added_at: datetime


def new_comment(
    comment_id: uuid.UUID, case_id: uuid.UUID, body: str, author: str, now: datetime
) -> Comment:
    return Comment(comment_id, 1, case_id, _body(body), author, now)


def edited(previous: Comment, body: str, author: str, now: datetime) -> Comment:
    """The next version of a comment; only its author writes one."""
    if previous.author != author:
        raise InvalidCaseInput("only a comment's author edits it", field="commentId")
    return Comment(
        previous.comment_id, previous.version + 1, previous.case_id, _body(body), author, now
    )


def evidence(
    evidence_id: uuid.UUID,
    case_id: uuid.UUID,
    *,
    document_id: str | None,
    url: str | None,
    sha256: str,
    description: str,
    added_by: str,
    now: datetime,
    field: str = "evidence",
) -> Evidence:
    """A checked evidence reference: exactly one of a document id or a URL, and the hash
    of its content in lower-case hex."""
    if (document_id is None) == (url is None):
        raise InvalidCaseInput("give a documentId or a url, not both", field=field)
    if document_id is not None:
        if not DOCUMENT_ID.fullmatch(document_id):
            raise InvalidCaseInput("not a document id", field=f"{field}.documentId")
        kind, reference = EvidenceKind.DOCUMENT, document_id
    else:
        assert url is not None
        if len(url) > MAX_REFERENCE or not URL.fullmatch(url) or unprintable(url, multiline=False):
            raise InvalidCaseInput("an http or https URL", field=f"{field}.url")
        kind, reference = EvidenceKind.URL, url
    if not SHA256_HEX.fullmatch(sha256):
        raise InvalidCaseInput("64 lower-case hex digits", field=f"{field}.sha256")
    if len(description) > MAX_COMMENT:
        raise InvalidCaseInput("too long", field=f"{field}.description")
    if unprintable(description, multiline=True):
        raise InvalidCaseInput("a control character", field=f"{field}.description")
    return Evidence(
        evidence_id, case_id, kind, reference, sha256, description.strip(), added_by, now
    )


def _body(body: str) -> str:
    stripped = body.strip()
    if not stripped:
        raise InvalidCaseInput("a comment has text", field="body")
    if len(stripped) > MAX_COMMENT:
        raise InvalidCaseInput(f"a comment has at most {MAX_COMMENT} characters", field="body")
    if unprintable(stripped, multiline=True):
        raise InvalidCaseInput("a comment holds a control character", field="body")
    return stripped
