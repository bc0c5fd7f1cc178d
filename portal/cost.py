"""The number of nodes a document may ask for, counted before it runs.

The depth and alias limits bound a document's shape, not its size: within them a page of
100 cases may ask for 100 events of each case's subject, twenty times over, which is one
request for 200,000 rows and 2,000 statements. Here every connection a document selects
counts its ``first`` times the ``first`` of each connection it sits in, and a document
whose count passes :data:`MAX_NODES` is refused as BAD_REQUEST before any resolver runs.
Twenty aliased pages of 100 cases (the alias limit times the largest page) still pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    get_named_type,
    value_from_ast,
)
from graphql.execution.values import get_variable_values
from strawberry.extensions import SchemaExtension

from adapters.read_store import MAX_PAGE
from portal.errors import BadRequest

MAX_NODES = 2000
CONNECTION_SUFFIX = "Connection"


class ConnectionBudget(SchemaExtension):
    """Refuse a valid document that would read more than :data:`MAX_NODES` nodes."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None and context.result is None:
            nodes = document_cost(
                context.schema._schema,
                document.definitions,
                context.operation_name,
                context.variables or {},
            )
            if nodes > MAX_NODES:
                message = (
                    f"the document asks for up to {nodes} nodes, more than {MAX_NODES}: "
                    "ask for smaller pages, or nested lists in a query of their own"
                )
                context.result = GraphQLExecutionResult(
                    data=None, errors=[GraphQLError(message, original_error=BadRequest(message))]
                )
        yield


def document_cost(
    schema: GraphQLSchema,
    definitions: Any,
    operation_name: str | None,
    variables: Mapping[str, Any],
) -> int:
    fragments = {
        item.name.value: item for item in definitions if isinstance(item, FragmentDefinitionNode)
    }
    operations = [item for item in definitions if isinstance(item, OperationDefinitionNode)]
    chosen = [
        item
        for item in operations
        if operation_name is None or (item.name is not None and item.name.value == operation_name)
    ]
    costs = [0]
    for operation in chosen:
        root = schema.get_root_type(operation.operation)
        if root is None:
            continue
        walk = _Walk(schema, fragments, _Variables(schema, operation, variables))
        with contextlib.suppress(_Uncounted):
            costs.append(walk.cost(operation.selection_set, root, 1, frozenset()))
    # Without an operation name the document runs one operation: count the dearest.
    return max(costs)


class _Uncounted(Exception):
    """The operation's variables do not coerce: it will not run, so it costs nothing."""


class _Variables:
    """The variables as the operation will see them, with its defaults filled in,
    coerced when a connection first needs them: only then can they change a count,
    and an ingest batch's thousand events would otherwise be coerced twice."""

    def __init__(
        self, schema: GraphQLSchema, operation: OperationDefinitionNode, given: Mapping[str, Any]
    ) -> None:
        self._schema = schema
        self._operation = operation
        self._given = given
        self._coerced: dict[str, Any] | None = None

    def coerced(self) -> dict[str, Any]:
        if self._coerced is None:
            definitions = self._operation.variable_definitions or ()
            values = get_variable_values(self._schema, definitions, dict(self._given))
            if isinstance(values, list):  # a list: its errors
                raise _Uncounted
            self._coerced = values.coerced
        return self._coerced


@dataclass(frozen=True, slots=True)
class _Walk:
    """One operation's selections, walked with its fragments and variables."""

    schema: GraphQLSchema
    fragments: Mapping[str, FragmentDefinitionNode]
    variables: _Variables

    def cost(
        self,
        selections: SelectionSetNode | None,
        parent: GraphQLNamedType,
        multiplier: int,
        seen: frozenset[str],
    ) -> int:
        """The nodes the connections under ``selections`` may return, each counted
        ``multiplier`` times (the product of the pages around them)."""
        if selections is None:
            return 0
        total = 0
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                total += self._field(selection, parent, multiplier, seen)
                continue
            within = seen
            if isinstance(selection, InlineFragmentNode):
                inner, condition = selection.selection_set, selection.type_condition
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments.get(selection.name.value)
                if fragment is None or selection.name.value in seen:
                    continue  # a fragment spread inside itself is refused by validation
                within = seen | {selection.name.value}
                inner, condition = fragment.selection_set, fragment.type_condition
            else:
                continue
            typed = self.schema.get_type(condition.name.value) if condition else None
            total += self.cost(inner, typed or parent, multiplier, within)
        return total

    def _field(
        self, node: FieldNode, parent: GraphQLNamedType, multiplier: int, seen: frozenset[str]
    ) -> int:
        if not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            return 0
        definition = parent.fields.get(node.name.value)
        if definition is None:
            return 0
        returned = get_named_type(definition.type)
        if not returned.name.endswith(CONNECTION_SUFFIX):
            return self.cost(node.selection_set, returned, multiplier, seen)
        inner = multiplier * _first(node, definition.args.get("first"), self.variables.coerced())
        return inner + self.cost(node.selection_set, returned, inner, seen)


def _first(node: FieldNode, argument: Any, variables: Mapping[str, Any]) -> int:
    """The page size asked for: the argument's value, else its default. A value the
    field itself refuses (outside 1 to ``MAX_PAGE``) counts as one, so that the field's
    own error, which names the argument, is the one shown."""
    value: Any = None
    for given in node.arguments or ():
        if given.name.value == "first" and argument is not None:
            value = value_from_ast(given.value, argument.type, dict(variables))
    if value is None and argument is not None:
        value = argument.default_value
    return value if isinstance(value, int) and 0 < value <= MAX_PAGE else 1
