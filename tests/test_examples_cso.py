"""examples/cso: the jump's setup, the roles' install scripts and the stand-ins, run as real
processes on 127.0.0.1 (free ports, no root), in a temporary directory laid out as deployer lays
out a host's app root, with config files rendered from the example's own templates."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import types
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deployer import templates
from deployer.sandbox.endpoint import free_port

from conftest import REPO, http_get, wait_for

CSO = REPO / "examples" / "cso"
PYTHON = sys.executable  # 3.11 like Debian 12's python3; the programs use its stdlib alone
DB_PASSWORD = 'pa$s "w`o\\rd'  # what the env format must carry byte for byte
SECRETS = {"db_password": DB_PASSWORD, "rabbitmq_password": "r@bbit$ecret",
           "keystone_admin_password": "k3ystone'admin"}
# As the stack names them: the generated secrets that Terraform also gets are TF_VAR_*.
GENERATED = {"TF_VAR_db_password": DB_PASSWORD, "TF_VAR_rabbitmq_password": SECRETS["rabbitmq_password"],
             "keystone_admin_password": SECRETS["keystone_admin_password"],
             "TF_VAR_alb_certificate_pem": "CERT", "TF_VAR_alb_private_key_pem": "KEY"}
OUTPUTS = {"topology": "single", "dns_zone": "prod.CSO.ss", "db_address": "cso-db.example.internal",
           "frontend_hosts": ["10.1.128.10"], "backend_hosts": ["10.1.128.11"],
           "keystone_hosts": ["10.1.128.12"], "rabbitmq_hosts": ["10.1.128.13"]}
HA_OUTPUTS = {**OUTPUTS, "topology": "ha",
              "frontend_hosts": ["10.1.128.10", "10.1.192.10"],
              "backend_hosts": ["10.1.128.11", "10.1.192.11"],
              "keystone_hosts": "10.1.128.12 10.1.192.12",  # a string works too
              "rabbitmq_hosts": ["10.1.128.13", "10.1.192.13"]}
STEPS = ("extract the install scripts", "generate the internal TLS certificates",
         "create the database schemas", "signal setup complete")


def status(url: str) -> int | None:
    try:
        return http_get(url)[0]
    except (urllib.error.URLError, OSError):
        return None


def answers(url: str, code: int = 200) -> Callable[[], bool]:
    return lambda: status(url) == code


def base_env(**extra: str) -> dict[str, str]:
    """A clean environment: nothing of the test runner's leaks into the programs' settings."""
    return {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **extra}


def load(rel: str) -> types.ModuleType:
    """A module of the example, loaded from its file (without writing bytecode beside it)."""
    path = CSO / rel
    module = types.ModuleType(path.stem)
    module.__file__ = str(path)
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    return module


def render(template: str, outputs: dict | None = None, fmt: str = "env", **extra: object) -> str:
    ctx = {**GENERATED, "outputs": outputs or OUTPUTS, "host": {"user": "ec2-user", "address": "h",
                                                              "port": 22},
           "app_root": "/opt/cso", **extra}
    return templates.render_file(CSO / template, ctx, fmt)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start a process with its output in tmp_path/<name>.log; every one is stopped at the end."""
    started: list[subprocess.Popen] = []

    def start(name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        with (tmp_path / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(argv, env=env or base_env(), stdout=log,
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


def server(spawn, name: str, program: str, *args: str, **settings: str) -> tuple[subprocess.Popen, int]:
    """A stand-in on 127.0.0.1 and a free port; its settings in its environment, as systemd's
    EnvironmentFile= puts them there."""
    port = free_port()
    argv = [PYTHON, str(CSO / program), "--bind", "127.0.0.1", "--port", str(port), *args]
    return spawn(name, argv, base_env(DEPLOY_RELEASE="r1", CHECK_INTERVAL="0.2", **settings)), port


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=10)


def log_of(tmp_path: Path, name: str) -> str:
    return (tmp_path / f"{name}.log").read_text()


# --- the jump: setup.sh --------------------------------------------------------------------------

class Host:
    """One machine's login user: its HOME, and <app root>/releases/<name> made as deployer makes
    them (a copy of examples/cso, the rendered files uploaded into it)."""

    def __init__(self, path: Path):
        self.home = path / "home"
        self.home.mkdir(parents=True)
        self.root = path / "app"
        # `python3` for the scripts is this interpreter (a pyenv shim would cost a second a call).
        self.bin = path / "bin"
        self.bin.mkdir()
        (self.bin / "python3").symlink_to(PYTHON)

    def release(self, name: str, files: dict[str, str]) -> Path:
        path = self.root / "releases" / name
        shutil.copytree(CSO, path, ignore=shutil.ignore_patterns(
            "__pycache__", "*.env", "quickSetup.properties"))
        for rel, text in files.items():
            (path / rel).write_text(text)
            (path / rel).chmod(0o600)  # a secret file, as deployer uploads it
        return path

    def run(self, release: str, script: str, role: str) -> subprocess.CompletedProcess[str]:
        env = {**base_env(HOME=str(self.home), DEPLOY_RELEASE=release, DEPLOY_APP_ROOT=str(self.root),
                          DEPLOY_ENV="test", DEPLOY_ROLE=role, DEPLOY_HOST="127.0.0.1"),
               "PATH": f"{self.bin}:{os.environ['PATH']}"}
        return subprocess.run(["sh", script], cwd=self.root / "releases" / release, env=env,
                              capture_output=True, text=True, timeout=60)


def steps(out: str) -> dict[str, str]:
    """{step: "changed" or "unchanged"} from setup.sh's report."""
    found = {}
    for line in out.splitlines():
        step, _, rest = line.partition(": ")
        if step in STEPS:
            found[step] = rest.split(" ", 1)[0]
    return found


def test_setup_runs_each_step_once_then_reports_unchanged(tmp_path: Path) -> None:
    host = Host(tmp_path)
    properties = render("jump/quickSetup.properties.j2")
    host.release("r1", {"quickSetup.properties": properties})
    first = host.run("r1", "jump/setup.sh", "jump")
    assert first.returncode == 0, first.stdout + first.stderr
    assert steps(first.stdout) == dict.fromkeys(STEPS, "changed"), first.stdout
    assert "read quickSetup.properties: ok (topology single, zone prod.CSO.ss, 4 hosts)" in first.stdout
    assert "NOT X.509" in first.stdout and "not reachable from the sandbox" in first.stdout

    second = host.run("r1", "jump/setup.sh", "jump")
    assert second.returncode == 0, second.stderr
    assert steps(second.stdout) == dict.fromkeys(STEPS, "unchanged"), second.stdout

    public = {"topology": "single", "dns_zone": "prod.CSO.ss", "db_address": "cso-db.example.internal",
              "frontend_hosts": "10.1.128.10", "backend_hosts": "10.1.128.11",
              "keystone_hosts": "10.1.128.12", "rabbitmq_hosts": "10.1.128.13"}
    digest = hashlib.sha256(json.dumps(public, sort_keys=True).encode()).hexdigest()
    assert (host.home / ".setup-done").read_text() == f"release=r1\nproperties_sha256={digest}\n"
    cso = host.home / "cso"
    assert json.loads((cso / "schemas.json").read_text())["schemas"] == ["keystone", "cso"]
    manifest = json.loads((cso / "pki" / "certificates.json").read_text())
    assert manifest["x509"] is False and len(manifest["certificates"]) == 4
    keystone = next(c for c in manifest["certificates"] if c["roles"] == ["keystone"])
    assert keystone["host"] == "10.1.128.12"
    assert keystone["names"] == ["keystone-1.prod.cso.ss", "keystone.prod.cso.ss", "10.1.128.12"]
    scripts = sorted(p.relative_to(cso / "scripts").as_posix() for p in (cso / "scripts").rglob("*")
                     if p.is_file())
    assert "jump/setup.sh" in scripts and "backend/server.py" in scripts and "lib/csolib.py" in scripts
    assert all(s.endswith((".sh", ".py")) for s in scripts)  # no rendered config, no template
    assert os.access(cso / "scripts" / "keystone" / "install.sh", os.X_OK)
    # No secret value anywhere in the output or in what was written.
    written = "".join(p.read_text() for p in host.home.rglob("*") if p.is_file())
    for secret in SECRETS.values():
        assert secret not in first.stdout + second.stdout + written

    # A new release with the HA layout and another password: the same CA, new names, new marker.
    ca = json.loads((cso / "pki" / "ca.json").read_text())["ca_id"]
    other = render("jump/quickSetup.properties.j2", HA_OUTPUTS).replace("r@bbit$ecret", "changed")
    host.release("r2", {"quickSetup.properties": other})
    third = host.run("r2", "jump/setup.sh", "jump")
    assert third.returncode == 0, third.stderr
    assert steps(third.stdout) == {STEPS[0]: "unchanged", STEPS[1]: "changed", STEPS[2]: "unchanged",
                                   STEPS[3]: "changed"}, third.stdout
    manifest = json.loads((cso / "pki" / "certificates.json").read_text())
    assert manifest["ca_id"] == ca and len(manifest["certificates"]) == 8
    assert (host.home / ".setup-done").read_text().startswith("release=r2\n")


def test_setup_marker_ignores_secret_values(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.release("r1", {"quickSetup.properties": render("jump/quickSetup.properties.j2")})
    assert host.run("r1", "jump/setup.sh", "jump").returncode == 0
    marker = (host.home / ".setup-done").read_text()
    props = host.root / "releases" / "r1" / "quickSetup.properties"
    props.write_text(props.read_text().replace("k3ystone'admin", "another one"))
    again = host.run("r1", "jump/setup.sh", "jump")
    assert steps(again.stdout)["signal setup complete"] == "unchanged"
    assert (host.home / ".setup-done").read_text() == marker


def with_line(key: str, line: str | None) -> Callable[[str], str]:
    """The properties with the line of `key` replaced by `line` (or removed)."""
    def edit(text: str) -> str:
        lines = [ln for ln in text.splitlines() if not ln.startswith(f"{key}=")]
        return "\n".join(lines + ([line] if line is not None else [])) + "\n"
    return edit


@pytest.mark.parametrize("edit, says", [
    (with_line("rabbitmq_hosts", None), "missing key: rabbitmq_hosts"),
    (with_line("keystone_hosts", "keystone_hots=10.1.128.12"), "unknown key 'keystone_hots'"),
    (lambda t: t + 'topology="single"\n', "topology is given twice"),
    (with_line("backend_hosts", "backend_hosts=10.1.128.300"),
     "backend_hosts: '10.1.128.300' is not an IPv4"),
    (with_line("frontend_hosts", "frontend_hosts = 10.1.128.10 10.1.192.10"),
     "frontend_hosts: the single topology has one frontend host, not 2"),
    (with_line("topology", 'topology="multi"'), "topology 'multi' is not single or ha"),
    (with_line("db_address", "db_address=$(reboot)"), "db_address '$(reboot)' is not host[:port]"),
    (with_line("db_password", "db_password="), "db_password is empty"),
    (with_line("rabbitmq_password", "rabbitmq_password=a\\b"),
     "rabbitmq_password: a double quote or backslash in a bare value"),
    (with_line("keystone_admin_password", 'keystone_admin_password=""k"'),
     "keystone_admin_password: an unterminated or malformed quoted value"),
    (lambda t: t + "just words\n", "not key=value"),
])
def test_setup_refuses_a_bad_or_missing_key_in_one_line(tmp_path: Path, edit, says: str) -> None:
    host = Host(tmp_path)
    host.release("r1", {"quickSetup.properties": edit(render("jump/quickSetup.properties.j2"))})
    run = host.run("r1", "jump/setup.sh", "jump")
    assert run.returncode == 1, run.stdout
    assert run.stderr.count("\n") == 1 and says in run.stderr, run.stderr
    assert not (host.home / ".setup-done").exists()
    for secret in SECRETS.values():
        assert secret not in run.stdout + run.stderr


def test_setup_without_properties_says_so(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.release("r1", {})
    run = host.run("r1", "jump/setup.sh", "jump")
    assert run.returncode == 1 and "quickSetup.properties: missing" in run.stderr, run.stderr


# --- the roles' install scripts -------------------------------------------------------------------

ROLE_FILES = {"rabbitmq": "rabbitmq/rabbitmq.env", "keystone": "keystone/keystone.env",
              "backend": "backend/backend.env", "frontend": "frontend/frontend.env"}


def test_install_scripts_check_their_config_and_keystone_bootstraps_once(tmp_path: Path) -> None:
    host = Host(tmp_path)
    files = {path: render(f"{path}.j2", HA_OUTPUTS) for path in ROLE_FILES.values()}
    host.release("r1", files)
    for role in ROLE_FILES:
        run = host.run("r1", f"{role}/install.sh", role)
        assert run.returncode == 0, (role, run.stdout, run.stderr)
        assert run.stdout.startswith("install packages: unchanged (stand-in"), run.stdout
        assert f"release r1 installed; cso-{role} starts from current" in run.stdout
    keystone = host.run("r1", "keystone/install.sh", "keystone")
    assert "bootstrap keystone: unchanged (done by release r1" in keystone.stdout
    assert "database keystone@cso-db.example.internal:3306/keystone" in keystone.stdout
    assert DB_PASSWORD not in keystone.stdout + keystone.stderr
    backend = host.run("r1", "backend/install.sh", "backend").stdout
    assert ("keystone http://10.1.128.12:5000/v3 http://10.1.192.12:5000/v3, rabbitmq"
            " 10.1.128.13:5671 10.1.192.13:5671") in backend
    # A later release leaves the bootstrap as it was.
    host.release("r2", files)
    later = host.run("r2", "keystone/install.sh", "keystone")
    assert later.returncode == 0 and "unchanged (done by release r1" in later.stdout
    assert (host.home / ".keystone-done").read_text() == "r1\n"
    # Nothing else was written: HOME holds the marker alone, the releases what deployer put there.
    assert [p.name for p in host.home.iterdir()] == [".keystone-done"]
    assert not list((host.root / "releases").rglob("__pycache__"))


def test_install_script_without_its_config_fails_naming_it(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.release("r1", {"backend/backend.env": "KEYSTONE_URL=ftp://x\nRABBITMQ_HOSTS=a\n"})
    run = host.run("r1", "frontend/install.sh", "frontend")
    assert run.returncode == 1 and "frontend/frontend.env is missing" in run.stderr
    bad = host.run("r1", "backend/install.sh", "backend")
    assert bad.returncode == 1 and "KEYSTONE_URL: 'ftp://x' is not an http:// URL" in bad.stderr


# --- the stand-ins ----------------------------------------------------------------------------------

@pytest.mark.parametrize("program", ["rabbitmq/server.py", "keystone/server.py", "backend/server.py",
                                     "frontend/server.py", "jump/ui-forward.py"])
def test_usage_errors_exit_2_and_bad_settings_exit_1(program: str) -> None:
    usage = subprocess.run([PYTHON, str(CSO / program), "--port", "http"], capture_output=True,
                           text=True, timeout=30, env=base_env())
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1, usage.stderr
    assert "'http' is not a TCP port" in usage.stderr
    if program == "rabbitmq/server.py":
        return  # every setting of the rabbitmq stand-in is optional
    bad = subprocess.run([PYTHON, str(CSO / program), "--check"], capture_output=True, text=True,
                         timeout=30, env=base_env())
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "is not set" in bad.stderr


def test_backend_health_waits_for_keystone_and_rabbitmq_and_frontend_follows(spawn, tmp_path: Path) -> None:
    keystone_port, rabbit_port, db_port = free_port(), free_port(), free_port()
    backend, backend_port = server(
        spawn, "backend", "backend/server.py", KEYSTONE_URL=f"http://127.0.0.1:{keystone_port}/v3",
        RABBITMQ_HOSTS=f"127.0.0.1:{rabbit_port}")
    frontend, frontend_port = server(
        spawn, "frontend", "frontend/server.py", BACKEND_URL=f"http://127.0.0.1:{backend_port}/health",
        TOPOLOGY="single")
    backend_health = f"http://127.0.0.1:{backend_port}/health"
    frontend_health = f"http://127.0.0.1:{frontend_port}/health"
    assert wait_for(answers(backend_health, 503)) and wait_for(answers(frontend_health, 503))
    assert wait_for(lambda: "dependency rabbitmq" in log_of(tmp_path, "backend"))
    body = json.loads(http_get(backend_health)[1])
    assert body["status"] == "unavailable" and "keystone" in body["reason"] and "rabbitmq" in body["reason"]

    # Keystone alone is not enough.
    spawn("keystone", [PYTHON, str(CSO / "keystone/server.py"), "--bind", "127.0.0.1", "--port",
                       str(keystone_port)],
          base_env(DEPLOY_RELEASE="r1", DB_HOST=f"127.0.0.1:{db_port}", DB_PASSWORD=DB_PASSWORD,
                   ADMIN_PASSWORD="a"))
    v3 = f"http://127.0.0.1:{keystone_port}/v3"
    assert wait_for(answers(v3))
    version = json.loads(http_get(v3)[1])["version"]
    assert version["id"].startswith("v3") and version["status"] == "stable"
    assert version["links"] == [{"rel": "self", "href": f"http://127.0.0.1:{keystone_port}/v3/"}]
    assert http_get(f"http://127.0.0.1:{keystone_port}/")[0] == 300
    assert wait_for(lambda: "keystone" not in json.loads(http_get(backend_health)[1])["reason"])
    assert status(backend_health) == 503

    rabbit = spawn("rabbitmq", [PYTHON, str(CSO / "rabbitmq/server.py"), "--bind", "127.0.0.1",
                                "--port", str(rabbit_port), "--cluster-port", str(free_port())],
                   base_env(DEPLOY_RELEASE="r1"))
    alarms = f"http://127.0.0.1:{rabbit_port}/api/health/checks/alarms"
    assert wait_for(answers(alarms)) and json.loads(http_get(alarms)[1]) == {"status": "ok"}
    assert wait_for(answers(backend_health, 200))
    body = json.loads(http_get(backend_health)[1])
    assert body["status"] == "ok" and body["release"] == "r1"
    assert body["checks"]["rabbitmq"] == {f"127.0.0.1:{rabbit_port}": "ok"}
    assert wait_for(answers(frontend_health, 200))
    page = http_get(f"http://127.0.0.1:{frontend_port}/")
    assert page[0] == 200 and "release <b>r1</b>, topology <b>single</b>" in page[1]

    # Health reflects the latest check: rabbitmq gone, the backend and then the frontend fail.
    assert stop(rabbit) == 0
    assert wait_for(answers(backend_health, 503)) and wait_for(answers(frontend_health, 503))
    # One line per change of a dependency's result: unavailable, ok, unavailable.
    said = f"dependency rabbitmq 127.0.0.1:{rabbit_port}: "
    assert wait_for(lambda: [line.removeprefix(said)[:2] for line in log_of(tmp_path, "backend").splitlines()
                             if line.startswith(said)] == ["un", "ok", "un"])
    assert stop(backend) == 0 and stop(frontend) == 0

    lines = log_of(tmp_path, "backend").splitlines()
    assert lines[0].startswith(f"backend stand-in release r1 listening on 127.0.0.1:{backend_port}")
    ok = f"dependency keystone http://127.0.0.1:{keystone_port}/v3: ok (Keystone v3.14)"
    assert ok in lines
    keystone_log = log_of(tmp_path, "keystone")
    assert keystone_log.startswith("keystone stand-in release r1 listening")
    assert "RDS is not reachable from the sandbox" in keystone_log and DB_PASSWORD not in keystone_log


def test_rabbitmq_nodes_lists_a_reachable_peer(spawn, tmp_path: Path) -> None:
    cluster_a, cluster_b = free_port(), free_port()
    nodes = f"127.0.0.1:{cluster_a} 127.0.0.1:{cluster_b}"
    _, port_a = server(spawn, "rabbit-a", "rabbitmq/server.py", "--cluster-port", str(cluster_a),
                       RABBITMQ_NODES=nodes)
    url_a = f"http://127.0.0.1:{port_a}/api/nodes"
    assert wait_for(answers(url_a))

    def members(url: str) -> dict[str, bool]:
        return {n["name"]: n["running"] for n in json.loads(http_get(url)[1])}

    me, peer = f"rabbit@127.0.0.1:{cluster_a}", f"rabbit@127.0.0.1:{cluster_b}"
    assert wait_for(lambda: members(url_a) == {me: True, peer: False})
    _, port_b = server(spawn, "rabbit-b", "rabbitmq/server.py", "--cluster-port", str(cluster_b),
                       RABBITMQ_NODES=nodes)
    assert wait_for(lambda: members(url_a) == {me: True, peer: True})
    url_b = f"http://127.0.0.1:{port_b}/api/nodes"
    assert wait_for(lambda: status(url_b) == 200 and members(url_b) == {peer: True, me: True})
    assert f"dependency peer {peer}: ok (127.0.0.1:{cluster_b} is {peer})" in log_of(tmp_path, "rabbit-a")
    with socket.create_connection(("127.0.0.1", cluster_b), timeout=5) as conn:
        assert conn.makefile("rb").readline() == f"cso-rabbitmq-standin {peer}\n".encode()


def test_ui_forwarder_passes_the_admin_ui_through(spawn, tmp_path: Path) -> None:
    frontend_port = free_port()
    config = tmp_path / "ui-forward.env"
    config.write_text(f'FRONTEND="127.0.0.1:{frontend_port}"\n')
    forward_port = free_port()
    spawn("forward", [PYTHON, str(CSO / "jump/ui-forward.py"), "--bind", "127.0.0.1", "--port",
                      str(forward_port), "--config", str(config)])
    assert wait_for(lambda: "unavailable" in log_of(tmp_path, "forward"))
    # The frontend is not there yet: a client is let go, and the log says why.
    with socket.create_connection(("127.0.0.1", forward_port), timeout=5) as conn:
        conn.settimeout(5)
        assert conn.recv(1) == b""
    assert wait_for(lambda: "unreachable" in log_of(tmp_path, "forward"))

    spawn("frontend", [PYTHON, str(CSO / "frontend/server.py"), "--bind", "127.0.0.1", "--port",
                       str(frontend_port)],
          base_env(DEPLOY_RELEASE="r7", TOPOLOGY="single", BACKEND_URL="http://127.0.0.1:9/health"))
    through = f"http://127.0.0.1:{forward_port}/"
    assert wait_for(answers(through))
    assert http_get(through) == http_get(f"http://127.0.0.1:{frontend_port}/")
    assert "release <b>r7</b>" in http_get(through)[1]
    assert http_get(f"http://127.0.0.1:{forward_port}/health")[0] == 503  # no backend: as it is
    first = log_of(tmp_path, "forward").splitlines()[0]
    assert first == (f"ui-forward listening on 127.0.0.1:{forward_port}, forwarding to the frontend"
                     f" at 127.0.0.1:{frontend_port}")


# --- templates ---------------------------------------------------------------------------------------

def test_config_templates_reach_the_programs_byte_for_byte(tmp_path: Path) -> None:
    read_env = load("lib/csolib.py").read_env
    for path in (*ROLE_FILES.values(), "jump/ui-forward.env"):
        (tmp_path / "f.env").write_text(render(f"{path}.j2", HA_OUTPUTS))
        values = read_env(tmp_path / "f.env")
        if path == "keystone/keystone.env":
            assert values == {"DB_HOST": "cso-db.example.internal", "DB_NAME": "keystone",
                              "DB_USER": "keystone", "DB_PASSWORD": DB_PASSWORD,
                              "ADMIN_PASSWORD": "k3ystone'admin"}
        elif path == "backend/backend.env":
            assert values == {"KEYSTONE_URL": "http://10.1.128.12:5000/v3 http://10.1.192.12:5000/v3",
                              "RABBITMQ_HOSTS": "10.1.128.13:5671 10.1.192.13:5671"}
        elif path == "frontend/frontend.env":
            assert values == {"BACKEND_URL": "http://10.1.128.11:8080/health http://10.1.192.11:8080/health",
                              "TOPOLOGY": "ha", "TLS_CERT_FILE": "frontend/tls.crt",
                              "TLS_KEY_FILE": "frontend/tls.key"}
        elif path == "rabbitmq/rabbitmq.env":
            assert values == {"RABBITMQ_NODES": "10.1.128.13 10.1.192.13"}
        else:
            assert values == {"FRONTEND": "10.1.128.10"}
    (tmp_path / "quickSetup.properties").write_text(render("jump/quickSetup.properties.j2", HA_OUTPUTS))
    values = load("jump/quicksetup.py").read_properties(tmp_path / "quickSetup.properties")
    assert values == {**SECRETS, "topology": "ha", "dns_zone": "prod.CSO.ss",
                      "db_address": "cso-db.example.internal",
                      "frontend_hosts": "10.1.128.10 10.1.192.10",
                      "backend_hosts": "10.1.128.11 10.1.192.11",
                      "keystone_hosts": "10.1.128.12 10.1.192.12",
                      "rabbitmq_hosts": "10.1.128.13 10.1.192.13"}


def test_unit_templates_render_with_deployer_values() -> None:
    units = {p.name.removesuffix(".service.j2"): render(f"units/{p.name}", fmt="raw")
             for p in (CSO / "units").glob("*.service.j2")}
    expected = {"cso-rabbitmq": ("rabbitmq/server.py", "rabbitmq/rabbitmq.env"),
                "cso-keystone": ("keystone/server.py", "keystone/keystone.env"),
                "cso-backend": ("backend/server.py", "backend/backend.env"),
                "cso-frontend": ("frontend/server.py", "frontend/frontend.env"),
                "cso-ui-forward": ("jump/ui-forward.py", "jump/ui-forward.env")}
    assert set(units) == set(expected)
    for name, (program, env_file) in expected.items():
        for line in ("User=ec2-user", "WorkingDirectory=/opt/cso/current",
                     f"EnvironmentFile=/opt/cso/current/{env_file}",
                     f"ExecStart=/usr/bin/python3 {program}"
                     + (" --port 5671" if name == "cso-rabbitmq" else ""),
                     "Restart=on-failure"):
            assert f"\n{line}\n" in units[name], (name, line)


def test_the_example_is_lint_clean() -> None:
    assert shutil.which("shellcheck"), "shellcheck is missing: make system-packages installs it"
    scripts = sorted(str(p) for p in CSO.rglob("*.sh"))
    run = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout
    assert not list(CSO.rglob("__pycache__"))  # the programs write no bytecode beside themselves


def test_the_frontend_serves_https_with_the_generated_certificate(spawn, tmp_path: Path) -> None:
    import ssl

    from deployer import generated
    from deployer.stacks import Generated

    key = generated.make(Generated("k", "rsa-key"))
    cert = generated.make(Generated("c", "x509", key="k", subject="cso-admin-ui"), kept={"k": key})
    (tmp_path / "tls.crt").write_text(cert + "\n")
    (tmp_path / "tls.key").write_text(key + "\n")
    _, port = server(spawn, "frontend-tls", "frontend/server.py", BACKEND_URL="http://127.0.0.1:9/health",
                     TOPOLOGY="single", TLS_CERT_FILE=str(tmp_path / "tls.crt"),
                     TLS_KEY_FILE=str(tmp_path / "tls.key"))
    pinned = ssl.create_default_context(cadata=cert)
    pinned.check_hostname = False  # as deploy's check: the chain is the generated certificate's

    def answered() -> int | None:
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/", timeout=5, context=pinned) as r:
                return r.status
        except (urllib.error.URLError, OSError):
            return None

    assert wait_for(lambda: answered() == 200, seconds=20)
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"https://127.0.0.1:{port}/", timeout=5)  # an unpinned client refuses it
