"""End-to-end set-up: the real ``vigil`` sub-commands, started as an operator would.

:func:`start_vigil` starts a sub-command with the test settings in its environment,
writes its JSON log to a file and waits until it logs that it is ready. Whatever a test
leaves running is killed when it ends.

The integration fixtures (database engines, tenants, the broker topology) are shared
with the tests here. Tests marked ``disruptive`` (they stop the shared broker, say) run
after every other test of the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import pytest

from tests.integration.conftest import (  # noqa: F401 - fixtures shared with this folder
    amqp,
    app_engine,
    migrated,
    names,
    owner_engine,
    quiet_outbox,
    relay_engine,
    settings,
    tenant,
    uow_factory,
)

ROOT = Path(__file__).resolve().parents[2]
READY_SECONDS = 30.0
STOP_SECONDS = 15.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "disruptive: disturbs a shared service; runs after every other test"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)


class VigilProcess:
    """A running ``vigil`` sub-command and its log."""

    def __init__(self, command: str, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self.command = command
        self.popen = popen
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> list[dict[str, Any]]:
        """The JSON lines logged so far (other lines, such as a traceback, skipped)."""
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    lines.append(entry)
        return lines

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [entry for entry in self.log() if entry.get("event") == event]

    async def wait_logged(self, event: str, *, seconds: float = READY_SECONDS) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while True:
            found = self.logged(event)
            if found:
                return found[0]
            if not self.running:
                raise AssertionError(f"vigil {self.command} exited: {self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"vigil {self.command} never logged {event!r}")
            await asyncio.sleep(0.05)

    def send(self, signum: signal.Signals) -> None:
        self.popen.send_signal(signum)

    async def wait(self, *, seconds: float = STOP_SECONDS) -> int:
        """Wait for the process to exit and return its exit code."""
        deadline = time.monotonic() + seconds
        while self.running:
            if time.monotonic() > deadline:
                raise AssertionError(f"vigil {self.command} did not exit: {self.output()}")
            await asyncio.sleep(0.05)
        return int(self.popen.returncode)

    async def stop(self) -> int:
        """SIGTERM, as a supervisor stops a process; return the exit code."""
        self.send(signal.SIGTERM)
        return await self.wait()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


StartVigil = Callable[..., Awaitable[VigilProcess]]


def _spawn(
    argv: list[str], env: Mapping[str, str] | None, log_file: IO[bytes]
) -> subprocess.Popen[bytes]:
    # Popen returns once the child is forked; nothing here waits on the child.
    return subprocess.Popen(
        [sys.executable, "-m", "vigil", *argv],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )


@pytest.fixture
def start_vigil(tmp_path: Path) -> Iterator[StartVigil]:
    """Start ``vigil <command> [args]``: ``env`` adds settings (``VIGIL_...``) to the
    test ones, ``ready`` is the log event to wait for (none: do not wait)."""
    started: list[tuple[VigilProcess, IO[bytes]]] = []

    async def start(
        command: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        ready: str | None = None,
    ) -> VigilProcess:
        log_path = tmp_path / f"{command}-{len(started)}.log"
        log_file = log_path.open("wb")
        process = VigilProcess(command, _spawn([command, *args], env, log_file), log_path)
        started.append((process, log_file))
        if ready is not None:
            await process.wait_logged(ready)
        return process

    yield start
    for process, log_file in started:
        if process.running:
            process.popen.kill()
        process.popen.wait(timeout=STOP_SECONDS)
        log_file.close()
