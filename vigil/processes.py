"""Start and stop Vigil's own processes, as an operator would (used by the demo)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


@dataclass
class Processes:
    env: dict[str, str]
    log_dir: Path
    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(
        self, command: str, *args: str, name: str | None = None, **env: str
    ) -> subprocess.Popen[bytes]:
        """Start ``vigil command args``; ``name`` (the command by default) names its log,
        ``env`` adds to the environment of this process alone."""
        name = name or command
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "vigil", command, *args],
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.started.append((name, process))
        return process

    def memory(self) -> dict[str, tuple[float, float]]:
        """Each running process's peak and current resident memory, in MiB."""
        found = {}
        for name, process in self.started:
            if process.poll() is None and (memory := resident_memory(process.pid)) is not None:
                found[name] = memory
        return found

    def exited(self) -> list[str]:
        return [name for name, process in self.started if process.poll() is not None]

    def stop(self, timeout: float = 15.0) -> None:
        for _, process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, process in self.started:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
        self.started.clear()


def resident_memory(pid: int) -> tuple[float, float] | None:
    """``VmHWM`` (the peak) and ``VmRSS`` of a Linux process in MiB; None elsewhere."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {}
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0]) / 1024
    if len(values) < 2:
        return None
    return values["VmHWM"], values["VmRSS"]


def wait_until_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready in {timeout:.0f} s")


def child_environment(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(overrides)
    return env
