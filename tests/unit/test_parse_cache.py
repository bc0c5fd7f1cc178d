"""The parsed-document cache stays within its bounds."""

from __future__ import annotations

from graphql import parse

from portal.parse_cache import ParsedDocuments


def test_the_least_recently_used_document_goes_first() -> None:
    documents = ParsedDocuments(max_documents=2)
    keys = [(f"{{ f{n} }}", ()) for n in range(3)]
    for key in keys[:2]:
        documents.keep(key, parse(key[0]))
    assert documents.get(keys[0]) is not None  # now the most recently used
    documents.keep(keys[2], parse(keys[2][0]))

    assert len(documents) == 2
    assert documents.get(keys[1]) is None
    assert documents.get(keys[0]) is not None
    assert documents.get(keys[2]) is not None


def test_the_same_text_with_other_parse_options_is_another_entry() -> None:
    documents = ParsedDocuments()
    documents.keep(("{ a }", (("max_tokens", 10),)), parse("{ a }"))

    assert documents.get(("{ a }", (("max_tokens", 20),))) is None
