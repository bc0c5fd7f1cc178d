"""``vigil token`` answers a mistyped role with the roles it knows, not a traceback."""

from __future__ import annotations

import uuid

import pytest

from vigil.cli import main


def test_an_unknown_role_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["token", "--tenant", str(uuid.uuid4()), "--roles", "analyst,superviser"])

    message = str(stopped.value.code)
    assert "superviser" in message
    assert "supervisor" in message
    assert "regulator" in message


def test_known_roles_mint_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--tenant", str(uuid.uuid4()), "--roles", "analyst, supervisor"]) == 0
    assert capsys.readouterr().out.count(".") == 2
