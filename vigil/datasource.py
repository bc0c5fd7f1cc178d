"""Where the demo's sample bank comes from.

In order: the folder the operator names (``--data`` or ``VIGIL_DEMO_DATA``); the copy in
``shared/data/amlsim`` beside the repository; else the public tarball, downloaded once
into a cache folder. The repository does not carry the data.

A download is trusted only after its SHA-256 matches the published one. It is written
to a temporary file in the cache and unpacked into a temporary folder, and only a
verified, fully unpacked copy is moved into place, so an interrupted or corrupted
download never leaves anything the next run would take for the data.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import httpx

SAMPLE_URL = "https://github.com/IBM/AMLSim/raw/master/sample/20K_fanin200cycle200.tgz"
SAMPLE_SHA256 = "f187bc5784223cdee137ac603164f7183fd58f114090f39e2a12543b6bf48319"
# The tarball's only folder; it holds transactions.csv, nodes.csv and metadata.txt.
SAMPLE_FOLDER = "20K_fanin200cycle200"
REQUIRED = ("transactions.csv", "nodes.csv")
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
REPO = Path(__file__).resolve().parent.parent


class DataUnavailable(Exception):
    """No usable copy of the sample bank could be found or fetched."""


def default_cache() -> Path:
    configured = os.environ.get("VIGIL_DEMO_CACHE")
    return Path(configured) if configured else REPO / ".cache" / "amlsim"


def beside_repository() -> Path:
    return REPO.parent / "shared" / "data" / "amlsim"


def has_data(folder: Path) -> bool:
    return all((folder / name).is_file() for name in REQUIRED)


def locate(
    given: Path | None,
    *,
    cache: Path | None = None,
    url: str = SAMPLE_URL,
    sha256: str = SAMPLE_SHA256,
) -> Path:
    """The folder of the sample bank, downloading it into ``cache`` if no copy is near."""
    if given is None and (configured := os.environ.get("VIGIL_DEMO_DATA")):
        given = Path(configured)
    if given is not None:
        if not has_data(given):
            raise DataUnavailable(f"{given} holds no {' and '.join(REQUIRED)}")
        return given
    if has_data(beside_repository()):
        return beside_repository()
    return fetch(cache or default_cache(), url=url, sha256=sha256)


def fetch(cache: Path, *, url: str = SAMPLE_URL, sha256: str = SAMPLE_SHA256) -> Path:
    """The unpacked sample in ``cache``, downloaded and verified first if not there."""
    target = cache / sha256[:16]
    if has_data(target):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".partial-") as scratch:
        tarball = Path(scratch) / "sample.tgz"
        _download(url, tarball, sha256)
        unpacked = Path(scratch) / "unpacked"
        with tarfile.open(tarball, "r:gz") as archive:
            unpack(archive, unpacked)
        folder = unpacked / SAMPLE_FOLDER
        if not has_data(folder):
            raise DataUnavailable(f"the tarball from {url} holds no {SAMPLE_FOLDER}/ data")
        shutil.rmtree(target, ignore_errors=True)
        folder.rename(target)
    return target


def unpack(archive: tarfile.TarFile, destination: Path) -> None:
    """Extract only plain folders and files that land inside ``destination``; refuse
    the whole archive otherwise. The sample holds nothing else, and a download is
    not trusted until it is on disk."""
    if hasattr(tarfile, "data_filter"):
        # Python 3.11.4 and later: the "data" filter refuses absolute paths, links,
        # devices and anything that would land outside the folder.
        try:
            archive.extractall(destination, filter="data")
        except tarfile.FilterError as error:
            raise DataUnavailable(f"the tarball holds what is not plain data: {error}") from None
        return
    root = destination.resolve()
    members = archive.getmembers()
    for member in members:
        landing = (root / member.name).resolve()
        if not (member.isfile() or member.isdir()) or not landing.is_relative_to(root):
            raise DataUnavailable(f"the tarball holds {member.name!r}, which is not plain data")
    for member in members:
        archive.extract(member, root, set_attrs=False)


def _download(url: str, destination: Path, sha256: str) -> None:
    digest = hashlib.sha256()
    size = 0
    try:
        with (
            httpx.stream("GET", url, follow_redirects=True, timeout=60.0) as response,
            destination.open("wb") as out,
        ):
            response.raise_for_status()
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise DataUnavailable(f"{url} is larger than {MAX_DOWNLOAD_BYTES} bytes")
                digest.update(chunk)
                out.write(chunk)
    except httpx.HTTPError as error:
        raise DataUnavailable(f"could not download {url}: {error}") from error
    if digest.hexdigest() != sha256:
        raise DataUnavailable(
            f"the download from {url} has SHA-256 {digest.hexdigest()}, not {sha256}: refused"
        )
