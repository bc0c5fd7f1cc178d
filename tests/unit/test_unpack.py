"""Unpacking the downloaded sample: plain folders and files inside the target only, on
every Python the project supports (the "data" filter came with Python 3.11.4; before
it, Vigil checks the members itself)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from vigil.datasource import DataUnavailable, unpack


def _tarball(path: Path, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for member in members:
            data = b"step,amount\n1,10.00\n" if member.isfile() else None
            if data is not None:
                member.size = len(data)
            archive.addfile(member, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _folder(name: str) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = tarfile.DIRTYPE
    return member


def _link(name: str, target: str) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = tarfile.SYMTYPE
    member.linkname = target
    return member


@pytest.fixture(params=["filter", "own checks"])
def python(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "own checks":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return str(request.param)


def test_plain_folders_and_files_are_unpacked(python: str, tmp_path: Path) -> None:
    tarball = _tarball(tmp_path / "ok.tgz", [_folder("sample"), _file("sample/transactions.csv")])
    target = tmp_path / "out"

    with tarfile.open(tarball, "r:gz") as archive:
        unpack(archive, target)

    assert (target / "sample" / "transactions.csv").read_text().startswith("step,amount")


@pytest.mark.parametrize(
    "hostile",
    [
        [_file("../escaped.csv")],
        [_folder("sample"), _link("sample/link", "/etc/passwd")],
        [_folder("sample"), _link("sample/up", "../../escaped.csv")],
    ],
    ids=["a path out of the folder", "an absolute link", "a link out of the folder"],
)
def test_an_archive_with_anything_but_plain_data_is_refused(
    python: str, tmp_path: Path, hostile: list[tarfile.TarInfo]
) -> None:
    tarball = _tarball(tmp_path / "bad.tgz", hostile)
    target = tmp_path / "nested" / "out"

    with tarfile.open(tarball, "r:gz") as archive, pytest.raises(DataUnavailable):
        unpack(archive, target)

    assert not (tmp_path / "nested" / "escaped.csv").exists()
    assert not (tmp_path / "escaped.csv").exists()
