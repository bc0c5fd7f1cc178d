"""The main job, as a user runs it: ``vigil demo`` on the first 5,000 transfers of the
sample bank, through the real processes, checked against the database afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from vigil import amlsim
from vigil.datasource import DataUnavailable, locate
from vigil.quality import measure, naive_flags

pytestmark = pytest.mark.e2e

LIMIT = 5_000


def _data() -> Path | None:
    try:
        return locate(None, cache=Path("/nonexistent"), url="http://127.0.0.1:9/")
    except DataUnavailable:
        return None


DATA = _data()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _demo_env() -> dict[str, str]:
    """The test settings, with ports of the demo's own so that it never meets a portal
    or metrics port in use."""
    assert DATA is not None
    # As a user's shell would run it: output to a pipe is block-buffered unless the
    # demo itself says otherwise.
    inherited = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    return {
        **inherited,
        "VIGIL_PORTAL_PORT": str(_free_port()),
        "VIGIL_RELAY_METRICS_PORT": "0",
        "VIGIL_INBOUND_METRICS_PORT": "0",
        "VIGIL_DISPATCH_METRICS_PORT": "0",
        "VIGIL_WORKER_METRICS_PORT": "0",
        "VIGIL_LOG_LEVEL": "WARNING",
        "VIGIL_DEMO_DATA": str(DATA),
    }


@pytest.mark.skipif(DATA is None, reason="the sample bank is not here")
async def test_the_demo_assesses_each_transfer_once_and_reports_what_the_database_holds(
    migrated: None, owner_engine: AsyncEngine, tmp_path: Path
) -> None:
    env = _demo_env()
    report_path = tmp_path / "report.json"
    command = [sys.executable, "-m", "vigil", "demo", "--limit", str(LIMIT)]
    async with owner_engine.connect() as db:
        started = (await db.execute(text("SELECT now()"))).scalar_one()
        autovacuum = (await db.execute(text("SHOW autovacuum"))).scalar_one()

    finished = await asyncio.to_thread(
        subprocess.run,
        [*command, "--report-json", str(report_path)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )

    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    report = json.loads(report_path.read_text())
    tenant = uuid.UUID(_tenant_of(finished.stdout))
    transfers = list(amlsim.transfers(DATA, LIMIT))
    self_transfers = sum(1 for t in transfers if len(set(amlsim.parties(t))) == 1)

    async with owner_engine.connect() as db:

        async def one(sql: str) -> int:
            return int((await db.execute(text(sql), {"t": tenant})).scalar_one())

        events = await one("SELECT count(*) FROM events WHERE tenant_id = :t")
        not_once = await one(
            "SELECT count(*) FROM events e WHERE e.tenant_id = :t AND (SELECT count(*)"
            " FROM assessments a WHERE a.tenant_id = e.tenant_id"
            " AND a.event_id = e.event_id) <> 1"
        )
        assessments = await one("SELECT count(*) FROM assessments WHERE tenant_id = :t")
        failed = await one("SELECT count(*) FROM scoring_failures WHERE tenant_id = :t")
        cases = await one("SELECT count(*) FROM cases WHERE tenant_id = :t")
        alerts = await one("SELECT count(*) FROM alerts WHERE tenant_id = :t")
        bands = dict(
            (
                await db.execute(
                    text("SELECT band, count(*) FROM assessments WHERE tenant_id = :t GROUP BY 1"),
                    {"t": tenant},
                )
            ).all()
        )
        flagged = set(
            (
                await db.execute(
                    text(
                        "SELECT s.external_ref FROM subjects s WHERE s.tenant_id = :t AND"
                        " EXISTS (SELECT 1 FROM alerts a WHERE a.tenant_id = s.tenant_id"
                        " AND a.subject_id = s.subject_id)"
                    ),
                    {"t": tenant},
                )
            ).scalars()
        )
        # The report read statistics taken after the replay, and where autovacuum is
        # off the demo vacuumed the queue tables itself.
        upkeep = dict(
            (
                await db.execute(
                    text(
                        "SELECT relname, CASE WHEN relname = 'outbox'"
                        " THEN :autovacuum OR last_vacuum >= :started"
                        " ELSE greatest(last_analyze, last_autoanalyze) >= :started END"
                        " FROM pg_stat_user_tables WHERE relname IN ('events', 'assessments',"
                        " 'outbox')"
                    ),
                    {"started": started, "autovacuum": autovacuum == "on"},
                )
            ).all()
        )
        slowest = (
            await db.execute(
                text(
                    "SELECT max(a.scored_at - e.received_at) FROM events e JOIN assessments a"
                    " USING (tenant_id, event_id) WHERE e.tenant_id = :t"
                ),
                {"t": tenant},
            )
        ).scalar_one()

    # Every transfer the door accepted was stored, and each assessed exactly once.
    assert events == LIMIT - self_transfers
    assert report["refused"] == self_transfers
    assert not_once == 0
    assert failed == 0
    assert assessments == events == report["events"] == report["assessments"]
    assert report["exactly_once"] is True
    # Scoring found something, and the report says what the database holds.
    assert cases > 0
    assert sum(report["by_band"]["cases"].values()) == cases
    assert sum(report["by_band"]["alerts"].values()) == alerts
    assert report["by_band"]["assessments"] == bands
    assert set(report["flagged"]) == flagged
    labelled = amlsim.laundering_accounts(DATA)
    universe = {account for t in transfers for account in amlsim.parties(t)}
    expected = measure(flagged, labelled, universe)
    assert report["quality"]["true_positives"] == expected.true_positives
    assert report["quality"]["f1"] == pytest.approx(expected.f1)
    floor = measure(naive_flags(amlsim.parties(t) for t in transfers), labelled, universe)
    assert report["floor"]["f1"] == pytest.approx(floor.f1)
    assert report["latency_max_ms"] == pytest.approx(slowest.total_seconds() * 1000, abs=1)
    assert 0 < report["latency_p50_ms"] <= report["latency_p99_ms"] <= report["latency_max_ms"]
    assert report["events_per_second"] > 0
    assert upkeep == {"events": True, "assessments": True, "outbox": True}
    assert ("the demo vacuums the outbox itself" in finished.stderr) is (autovacuum == "off")
    # The regulator's view of the top case was fetched and printed, with its rules.
    assert report["top_case_id"] is not None
    assert any(line.startswith("top case (read through") for line in report["top_case"])
    assert any("points, concerns the" in line for line in report["top_case"])
    # Every process's memory was read while it ran.
    assert {"relay", "inbound", "dispatcher", "portal"} <= set(report["memory"])
    assert all(m["peak"] > 0 for m in report["memory"].values())


def _tenant_of(stdout: str) -> str:
    first = stdout.splitlines()[0]
    return first.rsplit("(", 1)[1].rstrip(")")


def _children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines())
        except (OSError, ValueError):
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found


@pytest.mark.skipif(DATA is None, reason="the sample bank is not here")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_kept_running_demo_stops_its_processes_on_a_signal(
    migrated: None, tmp_path: Path, signum: signal.Signals
) -> None:
    env = _demo_env()
    # Started as a shell starts a background job: with SIGINT ignored.
    demo = subprocess.Popen(
        [sys.executable, "-m", "vigil", "demo", "--limit", "20", "--keep-running"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    children: list[int] = []
    try:
        assert demo.stdout is not None
        lines = []
        for line in demo.stdout:
            lines.append(line)
            if "Ctrl-C to stop" in line:
                break
        assert any(line.startswith("GraphiQL: http://") for line in lines), lines
        assert any(line.startswith("analyst token") for line in lines), lines
        children = _children(demo.pid)
        assert len(children) == 6  # relay, inbound, dispatcher, portal, two workers

        demo.send_signal(signum)
        demo.wait(60)

        assert demo.returncode == 0
        assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        if demo.stdout is not None:
            demo.stdout.close()
        for pid in children:  # never leave a process behind, even when the test fails
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
