#!/usr/bin/env python3
# A command-line program: what it prints is its output (the lint bans print in the library).
# ruff: noqa: T201
"""The database's safety net around a deploy.

    python3 backup.py create [--keep N]   before the deploy (N newest backups kept, default 5)
    python3 backup.py restore             on failure: only when migrate.py left its marker

Both run in the release directory with DEPLOY_RELEASE and DEPLOY_APP_ROOT (or DEPLOY_ROOT) set.
`create` writes $ROOT/shared/backups/<release>/: database.sqlite3 (a consistent copy made with
sqlite3's backup API, safe while the app writes) and storage.tar.gz (storage/ without the
database and the backups). Exit codes: 0 done (or nothing to do, said why), 1 failed, 2 usage.
Backups are not encrypted here (the real CHOM encrypts them with BACKUP_ENCRYPTION_KEY); they are
kept 0700/0600, readable by the deploy user only.
"""

import argparse
import os
import shutil
import sqlite3
import sys
import tarfile
from pathlib import Path

import appenv

NO_DATABASE = "NO-DATABASE"  # a backup taken before the first migration: nothing to copy


def backups():
    return appenv.app_root() / "shared" / "backups"


def create(keep):
    config, release = appenv.settings(), appenv.release()
    db_path, dest = appenv.database(config), backups() / release
    os.umask(0o077)  # backups hold the app's data: the deploy user's alone
    dest.mkdir(parents=True, exist_ok=True)
    if not db_path.exists():
        (dest / NO_DATABASE).write_text(f"{db_path} did not exist before {release}\n")
        print(f"no database yet ({db_path}): nothing to back up")
        return 0
    (dest / NO_DATABASE).unlink(missing_ok=True)
    tmp = dest / "database.sqlite3.tmp"
    tmp.unlink(missing_ok=True)
    src, copy = sqlite3.connect(db_path), sqlite3.connect(tmp)
    try:
        src.backup(copy)
    finally:
        src.close()
        copy.close()
    os.replace(tmp, dest / "database.sqlite3")
    files = tar_storage(dest / "storage.tar.gz", db_path)
    print(f"backed up {db_path} and storage/ ({files} files) to {dest}")
    pruned = prune(dest.parent, keep)
    if pruned:
        print(f"removed older backups (keeping {keep}): {', '.join(pruned)}")
    return 0


def tar_storage(target, db_path):
    """storage/ as a tar.gz (written aside, then renamed), without the database and its
    journals (copied above, consistently) and without the backups; returns the file count."""
    storage = appenv.storage().resolve()
    db = db_path.resolve()
    skip = {db, *(db.with_name(db.name + s) for s in ("-journal", "-wal", "-shm"))}
    backups_dir = backups().resolve()
    count = 0

    def member(info):
        nonlocal count
        path = storage / info.name.removeprefix("storage").lstrip("/")
        if path in skip or backups_dir in (path, *path.parents):
            return None
        count += info.isfile()
        return info

    tmp = target.with_name(target.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(storage, arcname="storage", filter=member)
    os.replace(tmp, target)
    return count


def prune(backups, keep):
    """Keep the `keep` most recently written backups (by modification time, then name)."""
    entries = sorted((p for p in backups.iterdir() if p.is_dir()),
                     key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
    for old in entries[keep:]:
        shutil.rmtree(old)
    return sorted(p.name for p in entries[keep:])


def restore():
    marker, release = appenv.marker(), appenv.release()
    if not marker.exists():
        print("no migration ran: nothing to restore")
        return 0
    db_path, source = appenv.database(appenv.settings()), backups() / release
    if (source / NO_DATABASE).exists():
        # Before this release there was no database: the half-migrated one is set aside, not
        # deleted, and the next deploy starts from an empty schema again.
        aside = db_path.with_name(f"{db_path.name}.failed-{release}")
        if db_path.exists():
            os.replace(db_path, aside)
        marker.unlink()
        print(f"database set aside as {aside.name}: there was none before release {release}")
        return 0
    if not (source / "database.sqlite3").exists():
        print(f"cannot restore: no backup at {source} (the marker {marker.name} stays)",
              file=sys.stderr)
        return 1
    # Atomic: a full copy next to the database, then one rename over it. A reader sees the old
    # file or the restored one, never a mix. Stale journals of the old file must not be
    # replayed onto the restored one.
    tmp = db_path.with_name(f".{db_path.name}.restore")
    shutil.copyfile(source / "database.sqlite3", tmp)
    if db_path.exists():
        shutil.copymode(db_path, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, db_path)
    for suffix in ("-journal", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    marker.unlink()
    print(f"database restored from backup {release}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="backup.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("create", help="back up the database and storage/")
    make.add_argument("--keep", type=int, default=5, help="backups kept (default 5)")
    sub.add_parser("restore", help="put the database back when a migration failed")
    args = parser.parse_args(argv)
    if args.command == "create":
        if args.keep < 1:
            parser.error("--keep must be at least 1")
        return create(args.keep)
    return restore()


if __name__ == "__main__":
    sys.exit(main())
