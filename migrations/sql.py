"""Running plain SQL scripts from migrations."""

from __future__ import annotations

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
