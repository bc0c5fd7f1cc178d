"""JSON from outside, read with its nesting bounded.

The standard decoder recurses once per level of nesting: a body of a few thousand
brackets raises RecursionError, which no caller expects from ``json.loads``, and
anything that walks the result recursively later fails the same way. :func:`loads`
counts the nesting first, without recursion, and refuses a document deeper than asked
with :class:`TooDeep`; every other refusal is a ValueError, as from ``json.loads``.
"""

from __future__ import annotations

import json
import re
from typing import Any

# A JSON string (escapes included) or a bracket: matching the strings whole keeps the
# brackets inside them from being counted.
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_OPENING = frozenset("[{")
_CLOSING = frozenset("]}")


class TooDeep(ValueError):
    """A JSON document nested deeper than allowed."""

    def __init__(self, max_depth: int) -> None:
        super().__init__(f"nested more than {max_depth} levels deep")
        self.max_depth = max_depth


def check_depth(text: str, max_depth: int) -> None:
    """Raise :class:`TooDeep` when arrays and objects nest deeper than ``max_depth``.

    Text that is not JSON is not refused here (parsing it will be): an unclosed string
    at worst makes the count too high.
    """
    depth = 0
    for token in _STRING_OR_BRACKET.finditer(text):
        found = token.group()
        if found in _OPENING:
            depth += 1
            if depth > max_depth:
                raise TooDeep(max_depth)
        elif found in _CLOSING:
            depth -= 1


def loads(text: str, *, max_depth: int, **options: Any) -> Any:
    """``json.loads(text, **options)``, refusing nesting deeper than ``max_depth``."""
    check_depth(text, max_depth)
    try:
        return json.loads(text, **options)
    except RecursionError:
        # Only when max_depth is near the interpreter's limit; kept as a last guard.
        raise TooDeep(max_depth) from None
