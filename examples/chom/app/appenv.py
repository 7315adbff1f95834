"""What every program of the app reads: its settings (./.env and the environment), the release
it belongs to and the paths of a deploy's layout. Stdlib only: the servers have python3 alone."""

import os
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent  # the release directory (or the checkout)
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DOUBLE_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
ESCAPE = re.compile(r"\\(.)")


def read_env(path):
    """KEY=value lines as systemd's EnvironmentFile= reads them, which is how deployer renders
    them: KEY="value" (\\" \\\\ \\$ and \\` stand for the character itself), KEY='value' (as
    is) or KEY=value; lines starting with # or ; are comments. Never sourced or evaluated: a
    value cannot run as a command. A quote outside quotes is refused rather than guessed at."""
    values = {}
    with open(path, encoding="utf-8", newline="") as f:
        for number, line in enumerate(f.read().split("\n"), 1):
            text = line.strip(" \t\r")
            if not text or text.startswith(("#", ";")):
                continue
            key, eq, value = text.partition("=")
            key, value = key.strip(" \t"), value.strip(" \t")
            if not eq or not KEY.fullmatch(key):
                raise ValueError(f"{path}:{number}: not KEY=value")
            if quoted := DOUBLE_QUOTED.fullmatch(value):
                value = ESCAPE.sub(lambda m: m[1] if m[1] in '"\\$`' else m[0], quoted[1])
            elif len(value) >= 2 and value[0] == value[-1] == "'" and "'" not in value[1:-1]:
                value = value[1:-1]
            elif any(c in value for c in "\"'\\"):
                raise ValueError(f"{path}:{number}: {key}: a quote or backslash outside quotes")
            values[key] = value
    return values


def settings():
    """./.env, with the process environment winning (as Laravel's phpdotenv does): under
    systemd both hold the same file, in a shell a variable set by hand overrides it."""
    path = HERE / ".env"
    values = read_env(path) if path.exists() else {}
    return {**values, **os.environ}


def release():
    """The release this code belongs to: deployer says so in steps; under systemd the release
    directory's own name (releases/<release>, reached through `current`) says it."""
    return os.environ.get("DEPLOY_RELEASE") or HERE.name


def database(config):
    return Path(config.get("DB_DATABASE") or HERE / "storage" / "database.sqlite3")


def storage():
    return HERE / "storage"


def marker():
    """Written by migrate.py before it changes the schema, removed when every migration went
    in: while it exists, the database may be half-migrated and backup.py restore puts it back."""
    return storage() / f".migrating-{release()}"


def shipped_migrations():
    return sorted((HERE / "migrations").glob("*.sql"))


def app_root():
    """The app root holding releases/, shared/ and current (deployer sets DEPLOY_APP_ROOT;
    DEPLOY_ROOT is accepted too)."""
    root = os.environ.get("DEPLOY_APP_ROOT") or os.environ.get("DEPLOY_ROOT")
    if not root:
        raise SystemExit("DEPLOY_APP_ROOT (or DEPLOY_ROOT) is not set: run this as a deploy step")
    return Path(root)
