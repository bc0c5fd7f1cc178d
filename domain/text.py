"""What client text may hold before it is stored, searched or logged.

PostgreSQL's text cannot hold NUL, and a lone surrogate cannot be encoded as UTF-8 at
all: either reaching the driver is a failure of the request rather than a refusal of
the input. Other control characters hide or fake content on a reviewer's screen and in
log lines. Free text keeps its line breaks and tabs; a one-line value (an id, a URL, a
name, a filter) holds no control character at all.
"""

from __future__ import annotations

import unicodedata

LINE_BREAKS = frozenset("\t\n\r")
# Control characters, and surrogates, which a str may hold when JSON escapes one alone.
_REFUSED = frozenset({"Cc", "Cs"})


def unprintable(text: str, *, multiline: bool) -> bool:
    """Whether ``text`` holds a character we never store: a control character (line
    breaks and tabs excepted when ``multiline``) or a surrogate."""
    return any(
        unicodedata.category(char) in _REFUSED and not (multiline and char in LINE_BREAKS)
        for char in text
    )
