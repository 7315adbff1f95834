#!/usr/bin/env python3
# A command-line program: what it prints is its output (the lint bans print in the library).
# ruff: noqa: T201
"""The queue worker stand-in (the real CHOM runs `php artisan queue:work` under supervisor).

    python3 worker.py    in a release directory (systemd: chom-worker.service, from `current`)

Every 2 s, when the database has a `jobs` table (Laravel's shape: id, queue, payload, ...), it
takes up to 10 rows in id order, logs one line each and deletes them. SIGTERM or SIGINT stops
it after the batch in hand, exit 0: a restart at deploy time never drops a job halfway.
"""

import signal
import sqlite3
import sys

import appenv

STOP = {signal.SIGTERM, signal.SIGINT}


def work(path):
    """Process one batch; how many jobs it took."""
    if not path.exists():
        return 0
    db = sqlite3.connect(path, timeout=5)
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone():
            return 0
        with db:  # one transaction per batch: a job is deleted only with its batch done
            rows = db.execute("SELECT id, queue FROM jobs ORDER BY id LIMIT 10").fetchall()
            for job_id, queue in rows:
                print(f"processed job {job_id} (queue {queue})", flush=True)
                db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return len(rows)
    finally:
        db.close()


def main():
    config = appenv.settings()
    # Blocked, then waited for: a signal that arrives mid-batch is taken at the next wait, so
    # the batch always finishes, and the wait itself ends at once on SIGTERM.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP)
    print(f"worker for release {appenv.release()} started; polling every 2 s", flush=True)
    while True:
        try:
            work(appenv.database(config))
        except sqlite3.Error as exc:
            print(f"batch failed, retrying: {exc}", file=sys.stderr, flush=True)
        got = signal.sigtimedwait(STOP, 2.0)
        if got is not None:
            print(f"worker stopping on {signal.Signals(got.si_signo).name}", flush=True)
            return 0


if __name__ == "__main__":
    sys.exit(main())
