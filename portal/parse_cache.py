"""Parse each GraphQL document once: integrations send the same few documents again and
again, and parsing one took a tenth of a single-event ingest request.

strawberry's own ``ParserCache`` parses inside its hook, so a syntax error raised there
skips the exits of the other extensions (the error policy among them, which gives
every error its code). This cache never parses: before strawberry parses, it hands over
a document parsed successfully before; after, it keeps what strawberry parsed. A
document that fails to parse is never kept, so it fails each time as it always did.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from graphql import DocumentNode
from strawberry.extensions.base_extension import SchemaExtension

MAX_DOCUMENTS = 256
# Longer documents are parsed every time: they are not an integration's fixed
# mutation, and a bounded number of entries must also bound the memory they take.
MAX_DOCUMENT_CHARS = 8 * 1024

_Key = tuple[str, tuple[tuple[str, Any], ...]]


class ParsedDocuments:
    """A bounded, least-recently-used map of document text (and parse options) to its
    parsed form, shared by the requests of one schema."""

    def __init__(self, max_documents: int = MAX_DOCUMENTS) -> None:
        self._documents: OrderedDict[_Key, DocumentNode] = OrderedDict()
        self._max = max_documents

    def get(self, key: _Key) -> DocumentNode | None:
        document = self._documents.get(key)
        if document is not None:
            self._documents.move_to_end(key)
        return document

    def keep(self, key: _Key, document: DocumentNode) -> None:
        self._documents[key] = document
        self._documents.move_to_end(key)
        while len(self._documents) > self._max:
            self._documents.popitem(last=False)

    def __len__(self) -> int:
        return len(self._documents)


class ParseOnce(SchemaExtension):
    def __init__(self, *, documents: ParsedDocuments) -> None:
        super().__init__()
        self._documents = documents

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        query = context.query
        key: _Key | None = None
        if query is not None and len(query) <= MAX_DOCUMENT_CHARS:
            key = (query, tuple(sorted(context.parse_options.items())))
            if context.graphql_document is None:
                context.graphql_document = self._documents.get(key)
        yield
        if key is not None and context.graphql_document is not None:
            self._documents.keep(key, context.graphql_document)
