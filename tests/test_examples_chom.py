"""examples/chom: the stand-ins and the app's programs, run as real processes on 127.0.0.1 (free
ports, no root), in a temporary directory laid out as deployer lays out a host's app root."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tarfile
import types
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deployer import templates
from deployer.sandbox.endpoint import free_port

from conftest import REPO, http_get, wait_for

CHOM = REPO / "examples" / "chom"
APP = CHOM / "app"
STANDIN = CHOM / "standins" / "standin.py"
PYTHON = sys.executable  # 3.11 like Debian 12's python3; the programs use its stdlib alone
REDIS_PASSWORD = 'pa$s "w`o\\rd'  # what the env format must carry byte for byte
BAD_MIGRATION = "CREATE TABLE invoices (id INTEGER PRIMARY KEY);\nALTER TABLE no_such_table ADD COLUMN x;\n"


def answers(url: str, status: int = 200) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return http_get(url)[0] == status
        except (urllib.error.URLError, OSError):
            return False
    return check


def base_env(**extra: str) -> dict[str, str]:
    """A clean environment: nothing of the test runner's leaks into the programs' settings."""
    return {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **extra}


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start a process with its output in tmp_path/<name>.log; every one is stopped at the end."""
    started: list[subprocess.Popen] = []

    def start(name: str, argv: list[str], *, cwd: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen:
        with (tmp_path / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(argv, cwd=cwd, env=env or base_env(), stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
    for proc in started:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def standin(spawn, service: str, *args: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = spawn(service, [PYTHON, str(STANDIN), service, "--bind", "127.0.0.1", "--port", str(port),
                           *args])
    return proc, port


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=10)


# --- the stand-ins ----------------------------------------------------------------------------

@pytest.mark.parametrize("argv, says", [
    (["nope"], "invalid choice: 'nope'"),
    ([], "required: SERVICE"),
    (["grafana", "--port", "http"], "'http' is not a TCP port"),
    (["grafana", "--config", "/etc/chom/prometheus.yml"], "--config is for prometheus"),
    (["prometheus", "--password-file", "/etc/chom/redis.pass"], "--password-file is for redis"),
])
def test_standin_usage_errors_are_one_line_and_exit_2(argv: list[str], says: str) -> None:
    run = subprocess.run([PYTHON, str(STANDIN), *argv], capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and says in run.stderr, run.stderr


def render_prometheus(path: Path, **values: str) -> None:
    ctx = {"observability_private_ip": "10.0.0.1", "app_private_ip": "10.0.0.2", **values}
    path.write_text(templates.render_file(CHOM / "config" / "prometheus.yml.j2", ctx))


def test_prometheus_answers_and_rereads_retention_on_sighup(spawn, tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    render_prometheus(config, prometheus_retention="30d")
    assert '"10.0.0.1:9100", "10.0.0.2:9100"' in config.read_text()
    proc, port = standin(spawn, "prometheus", "--config", str(config))
    url = f"http://127.0.0.1:{port}"
    assert wait_for(answers(f"{url}/-/healthy"))
    assert http_get(f"{url}/-/healthy") == (200, "Prometheus Server is Healthy.\n")
    assert http_get(f"{url}/-/ready") == (200, "Prometheus Server is Ready.\n")
    assert http_get(f"{url}/nope")[0] == 404

    def retention() -> str:
        status, body = http_get(f"{url}/api/v1/status/flags")
        assert status == 200 and json.loads(body)["status"] == "success"
        return json.loads(body)["data"]["storage.tsdb.retention.time"]

    assert retention() == "30d"
    render_prometheus(config, prometheus_retention="45d")
    proc.send_signal(signal.SIGHUP)  # what ExecReload=/bin/kill -HUP $MAINPID does
    assert wait_for(lambda: retention() == "45d")
    config.write_text("retention: soon\n")  # refused, as Prometheus refuses a bad reload
    proc.send_signal(signal.SIGHUP)
    log = tmp_path / "prometheus.log"
    assert wait_for(lambda: "keeping the running config" in log.read_text())
    assert retention() == "45d" and proc.poll() is None
    assert stop(proc) == 0
    lines = log.read_text().splitlines()
    assert lines[0] == f"prometheus stand-in listening on 127.0.0.1:{port} (retention 30d)"
    assert "prometheus: reloaded" in lines[1] and "retention 45d" in lines[1]


def test_prometheus_default_retention_and_unreadable_config(spawn, tmp_path: Path) -> None:
    render_prometheus(tmp_path / "p.yml")  # no prometheus_retention in the env file
    proc, port = standin(spawn, "prometheus", "--config", str(tmp_path / "p.yml"))
    assert wait_for(answers(f"http://127.0.0.1:{port}/api/v1/status/flags"))
    body = json.loads(http_get(f"http://127.0.0.1:{port}/api/v1/status/flags")[1])
    assert body["data"] == {"storage.tsdb.retention.time": "15d"}
    run = subprocess.run([PYTHON, str(STANDIN), "prometheus", "--config", str(tmp_path / "none.yml")],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 1 and "cannot read" in run.stderr and run.stderr.count("\n") == 1


@pytest.mark.parametrize("service, path, body", [
    ("grafana", "/api/health", '{"commit": "stand-in", "database": "ok", "version": "stand-in"}'),
    ("loki", "/ready", "ready\n"),
    ("promtail", "/ready", "Ready\n"),
    ("alertmanager", "/-/healthy", "OK\n"),
])
def test_http_standins_answer_like_the_real_services(spawn, service: str, path: str, body: str) -> None:
    proc, port = standin(spawn, service)
    assert wait_for(answers(f"http://127.0.0.1:{port}{path}"))
    assert http_get(f"http://127.0.0.1:{port}{path}") == (200, body)
    if service == "grafana":
        assert json.loads(body) == {"commit": "stand-in", "database": "ok", "version": "stand-in"}
    assert stop(proc) == 0


def test_node_exporter_serves_prometheus_text_format(spawn) -> None:
    _, port = standin(spawn, "node-exporter")
    assert wait_for(answers(f"http://127.0.0.1:{port}/metrics"))
    text = http_get(f"http://127.0.0.1:{port}/metrics")[1]
    samples = dict(line.split(" ") for line in text.splitlines() if not line.startswith("#"))
    assert {"node_boot_time_seconds", "node_load1", "node_load5", "node_load15"} <= set(samples)
    assert float(samples["node_boot_time_seconds"]) > 1e9 and float(samples["node_load1"]) >= 0
    assert "# TYPE node_load1 gauge" in text


def resp(*words: str) -> bytes:
    """A command as clients send it: a RESP array of bulk strings."""
    data = [w.encode() for w in words]
    return b"*%d\r\n" % len(data) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in data)


def ask(port: int, *commands: bytes) -> list[str]:
    """One connection, the commands in order; each reply as text (a bulk string's value)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        stream = conn.makefile("rwb")
        stream.write(b"".join(commands))
        stream.flush()
        replies = []
        for _ in commands:
            line = stream.readline().rstrip(b"\r\n")
            if line.startswith(b"$") and line != b"$-1":
                line = stream.readline().rstrip(b"\r\n")
            replies.append(line.decode())
        return replies


def password_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "redis.pass"
    path.write_text(templates.render_file(CHOM / "config" / "redis.pass.j2",
                                          {"redis_password": REDIS_PASSWORD}))
    path.chmod(mode)
    return path


def test_redis_wants_auth_then_pings_sets_and_gets(spawn, tmp_path: Path) -> None:
    proc, port = standin(spawn, "redis", "--password-file", str(password_file(tmp_path)))
    assert wait_for(lambda: (tmp_path / "redis.log").read_text().startswith("redis stand-in"))
    assert ask(port, resp("PING"), resp("GET", "k")) == ["-NOAUTH Authentication required."] * 2
    assert ask(port, resp("AUTH", "wrong"), resp("PING")) == [
        "-WRONGPASS invalid username-password pair or user is disabled.",
        "-NOAUTH Authentication required."]
    assert ask(port, resp("AUTH", REDIS_PASSWORD), resp("PING"), resp("SET", "k", "v 1"),
               resp("GET", "k"), resp("GET", "missing"), resp("PING", "hi")) == [
        "+OK", "+PONG", "+OK", "v 1", "$-1", "hi"]
    # The Redis 6 form of AUTH, and inline commands (what `nc` sends), work too.
    assert ask(port, resp("AUTH", "default", REDIS_PASSWORD), b"GET k\r\n", b"PING\r\n") == [
        "+OK", "v 1", "+PONG"]
    assert ask(port, resp("AUTH", REDIS_PASSWORD), resp("FLUSHALL"))[1].startswith("-ERR unknown command")
    assert stop(proc) == 0


def test_redis_refuses_a_password_file_others_can_read(tmp_path: Path) -> None:
    run = subprocess.run([PYTHON, str(STANDIN), "redis", "--port", str(free_port()), "--bind",
                          "127.0.0.1", "--password-file", str(password_file(tmp_path, 0o644))],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 1 and "mode 0644; make it 0600" in run.stderr


# --- templates --------------------------------------------------------------------------------

def load_appenv() -> types.ModuleType:
    """The app's settings reader, loaded from its file (without writing bytecode beside it)."""
    path = APP / "appenv.py"
    module = types.ModuleType("chom_appenv")
    module.__file__ = str(path)
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    return module


ENV_CTX = {"app_root": "/var/www/chom", "domain": "chom.example.com", "app_key": "base64:k$y=",
           "redis_password": REDIS_PASSWORD, "jwt_secret": "j'w\"t", "backup_encryption_key": "b\\k",
           "email": "ops@example.com", "deploy_user": "stilgar"}


def test_app_env_reaches_the_app_byte_for_byte(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(templates.render_file(CHOM / "config" / "app.env.j2", ENV_CTX, "env"))
    values = load_appenv().read_env(env)
    assert values["REDIS_PASSWORD"] == REDIS_PASSWORD and values["JWT_SECRET"] == "j'w\"t"
    assert values["APP_KEY"] == "base64:k$y=" and values["BACKUP_ENCRYPTION_KEY"] == "b\\k"
    assert values["APP_URL"] == "http://chom.example.com" and values["MAIL_FROM"] == "ops@example.com"
    assert values["DB_DATABASE"] == "/var/www/chom/shared/storage/database.sqlite3"
    assert values["DB_CONNECTION"] == "sqlite" and values["APP_NAME"] == "CHOM"


def test_unit_templates_render_with_deployer_values() -> None:
    units = {p.name.removesuffix(".service.j2"): templates.render_file(p, ENV_CTX)
             for p in (CHOM / "units").glob("*.service.j2")}
    assert set(units) == {f"chom-{n}" for n in ("prometheus", "grafana", "loki", "promtail",
                                                "alertmanager", "node-exporter", "redis", "app",
                                                "worker")}
    for name in ("chom-app", "chom-worker"):
        for line in ("User=stilgar", "WorkingDirectory=/var/www/chom/current",
                     "EnvironmentFile=/var/www/chom/shared/.env"):
            assert f"\n{line}\n" in units[name], (name, line)
    assert "ExecStart=/usr/bin/python3 app.py\n" in units["chom-app"]
    assert "ExecReload=/bin/kill -HUP $MAINPID\n" in units["chom-prometheus"]
    assert "LoadCredential=redis.pass:/etc/chom/redis.pass\n" in units["chom-redis"]
    for name, text in units.items():
        if name not in ("chom-app", "chom-worker"):
            service = name.removeprefix("chom-")
            assert f"ExecStart=/usr/bin/python3 /opt/chom/standins/standin.py {service} " in text
            assert "DynamicUser=yes\n" in text


class Layout:
    """root/releases/<name> (a copy of examples/chom/app, with ./.env and ./storage linked to
    root/shared), as deployer makes it, and the environment its steps run with."""

    def __init__(self, root: Path, redis_port: int, app_port: int):
        self.root, self.redis_port, self.app_port = root, redis_port, app_port
        self.storage = root / "shared" / "storage"
        self.storage.mkdir(parents=True)
        self.db = self.storage / "database.sqlite3"
        env = templates.render_file(CHOM / "config" / "app.env.j2", {**ENV_CTX, "app_root": str(root)}, "env")
        (root / "shared" / ".env").write_text(env)
        (root / "shared" / ".env").chmod(0o600)

    def release(self, name: str, *, extra: dict[str, str] | None = None) -> Path:
        path = self.root / "releases" / name
        shutil.copytree(APP, path, ignore=shutil.ignore_patterns("__pycache__"))
        (path / ".env").symlink_to("../../shared/.env")
        (path / "storage").symlink_to("../../shared/storage")
        for file, text in (extra or {}).items():
            (path / file).write_text(text)
        return path

    def env(self, release: str) -> dict[str, str]:
        # The environment wins over .env (as in Laravel): the test's free ports reach the app so.
        return base_env(DEPLOY_RELEASE=release, DEPLOY_APP_ROOT=str(self.root), DEPLOY_ENV="test",
                        REDIS_PORT=str(self.redis_port), PORT=str(self.app_port))

    def run(self, release: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PYTHON if argv[0].endswith(".py") else "sh", *argv],
                              cwd=self.root / "releases" / release, env=self.env(release),
                              capture_output=True, text=True, timeout=60)

    def sql(self, statement: str, *params: object) -> list[tuple]:
        with contextlib.closing(sqlite3.connect(self.db)) as db, db:
            return db.execute(statement, params).fetchall()

    def tables(self) -> set[str]:
        return {n for (n,) in self.sql("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def migrations(self) -> set[str]:
        return {n for (n,) in self.sql("SELECT name FROM schema_migrations")}


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "chom", free_port(), free_port())


def test_migrate_backup_and_restore_after_a_migration_fails_halfway(layout: Layout) -> None:
    layout.release("r1")
    first = layout.run("r1", "backup.py", "create")
    assert first.returncode == 0 and "no database yet" in first.stdout, first.stdout + first.stderr
    done = layout.run("r1", "migrate.py")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["migrated 001_create_sites.sql (2 statements)",
                                        "migrated 002_add_sites_status.sql (2 statements)"]
    assert layout.run("r1", "migrate.py").stdout == "nothing to migrate\n"
    assert not (layout.storage / ".migrating-r1").exists()
    layout.sql("INSERT INTO sites (domain) VALUES ('kept.example.com')")
    (layout.storage / "app").mkdir()
    (layout.storage / "app" / "upload.txt").write_text("a user's file\n")

    # The next release ships a migration whose second statement fails.
    layout.release("r2", extra={"migrations/003_bad.sql": BAD_MIGRATION})
    backup = layout.run("r2", "backup.py", "create", "--keep", "5")
    assert backup.returncode == 0, backup.stderr
    saved = layout.root / "shared" / "backups" / "r2"
    assert "backed up" in backup.stdout and (saved / "database.sqlite3").is_file()
    with tarfile.open(saved / "storage.tar.gz") as tar:
        names = tar.getnames()
    assert "storage/app/upload.txt" in names and "storage/database.sqlite3" not in names
    assert oct(saved.stat().st_mode & 0o777) == "0o700"

    failed = layout.run("r2", "migrate.py")
    assert failed.returncode == 1
    assert "003_bad.sql failed at statement 2: no such table: no_such_table" in failed.stderr
    assert "invoices" in layout.tables()  # statement 1 went in: autocommit, as MySQL DDL does
    assert (layout.storage / ".migrating-r2").exists()

    restored = layout.run("r2", "backup.py", "restore")
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout == "database restored from backup r2\n"
    assert "invoices" not in layout.tables()
    assert layout.migrations() == {"001_create_sites.sql", "002_add_sites_status.sql"}
    assert layout.sql("SELECT domain, status FROM sites") == [("kept.example.com", "active")]
    assert not (layout.storage / ".migrating-r2").exists()
    again = layout.run("r2", "backup.py", "restore")
    assert (again.returncode, again.stdout) == (0, "no migration ran: nothing to restore\n")


def test_backups_keep_the_newest(layout: Layout) -> None:
    layout.release("r1")
    assert layout.run("r1", "migrate.py").returncode == 0
    for name in ("r2", "r3", "r4"):
        layout.release(name)
        made = layout.run(name, "backup.py", "create", "--keep", "2")
        assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in (layout.root / "shared" / "backups").iterdir()) == ["r3", "r4"]
    assert "removed older backups (keeping 2): r2" in made.stdout
    assert layout.run("r4", "backup.py", "create", "--keep", "0").returncode == 2


def test_a_failed_first_migration_sets_the_new_database_aside(layout: Layout) -> None:
    layout.release("r1", extra={"migrations/003_bad.sql": BAD_MIGRATION})
    assert "no database yet" in layout.run("r1", "backup.py", "create").stdout
    assert layout.run("r1", "migrate.py").returncode == 1
    restored = layout.run("r1", "backup.py", "restore")
    assert restored.returncode == 0 and "there was none before release r1" in restored.stdout
    assert not layout.db.exists() and not (layout.storage / ".migrating-r1").exists()


def test_health_needs_every_migration_and_redis(spawn, layout: Layout, tmp_path: Path) -> None:
    release = layout.release("r1")
    app = spawn("app", [PYTHON, "app.py"], cwd=release, env=layout.env("r1"))
    health = f"http://127.0.0.1:{layout.app_port}/health"
    assert wait_for(answers(health, 503))
    status, body = http_get(health)
    assert json.loads(body)["status"] == "unavailable" and "database" in json.loads(body)["reason"]
    assert not layout.db.exists()  # a health check never creates the database

    assert layout.run("r1", "migrate.py").returncode == 0
    reason = json.loads(http_get(health)[1])["reason"]
    assert reason.startswith(f"redis 127.0.0.1:{layout.redis_port}:")
    redis = spawn("redis", [PYTHON, str(STANDIN), "redis", "--bind", "127.0.0.1", "--port",
                            str(layout.redis_port), "--password-file", str(password_file(tmp_path))])
    assert wait_for(answers(health))
    assert json.loads(http_get(health)[1]) == {"status": "ok", "release": "r1",
                                          "schema": "002_add_sites_status.sql"}
    status, page = http_get(f"http://127.0.0.1:{layout.app_port}/")
    assert status == 200 and "release r1" in page

    (release / "migrations" / "003_invoices.sql").write_text("CREATE TABLE invoices (id INTEGER);\n")
    status, body = http_get(health)
    assert status == 503 and json.loads(body)["reason"] == "pending migrations: 003_invoices.sql"
    assert layout.run("r1", "migrate.py").stdout == "migrated 003_invoices.sql (1 statement)\n"
    assert json.loads(http_get(health)[1])["schema"] == "003_invoices.sql"

    assert stop(redis) == 0
    assert wait_for(answers(health, 503))
    assert stop(app) == 0
    assert (tmp_path / "app.log").read_text().startswith(
        f"chom app release r1 listening on 127.0.0.1:{layout.app_port}")
    assert REDIS_PASSWORD not in (tmp_path / "app.log").read_text()


def test_worker_processes_jobs_and_stops_on_sigterm(spawn, layout: Layout, tmp_path: Path) -> None:
    release = layout.release("r1")
    layout.sql("CREATE TABLE jobs (id INTEGER PRIMARY KEY, queue TEXT, payload TEXT)")
    for queue in ("default", "mail"):
        layout.sql("INSERT INTO jobs (queue, payload) VALUES (?, '{}')", queue)
    worker = spawn("worker", [PYTHON, "worker.py"], cwd=release, env=layout.env("r1"))
    assert wait_for(lambda: layout.sql("SELECT count(*) FROM jobs") == [(0,)])
    assert stop(worker) == 0
    assert (tmp_path / "worker.log").read_text().splitlines() == [
        "worker for release r1 started; polling every 2 s", "processed job 1 (queue default)",
        "processed job 2 (queue mail)", "worker stopping on SIGTERM"]


def test_build_and_optimize_write_what_the_health_gate_checks(layout: Layout) -> None:
    release = layout.release("20261118110640250-0123456")
    for script, made in (("build.sh", "public/build/manifest.json"),
                         ("optimize.sh", "bootstrap/cache/config.json")):
        run = layout.run(release.name, script)
        assert run.returncode == 0, run.stderr
        assert json.loads((release / made).read_text())["release"] == release.name
    bad = subprocess.run(["sh", "build.sh"], cwd=release, env=base_env(DEPLOY_RELEASE='x"y'),
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "unexpected release name" in bad.stderr


def test_programs_are_executable_and_the_rest_readable() -> None:
    programs = {APP / n for n in ("app.py", "migrate.py", "backup.py", "worker.py", "build.sh",
                                  "optimize.sh")} | {STANDIN}
    for path in programs:
        assert path.stat().st_mode & 0o111 == 0o111, f"{path} is not executable by all"
        first = path.read_text().splitlines()[0]
        assert first in ("#!/usr/bin/env python3", "#!/bin/sh"), path
    for path in CHOM.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            assert path.stat().st_mode & 0o444 == 0o444, f"{path} is not readable by all"
