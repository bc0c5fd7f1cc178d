"""The main job, as a user runs it: `vigil demo` on a few transfers of the sample bank."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vigil.amlsim import default_data

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.skipif(
    not (default_data() / "transactions.csv").exists(), reason="the sample bank is not here"
)
def test_the_demo_assesses_every_transfer_it_sends(migrated: None, tmp_path: Path) -> None:
    env = dict(os.environ)
    # Ports of its own, so that the demo never meets a portal or metrics port in use.
    env.update(
        VIGIL_PORTAL_PORT=str(_free_port()),
        VIGIL_RELAY_METRICS_PORT="0",
        VIGIL_INBOUND_METRICS_PORT="0",
        VIGIL_DISPATCH_METRICS_PORT="0",
        VIGIL_WORKER_METRICS_PORT="0",
        VIGIL_LOG_LEVEL="WARNING",
    )

    finished = subprocess.run(
        [sys.executable, "-m", "vigil", "demo", "--limit", "40"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert finished.returncode == 0, finished.stderr[-3000:]
    lines = finished.stdout.splitlines()
    assert "events stored: 40 (of 40 sent)" in lines, finished.stdout
    assert "assessed: 40, failed: 0" in lines, finished.stdout
    assert any(line.startswith("audit chain verified:") for line in lines)
