"""Which database failures are worth another try."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from adapters.database import positional, translate_errors
from domain.errors import TransientFailure


class DriverError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"driver error {sqlstate}")
        self.sqlstate = sqlstate


def raised(error: Exception) -> Exception:
    try:
        with translate_errors():
            raise error
    except Exception as found:
        return found
    raise AssertionError("nothing was raised")


@pytest.mark.parametrize("sqlstate", ["40001", "40P01", "53300", "57P01", "08006"])
def test_overload_conflicts_and_lost_connections_are_transient(sqlstate: str) -> None:
    error = DBAPIError("SELECT 1", None, DriverError(sqlstate))
    assert isinstance(raised(error), TransientFailure)


def test_a_pool_that_frees_no_connection_in_time_is_transient() -> None:
    assert isinstance(raised(PoolTimeout("QueuePool limit reached")), TransientFailure)


def test_a_refused_statement_is_not_transient() -> None:
    error = DBAPIError("SELECT 1", None, DriverError("42501"))
    assert raised(error) is error


def test_named_parameters_become_numbered_in_the_order_given() -> None:
    sql = "SELECT :b, CAST(:a AS int[]), x::text, :b"

    assert positional(sql, ["a", "b"]) == "SELECT $2, CAST($1 AS int[]), x::text, $2"
    with pytest.raises(ValueError, match="not"):
        positional(sql, ["a"])
    with pytest.raises(ValueError, match="not"):
        positional(sql, ["a", "b", "c"])
