"""JSON from outside, read with its nesting bounded.

The standard decoder recurses once per level of nesting: a body of a few thousand
brackets raises RecursionError, which no caller expects from ``json.loads``, and
anything that walks the result recursively later fails the same way. :func:`loads`
refuses a document deeper than asked with :class:`TooDeep`; every other refusal is a
ValueError, as from ``json.loads``. A document too deep is refused as such whatever
else is wrong with it.

The nesting is counted on the decoded value, level by level, without recursion: the
decoder's own recursion stops (with RecursionError, refused as too deep) long before
the stack could overflow, and counting on the value is twenty times cheaper than in the
text. The text is counted only when the value cannot be (the document is not valid
JSON, or a hook made values of other types).
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
_SCALARS = frozenset({str, int, float, bool, type(None)})


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
    try:
        value = json.loads(text, **options)
    except RecursionError:
        raise TooDeep(max_depth) from None
    except ValueError:
        check_depth(text, max_depth)
        raise
    deeper = _deeper(value, max_depth)
    if deeper is None:
        check_depth(text, max_depth)
    elif deeper:
        raise TooDeep(max_depth)
    return value


def _deeper(value: Any, max_depth: int) -> bool | None:
    """Whether the arrays and objects of a decoded value nest deeper than ``max_depth``,
    or None when it holds a value of a type the decoder does not make itself."""
    level = [value]
    depth = 0
    while level:
        depth += 1
        below: list[Any] = []
        for item in level:
            kind = type(item)
            if kind is dict:
                children: Any = item.values()
            elif kind is list:
                children = item
            elif kind in _SCALARS:
                continue
            else:
                return None
            if depth > max_depth:
                return True
            below += children
        level = below
    return False
