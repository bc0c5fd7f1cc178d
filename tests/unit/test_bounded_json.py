"""JSON read with its nesting bounded: the same refusals whatever the document holds."""

from __future__ import annotations

import json
from collections import OrderedDict
from decimal import Decimal
from typing import Any

import pytest

from adapters import bounded_json


def _nested(depth: int, inner: str = "1") -> str:
    return '{"a": ' * (depth - 1) + "[" + inner + "]" + "}" * (depth - 1)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise ValueError("a key appears twice")
    return dict(pairs)


@pytest.mark.parametrize("depth", [1, 2, 8])
def test_a_document_as_deep_as_allowed_is_read(depth: int) -> None:
    text = _nested(depth)
    assert bounded_json.loads(text, max_depth=depth) == json.loads(text)


@pytest.mark.parametrize(
    "text",
    [
        _nested(9),
        _nested(5_000),
        # Invalid after the nesting, or in it: the nesting is what is refused.
        _nested(9) + " trailing",
        "[" * 9 + "1,",
        '{"a": 1, "a": 2, "b": ' + _nested(9) + "}",
        '[{"a": 1, "a": 2}, ' + "[" * 5_000,
    ],
    ids=["valid", "past recursion", "trailing text", "cut short", "hook after", "hook first"],
)
def test_a_document_too_deep_is_refused_as_such(text: str) -> None:
    with pytest.raises(bounded_json.TooDeep):
        bounded_json.loads(text, max_depth=8, object_pairs_hook=_unique)


def test_other_refusals_are_the_decoders_own() -> None:
    with pytest.raises(ValueError, match="twice"):
        bounded_json.loads('{"a": 1, "a": 2}', max_depth=8, object_pairs_hook=_unique)
    with pytest.raises(json.JSONDecodeError):
        bounded_json.loads("[[1]", max_depth=8)


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"a": "[[[[[[[[[[{{{{{{{{{{", "b": ['\\"[[[[[[[[[[[']})
    assert bounded_json.loads(text, max_depth=2) == json.loads(text)
    with pytest.raises(bounded_json.TooDeep):
        bounded_json.loads(text, max_depth=1)


def test_values_made_by_hooks_are_counted_too() -> None:
    text = _nested(9, inner='{"x": 1.5}')
    with pytest.raises(bounded_json.TooDeep):
        bounded_json.loads(text, max_depth=9, object_pairs_hook=OrderedDict)
    with pytest.raises(bounded_json.TooDeep):
        bounded_json.loads(text, max_depth=9, parse_float=Decimal)
    value = bounded_json.loads(text, max_depth=10, object_pairs_hook=OrderedDict)
    assert value == json.loads(text)
