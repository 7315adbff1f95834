#!/usr/bin/env python3
# A command-line program: what it prints is its output (the lint bans print in the library).
# ruff: noqa: T201
"""Apply, in name order, every migrations/*.sql not yet recorded in `schema_migrations`.

Usage: python3 migrate.py     (run by deployer in the release directory, DEPLOY_RELEASE set)

Prints one line per migration applied, or "nothing to migrate"; exits 1 naming the failed file
and statement. Statements run one by one in autocommit mode, as DDL does on MySQL (each
statement commits on its own): a file that fails halfway leaves its earlier statements applied
and itself unrecorded. That is why the deploy takes a backup first (backup.py create) and why
this writes the marker storage/.migrating-<release> before changing anything: the failure step
`backup.py restore` sees it and puts the backed-up database back. The marker is removed only
after a fully successful run.
"""

import sqlite3
import sys
from datetime import UTC, datetime

import appenv


def statements(sql):
    """The file's statements: split at `;` where sqlite3 says a statement is complete (so a `;`
    inside a string or a trigger body does not split), comment-only pieces dropped."""
    out, buf = [], ""
    for piece in sql.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            out.append(buf)
            buf = ""
    out.append(buf.removesuffix(";"))
    return [s.strip() for s in out if _code(s)]


def _code(statement):
    return "".join(line for line in statement.splitlines()
                   if not line.strip().startswith("--")).strip(" \t\n;")


def applied(db):
    if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'"
                      " AND name = 'schema_migrations'").fetchone():
        return set()
    return {name for (name,) in db.execute("SELECT name FROM schema_migrations")}


def main():
    path = appenv.database(appenv.settings())
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)  # autocommit: see the module docstring
    done = applied(db)
    pending = [f for f in appenv.shipped_migrations() if f.name not in done]
    marker = appenv.marker()
    if not pending:
        marker.unlink(missing_ok=True)
        print("nothing to migrate")
        return 0
    marker.write_text("".join(f"{f.name}\n" for f in pending), encoding="utf-8")
    db.execute("CREATE TABLE IF NOT EXISTS schema_migrations"
               " (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for migration in pending:
        steps = statements(migration.read_text(encoding="utf-8"))
        for number, statement in enumerate(steps, 1):
            try:
                db.execute(statement)
            except sqlite3.Error as exc:
                print(f"migration {migration.name} failed at statement {number}: {exc}",
                      file=sys.stderr)
                return 1
        db.execute("INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
                   (migration.name, datetime.now(UTC).isoformat(timespec="seconds")))
        print(f"migrated {migration.name} ({len(steps)} statement{'s' * (len(steps) != 1)})")
    db.close()
    marker.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
