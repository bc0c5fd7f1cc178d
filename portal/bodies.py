"""JSON request bodies, checked before GraphQL reads them.

Strawberry decodes a body with ``json.loads`` and turns only a syntax error into a 400:
a body nested a few thousand levels deep (RecursionError), an integer of more than 4,300
digits or bytes that are not UTF-8 (ValueError) would reach the caller as a 500, with or
without a token. :func:`checked_body` reads the body first and refuses such a body with
the reason; a body it accepts is handed on unchanged, to be decoded again by strawberry.
A body over the size limit is not read here: Litestar refuses it with 413 as before.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import NoReturn

from litestar.datastructures import Headers
from litestar.types import Receive, ReceiveMessage, Send

from adapters import bounded_json

# A GraphQL request holds its variables at level 2, an event at level 5 and the deepest
# field of an event at level 7; domain.events refuses events deeper than its own bound.
MAX_BODY_DEPTH = 32
# GraphQL's Int has 32 bits; a longer number is a mistake or a probe, and past 4,300
# digits Python refuses to convert it at all.
MAX_NUMBER_DIGITS = 100


async def checked_body(
    method: str, headers: Headers, receive: Receive, max_bytes: int
) -> tuple[Receive, str | None, tuple[bytes, object] | None]:
    """The ``receive`` to hand on (it replays what was read here), why the body is
    refused (or None), and the body with its decoded value when it was read safely
    (for :func:`keeping_decoded`)."""
    if method != "POST" or not _is_json(headers) or _announced_over(headers, max_bytes):
        return receive, None, None
    messages, body = await _read(receive, max_bytes)
    replay = _replaying(messages, receive)
    if body is None:
        return replay, None, None
    value = _decode(body)
    if isinstance(value, _Refusal):
        return replay, str(value), None
    return replay, None, (body, value)


# The body the middleware decoded, with its bytes, so that GraphQL takes the value
# instead of decoding the same bytes a second time (see :func:`decoded`).
_DECODED: ContextVar[tuple[bytes, object] | None] = ContextVar("vigil_decoded_body", default=None)
NOT_DECODED = object()


@contextmanager
def keeping_decoded(kept: tuple[bytes, object] | None) -> Iterator[None]:
    """Within the block, :func:`decoded` answers for the body of ``kept``."""
    token = _DECODED.set(kept)
    try:
        yield
    finally:
        _DECODED.reset(token)


def decoded(data: bytes) -> object:
    """The value of ``data`` as the middleware decoded it for this request (taken
    once), or :data:`NOT_DECODED`."""
    kept = _DECODED.get()
    if kept is not None and kept[0] == data:
        _DECODED.set(None)
        return kept[1]
    return NOT_DECODED


class _Refusal(str):
    __slots__ = ()


def refusal(body: bytes) -> str | None:
    """Why a JSON body cannot be read safely, or None when it can."""
    value = _decode(body)
    return str(value) if isinstance(value, _Refusal) else None


def _decode(body: bytes) -> object:
    """The decoded body, or the reason (a :class:`_Refusal`) it cannot be read safely."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return _Refusal("the body is not UTF-8")
    try:
        return bounded_json.loads(
            text,
            max_depth=MAX_BODY_DEPTH,
            parse_int=_bounded_int,
            parse_constant=_no_constant,
            object_pairs_hook=_unique_keys,
        )
    except bounded_json.TooDeep:
        return _Refusal(f"the body is nested more than {MAX_BODY_DEPTH} levels deep")
    except json.JSONDecodeError as error:
        return _Refusal(
            f"the body is not JSON: {error.msg} at line {error.lineno} column {error.colno}"
        )
    except ValueError as error:
        # Raised by the hooks below, with a message meant for the caller.
        return _Refusal(f"the body is not acceptable JSON: {error}")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # A repeated key would silently let the last value win, so two readers of one body
    # could disagree on what it says; the inbound door refuses it too.
    found: dict[str, object] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"the key {key[:40]!r} appears twice in one object")
        found[key] = value
    return found


async def refuse(send: Send, reason: str) -> None:
    """Answer 400 in the shape of Litestar's own client errors."""
    await _answer(send, 400, {"status_code": 400, "detail": reason})


async def too_many_requests(send: Send, retry_after_seconds: int) -> None:
    """Answer 429 with a GraphQL-shaped error, so clients read it as any other error."""
    message = f"too many requests for this tenant: retry after {retry_after_seconds} s"
    body = {
        "data": None,
        "errors": [
            {
                "message": message,
                "extensions": {"code": "RATE_LIMITED", "retryAfter": retry_after_seconds},
            }
        ],
    }
    await _answer(send, 429, body, [(b"retry-after", str(retry_after_seconds).encode())])


async def _answer(
    send: Send, status: int, body: object, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    content = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(content)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": content, "more_body": False})


def _is_json(headers: Headers) -> bool:
    # Strawberry decodes every body whose media type contains this.
    media_type = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    return "application/json" in media_type


def _announced_over(headers: Headers, max_bytes: int) -> bool:
    length = headers.get("Content-Length")
    return length is not None and (not length.isdigit() or int(length) > max_bytes)


async def _read(receive: Receive, max_bytes: int) -> tuple[list[ReceiveMessage], bytes | None]:
    """The messages read, and the whole body unless it could not be read within
    ``max_bytes`` (or the client went away)."""
    messages: list[ReceiveMessage] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            return messages, None
        if not message.get("more_body", False):
            return messages, b"".join(chunks)


def _replaying(messages: list[ReceiveMessage], receive: Receive) -> Receive:
    pending = deque(messages)

    async def replay() -> ReceiveMessage:
        if pending:
            return pending.popleft()
        return await receive()

    return replay


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise ValueError(f"a number has more than {MAX_NUMBER_DIGITS} digits")
    return int(digits)


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")
