"""Running plain SQL scripts from migrations."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op


def statements(script: str) -> list[str]:
    """Split a script at semicolons that end a line outside a $$-quoted body."""
    found, current, quoted = [], [], False
    for line in script.splitlines():
        current.append(line)
        quoted ^= line.count("$$") % 2 == 1
        if not quoted and line.rstrip().endswith(";"):
            found.append("\n".join(current).strip())
            current = []
    if "\n".join(current).strip():
        found.append("\n".join(current).strip())
    return found


def run(script: str) -> None:
    for statement in statements(script):
        op.execute(statement)


def run_concurrently(statements: tuple[str, ...]) -> None:
    """Run statements outside a transaction, as ``CREATE INDEX CONCURRENTLY`` must be."""
    with op.get_context().autocommit_block():
        for statement in statements:
            op.execute(statement)


def upgrade_script_of(revision_file: str) -> str:
    """The ``UPGRADE`` script of an earlier revision, read from its file beside this
    one's, so that a downgrade can restore what that revision made without a copy."""
    path = Path(__file__).with_name("versions") / revision_file
    spec = importlib.util.spec_from_file_location(f"vigil_revision_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"revision {revision_file} is not readable")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    script: str = module.UPGRADE
    return script
