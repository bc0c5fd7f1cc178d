"""Rule conditions in the Common Expression Language, and the rules scorecard built on them.

:class:`CelCompiler` compiles a condition once into a program of the
``common-expression-language`` library (a Rust evaluator, chosen for its speed: a
compiled condition runs in about a microsecond; handing it its variables costs more,
so each condition is given only the fields it names). Nothing is ever passed to
``eval``.

Handing the evaluator a map costs about 2 us, ten times a plain value, so a condition
that only ever selects fields of the context's roots (``event.amount_minor``, never
``event['x']``, ``size(event)`` or ``has(event.x)``) is also compiled with each such
selection as a variable of its own (``event__amount_minor``), and run that way whenever
every field it names is there; otherwise, and for every other condition, the program
as written runs on the narrowed maps, so what a condition sees and how it fails is the
same either way. :class:`CachedScorers` keeps one compiled scorecard per tenant and
ruleset version, so a worker compiles a version once, however many events it scores.

Errors are translated here into the domain's: a syntax error becomes
:class:`~domain.rules.InvalidRuleset` with the column where the parser stopped, and
anything that goes wrong while a condition runs becomes :class:`~domain.rules.RuleFailed`,
which the domain records in that one explanation.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import cel

from domain.rules import (
    CompiledRuleset,
    Evaluation,
    InvalidRuleset,
    RuleFailed,
    Ruleset,
    compile_ruleset,
    parse_ruleset,
)
from domain.scoring import FeatureNeeds, StoredRuleset, sample_contexts

_SYNTAX_ERROR = re.compile(r"<input>:(\d+):(\d+): ([^\n]*)")
# Money is compared in integer minor units; a binary float in a condition would make a
# comparison inexact, so float literals and conversions to double are refused outright.
_FLOAT = re.compile(r"(?<![\w.])(?:\d+\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\.\d+)|\bdouble\s*\(")
# String literals, blanked out before looking for numbers (triple-quoted ones first).
_STRING = re.compile(
    r"(?s)'''.*?'''"
    r'|""".*?"""'
    r"|'(?:[^'\\\n]|\\.)*'"
    r'|"(?:[^"\\\n]|\\.)*"'
)
# `root.field`, not followed by a call: `root.size()` is a function of the whole root.
_SELECT = re.compile(r"\s*\.\s*([A-Za-z_]\w*)(?!\w|\s*\()")
_ROOTS = ("event", "originator", "beneficiary", "params")
# A root named after a dot is a field of something else, not the root.
_ROOT_USE = {root: re.compile(rf"(?<![\w.]){root}(?!\w)") for root in _ROOTS}
_ANY_ROOT_AFTER_DOT = re.compile(rf"\.\s*(?:{'|'.join(_ROOTS)})(?!\w)")
_HAS = re.compile(r"(?<![\w.])has\s*\(")
_MAX_MESSAGE = 200

_K = TypeVar("_K")
_V = TypeVar("_V")


class CelCompiler:
    """A :class:`~domain.rules.ConditionCompiler` for CEL."""

    def compile(self, source: str) -> CelCondition:
        floating = _FLOAT.search(_STRING.sub(lambda s: " " * len(s.group()), source))
        if floating:
            raise InvalidRuleset(
                "condition",
                "floating-point numbers are not allowed; compare money in integer minor units",
                floating.start() + 1,
            )
        try:
            program = cel.compile(source)
        except BaseException as error:
            if not _is_library_error(error):
                raise
            message, position = _syntax_error(source, str(error))
            raise InvalidRuleset("condition", message, position) from None
        reads = _reads(source)
        return CelCondition(program, reads, _flattened(source, reads))


@dataclass(frozen=True, slots=True)
class Flattened:
    """A condition compiled with each ``root.field`` it selects as a variable of its own;
    ``fields`` says, per variable, which root and field it stands for."""

    program: cel.Program
    fields: tuple[tuple[str, str, str], ...]


class CelCondition:
    """A compiled condition. Each run hands the evaluator only the context fields the
    condition names: converting a whole context costs a hundred times more than the
    evaluation itself."""

    __slots__ = ("_flat", "_program", "_reads")

    def __init__(
        self,
        program: cel.Program,
        reads: Mapping[str, frozenset[str] | None],
        flat: Flattened | None = None,
    ) -> None:
        self._program = program
        self._reads = reads
        self._flat = flat

    @property
    def reads(self) -> Mapping[str, frozenset[str] | None]:
        """Per root the condition names, the fields it selects (None: any field)."""
        return self._reads

    @property
    def flattened(self) -> bool:
        """Whether runs that find every named field go as plain variables."""
        return self._flat is not None

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        try:
            flat = self._flat
            scope = _flat_scope(flat, context) if flat is not None else None
            if flat is not None and scope is not None:
                result = flat.program.execute(scope)
            else:
                result = self._program.execute(self._narrow(context))
        except BaseException as error:
            if not _is_library_error(error):
                raise
            raise RuleFailed(_runtime_error(error)) from None
        if not isinstance(result, bool):
            raise RuleFailed(f"the condition gave {type(result).__name__}, not true or false")
        return result

    def _narrow(self, context: Mapping[str, Any]) -> dict[str, Any]:
        scope: dict[str, Any] = {}
        for root, value in context.items():
            if root in self._reads:
                names = self._reads[root]
                if names is not None and isinstance(value, dict | Mapping):
                    value = {name: value[name] for name in names if name in value}
                scope[root] = value
            elif root not in _ROOTS:
                scope[root] = value
        return scope


def _reads(source: str) -> dict[str, frozenset[str] | None]:
    """For each context root the source mentions, the fields it selects, or None when it
    uses the root in any other way (indexing, a method, a macro variable) and so needs
    all of it. The scan errs towards reading more: a root named inside a string literal
    or a comment only costs time, never a missing field."""
    reads: dict[str, frozenset[str] | None] = {}
    for root in _ROOTS:
        uses = list(re.finditer(rf"(?<!\w){root}(?!\w)", source))
        if not uses:
            continue
        names: set[str] = set()
        for use in uses:
            select = _SELECT.match(source, use.end())
            if select is None:
                reads[root] = None
                break
            names.add(select.group(1))
        else:
            reads[root] = frozenset(names)
    return reads


def _flat_scope(flat: Flattened, context: Mapping[str, Any]) -> dict[str, Any] | None:
    """The variables of the flattened program, or None when a root is not a map or lacks
    a field: the program as written then runs, and fails as it would."""
    scope: dict[str, Any] = {}
    for variable, root, name in flat.fields:
        values = context.get(root)
        # An exact dict is settled at once; the ABC check is for anything else.
        if type(values) is not dict and not isinstance(values, Mapping):
            return None
        if name not in values:
            return None
        scope[variable] = values[name]
    for root, value in context.items():
        if root not in _ROOTS:
            scope[root] = value
    return scope


def _flattened(source: str, reads: Mapping[str, frozenset[str] | None]) -> Flattened | None:
    """The condition with each ``root.field`` as the variable ``root__field``, when every
    use of a root is such a selection; None when that cannot be said for sure."""
    if not reads or any(names is None for names in reads.values()):
        return None
    blank = _STRING.sub(lambda s: " " * len(s.group()), source)
    if _HAS.search(blank) or _ANY_ROOT_AFTER_DOT.search(blank):
        return None
    cuts: list[tuple[int, int, str]] = []
    fields: dict[str, tuple[str, str, str]] = {}
    for root in reads:
        for use in _ROOT_USE[root].finditer(blank):
            select = _SELECT.match(blank, use.end())
            if select is None:
                return None
            variable = f"{root}__{select.group(1)}"
            cuts.append((use.start(), select.end(), variable))
            fields[variable] = (variable, root, select.group(1))
    rewritten = source
    for start, end, variable in sorted(cuts, reverse=True):
        rewritten = rewritten[:start] + variable + rewritten[end:]
    try:
        program = cel.compile(rewritten)
    except BaseException as error:
        if not _is_library_error(error):
            raise
        return None
    return Flattened(program, tuple(fields.values()))


def _is_library_error(error: BaseException) -> bool:
    # A panic inside the Rust evaluator reaches Python as pyo3's PanicException, which
    # derives from BaseException; it is still one condition failing, not a reason to stop.
    return isinstance(error, Exception) or type(error).__name__ == "PanicException"


def _syntax_error(source: str, text: str) -> tuple[str, int | None]:
    """The parser's first complaint, and where it is as a 1-based offset into the source
    (a column for a condition on one line)."""
    found = _SYNTAX_ERROR.search(text)
    if found is None:
        return _first_line(text), None
    line, column, message = int(found.group(1)), int(found.group(2)), found.group(3)
    offset = sum(len(part) + 1 for part in source.split("\n")[: line - 1]) + column
    return _first_line(message.split(" expecting ")[0]), offset


def _runtime_error(error: BaseException) -> str:
    if isinstance(error, KeyError) and error.args:
        return f"no field {error.args[0]!r} in the context"
    return _first_line(str(error).split(". ")[0]) or type(error).__name__


def _first_line(text: str) -> str:
    return text.strip().split("\n")[0][:_MAX_MESSAGE]


@dataclass(slots=True)
class RulesScorecard:
    """The explainable rules scorer: a compiled ruleset version."""

    version: int
    compiled: CompiledRuleset
    name: str = "rules"
    needs: FeatureNeeds = field(init=False)

    def __post_init__(self) -> None:
        self.needs = FeatureNeeds.of(self.compiled.reads)

    def assess(self, context: Mapping[str, Any]) -> Evaluation:
        return self.compiled.evaluate(context)


class CachedScorers:
    """A :class:`~domain.scoring.ScorerProvider` that compiles each (tenant, version,
    document hash) once and keeps the most recently used ones. Parsed rulesets are kept
    too, by version and document hash: scoring asks for one with every event.

    Compiling is synchronous and short, so under asyncio no other task runs in the
    middle of it; the lock makes the caches safe for threads as well.
    """

    def __init__(self, capacity: int = 256) -> None:
        self._capacity = capacity
        self._scorers: OrderedDict[tuple[uuid.UUID, int, bytes], RulesScorecard] = OrderedDict()
        self._rulesets: OrderedDict[tuple[int, bytes], Ruleset] = OrderedDict()
        self._lock = threading.Lock()

    def parse(self, ruleset: StoredRuleset) -> Ruleset:
        with self._lock:
            return self._parse(ruleset)

    def scorer_for(self, tenant_id: uuid.UUID, ruleset: StoredRuleset) -> RulesScorecard:
        def compile_version() -> RulesScorecard:
            compiled = compile_ruleset(self._parse(ruleset), CelCompiler(), sample_contexts())
            return RulesScorecard(ruleset.version, compiled)

        key = (tenant_id, ruleset.version, ruleset.document_hash)
        with self._lock:
            return _recall(self._scorers, key, compile_version, self._capacity)

    def _parse(self, ruleset: StoredRuleset) -> Ruleset:
        key = (ruleset.version, ruleset.document_hash)
        return _recall(self._rulesets, key, lambda: parse_ruleset(ruleset.document), self._capacity)


def _recall(cache: OrderedDict[_K, _V], key: _K, make: Callable[[], _V], capacity: int) -> _V:
    """The cached value, or a new one made and kept; a failure to make it is not kept."""
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = cache[key] = make()
    if len(cache) > capacity:
        cache.popitem(last=False)
    return value
