"""Where the demo's data comes from: a download is used only when its SHA-256 matches,
and a refused or broken download leaves nothing in the cache.

A local HTTP server on 127.0.0.1 serves the real tarball, a corrupted copy and a
truncated response, as the public address would."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from vigil.datasource import (
    SAMPLE_SHA256,
    DataUnavailable,
    beside_repository,
    fetch,
    has_data,
    locate,
)

TARBALL = "20K_fanin200cycle200.tgz"


def _real_tarball() -> Path | None:
    configured = os.environ.get("VIGIL_DEMO_DATA")
    for folder in (Path(configured) if configured else None, beside_repository()):
        if folder is not None and (folder / TARBALL).is_file():
            return folder / TARBALL
    return None


REAL = _real_tarball()
pytestmark = pytest.mark.skipif(REAL is None, reason="the sample tarball is not here")


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/truncated.tgz":
            # Promise the whole tarball, send a tenth of it, and hang up.
            body = (Path(self.directory) / "good.tgz").read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 10])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    served = tmp_path / "served"
    served.mkdir()
    assert REAL is not None
    good = REAL.read_bytes()
    (served / "good.tgz").write_bytes(good)
    corrupted = bytearray(good)
    corrupted[len(corrupted) // 2] ^= 0xFF
    (served / "corrupted.tgz").write_bytes(bytes(corrupted))
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_Handler, directory=str(served))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _left_in(cache: Path) -> list[Path]:
    return sorted(cache.rglob("*")) if cache.exists() else []


def test_the_real_tarball_is_downloaded_verified_and_unpacked(server: str, tmp_path: Path) -> None:
    assert REAL is not None
    assert hashlib.sha256(REAL.read_bytes()).hexdigest() == SAMPLE_SHA256
    cache = tmp_path / "cache"

    folder = fetch(cache, url=f"{server}/good.tgz")

    assert has_data(folder)
    assert (folder / "transactions.csv").read_bytes() == (
        REAL.parent / "transactions.csv"
    ).read_bytes()
    # No temporary file or folder is left beside it.
    assert [p for p in cache.iterdir()] == [folder]


def test_a_second_run_uses_the_cache_without_downloading(server: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = fetch(cache, url=f"{server}/good.tgz")

    # The address now answers 404: only the cache can satisfy this call.
    again = fetch(cache, url=f"{server}/gone.tgz")

    assert again == first


def test_a_corrupted_download_is_refused_and_the_cache_stays_empty(
    server: str, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"

    with pytest.raises(DataUnavailable, match="SHA-256"):
        fetch(cache, url=f"{server}/corrupted.tgz")

    assert _left_in(cache) == []
    # The good tarball is still fetched afterwards: nothing of the bad one poisoned it.
    assert has_data(fetch(cache, url=f"{server}/good.tgz"))


def test_a_download_cut_short_is_not_kept(server: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"

    with pytest.raises(DataUnavailable):
        fetch(cache, url=f"{server}/truncated.tgz")

    assert _left_in(cache) == []


def test_a_missing_tarball_is_a_clear_error(server: str, tmp_path: Path) -> None:
    with pytest.raises(DataUnavailable, match="could not download"):
        fetch(tmp_path / "cache", url=f"{server}/missing.tgz")


def test_a_named_folder_without_the_data_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailable, match=r"transactions\.csv"):
        locate(tmp_path)
