"""Engines and the translation of driver errors into the domain's errors."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence

import asyncpg
import msgspec
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from domain.errors import TransientFailure

# SQLSTATEs worth another try: serialization failure, deadlock, lock timeout, too many
# connections (the server's slots are all taken), and the connection classes (admin
# shutdown, cannot connect now).
_TRANSIENT_SQLSTATES = {
    "53300",
    "40001",
    "40P01",
    "55P03",
    "57P01",
    "57P02",
    "57P03",
    "08000",
    "08003",
    "08006",
}


_encode_json = msgspec.json.Encoder().encode


def json_text(value: object) -> str:
    """JSON text for a jsonb parameter. The database parses it, so any spelling of the
    same value will do, and msgspec writes it several times faster than the json
    module. (What is hashed keeps its canonical encoding, made in the domain.)"""
    return _encode_json(value).decode()


def async_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs in settings and use the asyncpg driver."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError("expected a postgresql:// URL")


def plain_url(url: str) -> str:
    """The same URL for asyncpg itself (LISTEN and the raw benchmarks)."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def make_engine(
    url: str,
    *,
    pool_size: int = 10,
    application_name: str = "vigil",
    pool_timeout_seconds: float = 30.0,
) -> AsyncEngine:
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=pool_timeout_seconds,
        # No ping before each checkout: it costs a round trip per transaction. A
        # connection found dead fails its statement as TransientFailure, SQLAlchemy then
        # discards the whole pool's connections, and the retry gets a fresh one.
        pool_pre_ping=False,
        pool_recycle=1800,
        # Statement values (account numbers among them) stay out of error messages,
        # and so out of the logs that record those errors.
        hide_parameters=True,
        connect_args={"server_settings": {"application_name": application_name}},
    )


def sqlstate(error: BaseException) -> str | None:
    original = getattr(error, "orig", None)
    for candidate in (original, getattr(original, "__cause__", None), error):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def parameter_names(sql: str) -> list[str]:
    """The ``:name`` parameters of a statement, each once, in the order they first
    appear."""
    return list(dict.fromkeys(_NAMED.findall(sql)))


def positional(sql: str, names: Sequence[str]) -> str:
    """A statement written with ``:name`` parameters (as SQLAlchemy's ``text`` takes
    them) in asyncpg's ``$n`` form, ``names`` giving the order; a name used twice keeps
    its number. The names used and the names given must be the same."""
    used = set(_NAMED.findall(sql))
    if used != set(names) or len(set(names)) != len(names):
        raise ValueError(f"parameters {sorted(used)} are not {list(names)}")
    number = {name: index + 1 for index, name in enumerate(names)}
    return _NAMED.sub(lambda found: f"${number[found.group(1)]}", sql)


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn driver errors worth retrying into :class:`TransientFailure`."""
    try:
        yield
    except PoolTimeout as error:
        # Every pooled connection stayed busy for the whole timeout: overload, not a fault.
        raise TransientFailure("no database connection became free in time") from error
    except (OperationalError, InterfaceError) as error:
        raise TransientFailure("the database connection failed") from error
    except DBAPIError as error:
        if sqlstate(error) in _TRANSIENT_SQLSTATES or error.connection_invalidated:
            raise TransientFailure(f"the database asked for a retry ({sqlstate(error)})") from error
        raise
    # asyncpg's own errors, from the paths that use the driver without SQLAlchemy (the
    # relay's claim loops, ingest).
    except (OSError, asyncpg.PostgresConnectionError) as error:
        raise TransientFailure("the database connection failed") from error
    except asyncpg.PostgresError as error:
        if error.sqlstate in _TRANSIENT_SQLSTATES:
            raise TransientFailure(f"the database asked for a retry ({error.sqlstate})") from error
        raise
