"""Host deploys against real OpenSSH sshd hosts on loopback and a real git origin, through the
real `deploy` CLI. The `web` stack (tests/data/web.toml) is the dashboard app on env-listed
hosts; `edge` is the shipped edge stack."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from deployer.hosts.planner import CONFIG, Found, plan_host, run_order
from deployer.process import pids_naming
from deployer.stacks import load_stack

from conftest import DEPLOY, REPO, Project, result_of, wait_for

pytestmark = pytest.mark.slow

SECRETS = {"jwt_secret_key": "jwt-5ecret-value-1234", "frp_token": "frp-t0ken-value-5678",
           "db_password": "db-pa55word-value-90"}


def free_port() -> int:
    from deployer.sandbox.endpoint import free_port as fp

    return fp()


def web_project(project: Project, hosts: list, origin: str, key: Path, *, color: str = "#112233",
                port: int | None = None, ref: str = "main", extra: str = "") -> Project:
    project.add_stack("web")
    project.environ["DEPLOYER_SSH_KEY"] = str(key)
    port = port or free_port()
    project.port = port  # type: ignore[attr-defined]
    project.write_env("stage", "\n".join([
        "web_hosts=" + " ".join(f"root@{h.address}" for h in hosts),
        f"git_repo={origin}", f"git_ref={ref}",
        *(f"{k}={v}" for k, v in SECRETS.items()),
        f"background_color={color}", "vite_api_base_url=http://localhost/api",
        f"TF_VAR_dashboard_port={port}",
    ]) + "\n" + extra)
    return project


def page(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        return response.read().decode()


def scan_for_secrets(project: Project, *texts: str) -> None:
    logs = "".join(p.read_text() for p in (project.path / ".deployer" / "logs").glob("*.log"))
    for value in SECRETS.values():
        assert value not in logs, "secret in a log file"
        for text in texts:
            assert value not in text, "secret on the terminal"


def test_first_deploy_rerun_config_change_and_rollback(project: Project, ssh_hosts, app_origin,
                                                       operator_key) -> None:
    (host,) = ssh_hosts(1)
    web_project(project, [host], app_origin, operator_key)
    first = project.deploy("web", "stage", "--accept-new-host-keys")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "changed   new commit" in first.stdout
    root = host.home / "web"
    current = os.readlink(root / "current")
    assert "#112233" in page(project.port)
    assert (root / "current/dashboard_backend/.env.docker").stat().st_mode & 0o777 == 0o600
    assert (root / "current/frp_config/frps.toml").stat().st_mode & 0o777 == 0o600
    assert (root / "current/.env.deployment").read_text().splitlines()[2] == \
        'DEPLOYMENT_URI="http://localhost"'
    assert "result=ok" in (root / "audit.log").read_text()
    first_log = max((project.path / ".deployer" / "logs").glob("*web-stage-apply.log")).read_text()
    # The health check went through the SSH connection: no curl was started on the host.
    assert f"GET http://127.0.0.1:{project.port}/health through the SSH connection: 200" in first_log
    assert "curl" not in first_log

    again = project.deploy("web", "stage", "--json")
    assert again.returncode == 0
    result = result_of(again)
    assert result["changed"] is False
    assert result["fleet"]["hosts"][0]["status"] == "unchanged"
    assert os.readlink(root / "current") == current

    env = project.path / "deployments" / "env-stage"
    env.write_text(env.read_text().replace("background_color=#112233", "background_color=#445566"))
    config = project.deploy("web", "stage")
    assert config.returncode == 0, config.stderr
    assert "config only: dashboard_frontend/.env.docker; reran install.sh" in config.stdout
    assert "uploads" not in config.stderr
    log = max((project.path / ".deployer" / "logs").glob("*web-stage-apply.log")).read_text()
    assert log.count(" upload ") == 2  # the changed file and the manifest, nothing else
    assert "#445566" in page(project.port)
    assert os.readlink(root / "current") != current

    back = project.deploy("rollback", "web", "stage")
    assert back.returncode == 0, back.stderr
    assert os.readlink(root / "current") == current
    assert "#112233" in page(project.port)

    logs = project.deploy("logs", "web", "stage")
    assert logs.returncode == 0, logs.stderr
    assert f"[root@{host.address}] serving on 0.0.0.0:{project.port}" in logs.stderr

    status = project.deploy("status", "web", "stage", "--json")
    found = result_of(status)[0]
    assert found["current"] == current.removeprefix("releases/")
    assert any("rollback" in line for line in found["audit"])
    scan_for_secrets(project, first.stdout + first.stderr, config.stdout + config.stderr)


def bad_origin(tmp_path: Path, origin: str, *, health: bool = True, sleep: float = 0) -> str:
    """A copy of the app origin with one more commit: a failing /health, or a slow install."""
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", origin, str(work)], check=True)
    if health:
        server = work / "app" / "server.py"
        server.write_text(server.read_text().replace(  # a release whose /health answers 500
            "self.send_response(200)", 'self.send_response(500 if self.path == "/health" else 200)'))
    if sleep:
        install = work / "install.sh"
        install.write_text(install.read_text().replace("set -eu\n", f"set -eu\nsleep {sleep}\n"))
    who = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "-C", str(work), "tag", "good"], check=True)
    subprocess.run(["git", *who, "-C", str(work), "commit", "-qam", "change"], check=True)
    bare = tmp_path / "bad.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return f"file://{bare}"


def test_releases_are_pruned_failed_ones_first_and_current_kept(
        project: Project, ssh_hosts, app_origin, operator_key, tmp_path: Path) -> None:
    """web.toml keeps 2 releases: failed releases never count toward them and go first."""
    (host,) = ssh_hosts(1)
    bad = bad_origin(tmp_path, app_origin)
    web_project(project, [host], bad, operator_key, ref="good")
    releases = host.home / "web" / "releases"
    env = project.path / "deployments" / "env-stage"
    assert project.deploy("web", "stage", "--accept-new-host-keys").returncode == 0
    (first,) = os.listdir(releases)
    env.write_text(env.read_text().replace("git_ref=good", "git_ref=main"))
    assert project.deploy("web", "stage").returncode == 1  # health check fails: a failed release
    (failed,) = set(os.listdir(releases)) - {first}
    made = []
    for color in ("#202020", "#303030"):  # two config-only releases of the good commit
        text = re.sub(r"background_color=.*", f"background_color={color}", env.read_text())
        env.write_text(text.replace("git_ref=main", "git_ref=good"))
        run = project.deploy("web", "stage")
        assert run.returncode == 0, run.stdout + run.stderr
        assert "config only" in run.stdout
        made.append(os.readlink(host.home / "web" / "current").removeprefix("releases/"))
    kept = sorted(os.listdir(releases))
    assert kept == made and failed not in kept and first not in kept
    assert all((releases / name / ".deploy" / "ok").exists() for name in kept)


def test_host_without_tcp_forwarding_and_refs_that_do_not_resolve(
        project: Project, ssh_hosts, app_origin, operator_key) -> None:
    (host,) = ssh_hosts(1, forwarding=False)  # a hardened sshd: AllowTcpForwarding no
    web_project(project, [host], app_origin, operator_key)
    run = project.deploy("web", "stage", "--accept-new-host-keys")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "sshd here refuses TCP forwarding: URL checks run curl on the host instead" in run.stderr
    assert "health check 'dashboard http' passed" in run.stderr

    env = project.path / "deployments" / "env-stage"
    env.write_text(env.read_text().replace("git_ref=main", "git_ref=no-such-branch"))
    missing = project.deploy("web", "stage")
    assert missing.returncode == 1
    assert f"git ref 'no-such-branch' is not in {app_origin}" in missing.stdout
    env.write_text(env.read_text().replace(app_origin, "file:///nonexistent/app.git"))
    unreadable = project.deploy("web", "stage")
    assert unreadable.returncode == 1
    assert "git ls-remote file:///nonexistent/app.git failed (exit 128)" in unreadable.stdout


def test_a_host_still_booting_is_waited_for_then_deployed(project: Project, ssh_hosts, app_origin,
                                                          operator_key) -> None:
    """The probe asks for the ready marker too; a host without it yet is polled until it has
    it (user_data still running), then looked at again and deployed."""
    (host,) = ssh_hosts(1)
    web_project(project, [host], app_origin, operator_key)
    marker = host.home / ".setup_complete"
    marker.unlink()
    logs = project.path / ".deployer" / "logs"
    poll = '$ test -f "$HOME"/.setup_complete'

    def boot_when_polled() -> None:  # the host "finishes booting" once deploy waits for it
        wait_for(lambda: any(poll in log.read_text() for log in logs.glob("*web-stage-apply.log")), 120)
        marker.write_text("booted\n")

    booting = threading.Thread(target=boot_when_polled, daemon=True)
    booting.start()
    run = project.deploy("web", "stage", "--accept-new-host-keys")
    booting.join(timeout=5)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "changed   new commit" in run.stdout
    first = max(logs.glob("*web-stage-apply.log")).read_text()
    answered = re.compile(r"\] ready=yes$", re.M)  # the probe's answer, not its command
    assert poll in first and not answered.search(first)  # the probe found none; then it polled

    assert project.deploy("web", "stage").returncode == 0
    rerun = max(logs.glob("*web-stage-apply.log")).read_text()
    assert answered.search(rerun) and poll not in rerun  # the probe saw it: no extra round trip


def test_bad_release_keeps_the_previous_one_serving(project: Project, ssh_hosts, app_origin,
                                                    operator_key, tmp_path: Path) -> None:
    (host,) = ssh_hosts(1)
    bad = bad_origin(tmp_path, app_origin)
    web_project(project, [host], bad, operator_key, ref="good")
    assert project.deploy("web", "stage", "--accept-new-host-keys").returncode == 0
    good = os.readlink(host.home / "web" / "current")
    env = project.path / "deployments" / "env-stage"
    env.write_text(env.read_text().replace("git_ref=good", "git_ref=main"))
    failed = project.deploy("web", "stage")
    assert failed.returncode == 1
    assert f"health check 'dashboard http' failed on root@{host.address}" in failed.stdout
    assert f"current stays {good.removeprefix('releases/')} (restarted)" in failed.stdout
    # the restore ran the previous release's check: the run ended once it answered again
    assert "health check 'dashboard http' passed" in failed.stderr
    assert os.readlink(host.home / "web" / "current") == good
    assert "#112233" in page(project.port)  # the previous release keeps serving
    assert "result=failed: health check 'dashboard http'" in (host.home / "web/audit.log").read_text()


def test_no_key_to_offer_is_said_once_not_retried_as_unreachable(
        project: Project, ssh_hosts, app_origin, operator_key, tmp_path: Path) -> None:
    (host,) = ssh_hosts(1)
    web_project(project, [host], app_origin, operator_key)
    del project.environ["DEPLOYER_SSH_KEY"]
    (tmp_path / "empty-home").mkdir()
    run = project.deploy("web", "stage", "--accept-new-host-keys",
                         extra_env={"HOME": str(tmp_path / "empty-home"), "SSH_AUTH_SOCK": ""})
    assert run.returncode == 1
    assert (f"root@{host.address}: no SSH key to log in with: set DEPLOYER_SSH_KEY to a private"
            " key file, or load a key into ssh-agent") in run.stdout
    assert "unreachable" not in run.stdout + run.stderr


def test_host_keys_unknown_refused_then_accepted_then_changed_refused(
        project: Project, ssh_hosts, app_origin, operator_key) -> None:
    (host,) = ssh_hosts(1)
    web_project(project, [host], app_origin, operator_key)
    unknown = project.deploy("web", "stage")
    assert unknown.returncode == 1
    known_hosts = project.path / ".deployer" / "known_hosts" / "stage"
    assert f"{host.address}: unknown host key" in unknown.stdout
    assert "--accept-new-host-keys" in unknown.stdout
    assert project.deploy("web", "stage", "--accept-new-host-keys").returncode == 0
    assert host.address in known_hosts.read_text()

    host.stop()  # the host is rebuilt with a new key
    host.host_key.unlink()
    host.host_key.with_suffix(".pub").unlink()
    host.start(authorized_keys=operator_key.with_suffix(".pub").read_text())
    changed = project.deploy("web", "stage", "--accept-new-host-keys")
    assert changed.returncode == 1
    assert "the host key CHANGED" in changed.stdout and str(known_hosts) in changed.stdout


def test_held_lock_stops_with_the_holder(project: Project, ssh_hosts, app_origin,
                                         operator_key) -> None:
    (host,) = ssh_hosts(1)
    web_project(project, [host], app_origin, operator_key)
    lock = host.home / "web" / ".deploy-lock"
    lock.mkdir(parents=True)
    (lock / "info").write_text("alice@laptop pid=4242 since 2026-11-23T06:00:00 deploying web\n")
    held = project.deploy("web", "stage", "--accept-new-host-keys")
    assert held.returncode == 3
    assert "deploy lock held by alice@laptop pid=4242" in held.stdout
    assert not (host.home / "web" / "current").exists()
    shutil.rmtree(lock)
    assert project.deploy("web", "stage").returncode == 0


def deploy_inside_a_slow_install(project: Project, ssh_hosts, app_origin: str, operator_key: Path,
                                 tmp_path: Path) -> tuple:
    """One host with a healthy release; then a deploy of a commit whose install.sh sleeps 3 s,
    returned while it is inside that script (the host, the good release, the running deploy)."""
    (host,) = ssh_hosts(1)
    slow = bad_origin(tmp_path, app_origin, health=False, sleep=3)
    web_project(project, [host], slow, operator_key, ref="good")
    assert project.deploy("web", "stage", "--accept-new-host-keys").returncode == 0
    good = os.readlink(host.home / "web" / "current")
    env = project.path / "deployments" / "env-stage"
    env.write_text(env.read_text().replace("git_ref=good", "git_ref=main"))
    run = subprocess.Popen([DEPLOY, "web", "stage"], cwd=project.path, env=project.environ,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (host.home / "web" / ".deploy-lock").exists():
        time.sleep(0.05)
    time.sleep(1.0)  # inside the slow install.sh
    return host, good, run


def test_killed_connection_mid_install_leaves_current_and_rerun_converges(
        project: Project, ssh_hosts, app_origin, operator_key, tmp_path: Path) -> None:
    host, good, run = deploy_inside_a_slow_install(project, ssh_hosts, app_origin, operator_key,
                                                   tmp_path)
    host.stop()  # sshd and the host's processes die, as in a crash
    out, err = run.communicate(timeout=120)
    assert run.returncode == 1, out + err
    assert f"root@{host.address}: connection lost during install.sh; nothing was restored" in out
    assert "audit" not in out  # where it happened, not a later step's failure
    assert os.readlink(host.home / "web" / "current") == good
    host.start(authorized_keys=operator_key.with_suffix(".pub").read_text())
    rerun = project.deploy("web", "stage")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "breaking a stale deploy lock" in rerun.stderr
    log = max((project.path / ".deployer" / "logs").glob("*-web-stage-apply.log")).read_text()
    assert f"[root@{host.address}] steps run: break_lock, lock, " in log  # planned from the probe
    assert os.readlink(host.home / "web" / "current") != good
    assert project.deploy("web", "stage", "--json").returncode == 0


def test_jump_host(project: Project, ssh_hosts, app_origin, operator_key) -> None:
    target, bastion = ssh_hosts(2)
    web_project(project, [target], app_origin, operator_key,
                extra=f"ssh_gateway=root@{bastion.address}\n")
    bastion.stop()
    down = project.deploy("web", "stage", "--accept-new-host-keys")
    assert down.returncode == 1 and "unreachable" in down.stdout
    bastion.start(authorized_keys=operator_key.with_suffix(".pub").read_text())
    through = project.deploy("web", "stage", "--accept-new-host-keys")
    assert through.returncode == 0, through.stdout + through.stderr
    known = (project.path / ".deployer" / "known_hosts" / "stage").read_text()
    assert bastion.address in known and target.address in known


def edge_env(project: Project, addresses: list[str], origin: str, key: Path) -> None:
    project.environ["DEPLOYER_SSH_KEY"] = str(key)
    project.write_env("prod", "\n".join([
        "edge_hosts=" + ", ".join(f"root@{a}" for a in addresses),
        f"git_repo={origin}", "git_ref=main", "frp_token=frp-t0ken-value-5678",
        "edge_api_url=http://localhost:8080/api", f"edge_port={free_port()}",
    ]) + "\n")


def test_edge_fleet_of_20_with_one_host_down(project: Project, ssh_hosts, app_origin,
                                             operator_key) -> None:
    hosts = ssh_hosts(19)
    down = hosts[0].address.rsplit(".", 1)[0] + ".20"  # nothing listens there
    edge_env(project, [h.address for h in hosts] + [down], app_origin, operator_key)
    started = time.monotonic()
    run = project.deploy("edge", "prod", "--accept-new-host-keys", "--json")
    took = time.monotonic() - started
    assert run.returncode == 1
    result = result_of(run)
    by_host = {h["host"]: h for h in result["fleet"]["hosts"]}
    assert by_host[f"root@{down}"]["status"] == "failed"
    assert "unreachable" in by_host[f"root@{down}"]["reason"]
    assert sum(h["status"] == "changed" for h in by_host.values()) == 19
    for host in hosts:  # each edge server really runs, on its own address
        unit = (host.home / "chronos-edge/current/.deploy/chronos-edge.service").read_text()
        assert "ExecStart=/usr/bin/env python3 edge_server/server.py" in unit
        assert "User=root" in unit
    # No systemd on these hosts: said plainly, and the stand-in supervisor is named as such.
    assert "no systemd on this host: started chronos-edge under nohup" in run.stderr
    assert took < 60, f"20 hosts took {took:.1f}s: not parallel"
    text = project.deploy("edge", "prod")
    assert f"FAILED on 1 host(s): root@{down}" in text.stdout
    assert text.stdout.count("unchanged") == 19


def test_ctrl_c_during_the_host_phase(project: Project, ssh_hosts, app_origin, operator_key,
                                      tmp_path: Path) -> None:
    """The host stops at its next step: lock released, `current` untouched, old release serving."""
    import signal

    host, good, run = deploy_inside_a_slow_install(project, ssh_hosts, app_origin, operator_key,
                                                   tmp_path)
    sleeping = [p for p in pids_naming("sleep 3") if Path(f"/proc/{p}/environ").read_bytes().find(
        f"HOME={host.home}".encode()) >= 0]
    assert sleeping, "the slow install.sh is not running"
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130, out + err
    assert "interrupted: hosts stopped at their next step" in err
    log = max((project.path / ".deployer" / "logs").glob("*web-stage-apply.log")).read_text()
    assert "interrupted: stopping the running command's process group" in log
    assert not [p for p in sleeping if Path(f"/proc/{p}").exists()
                and Path(f"/proc/{p}/stat").read_text().split()[2] != "Z"]  # the install was stopped
    assert "dashboard started" not in out + err  # the new release's install never got that far
    assert not (host.home / "web" / ".deploy-lock").exists()
    assert os.readlink(host.home / "web" / "current") == good
    assert "#112233" in page(project.port)


# --- No value is ever run as code (issue 12) -------------------------------------------------

def dotenv_quoted(value: str) -> str:
    """`value` as a single-quoted env-file value (python-dotenv: only \\\\ and \\' are escapes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def edge_project(project: Project, host, origin: str, key: Path, **values: str) -> Project:
    """The shipped edge stack (nohup fallback: the test hosts have no systemd) on one host,
    with `values` written so that deploy reads them back exactly."""
    from deployer.config import parse_env_text

    project.environ["DEPLOYER_SSH_KEY"] = str(key)
    values = {"edge_hosts": f"root@{host.address}", "git_repo": origin, "git_ref": "main",
              "frp_token": "frp-t0ken-value-5678", "edge_api_url": "http://localhost:8080/api",
              "edge_port": str(free_port()), **values}
    text = "".join(f"{k}={dotenv_quoted(v)}\n" for k, v in values.items())
    assert parse_env_text(text, "env-stage") == (values, [])
    project.write_env("stage", text)
    return project


def service_environ(host) -> dict[bytes, bytes]:
    """The environment of the edge server the fallback started, as the kernel holds it."""
    pid = (host.home / "chronos-edge" / "chronos-edge.pid").read_text().strip()
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"python3",
                                                                         b"edge_server/server.py"]
    return dict(entry.split(b"=", 1) for entry in raw.split(b"\0") if entry)


def edge_page(host, port: str) -> str:
    with urllib.request.urlopen(f"http://{host.address}:{port}/", timeout=5) as response:
        return response.read().decode()


@pytest.mark.parametrize("payload", [
    "$(touch {marker})",
    "`touch {marker}`",
    ";touch {marker}",
    "\";touch {marker};\"",
    "';touch {marker};'",
    "\n",  # replaced below: a newline the env file cannot carry is refused, naming the variable
])
def test_env_values_never_run_on_the_host(project: Project, ssh_hosts, app_origin, operator_key,
                                          tmp_path: Path, payload: str) -> None:
    (host,) = ssh_hosts(1)
    markers = [tmp_path / "marker-url", tmp_path / "marker-token"]
    url, token = (payload.format(marker=m) for m in markers)
    if payload == "\n":
        edge_project(project, host, app_origin, operator_key, edge_api_url="http://a/\n$(touch"
                     f" {markers[0]})")
        run = project.deploy("edge", "stage", "--accept-new-host-keys")
        assert run.returncode != 0
        assert ("edge.env.j2:4: {{ edge_api_url }}: the value contains a newline, which an env file"
                " cannot carry (format env)") in run.stdout + run.stderr
        assert not (host.home / "chronos-edge" / "current").exists()
        assert not markers[0].exists()
        return
    edge_project(project, host, app_origin, operator_key, edge_api_url=url, frp_token=token)
    run = project.deploy("edge", "stage", "--accept-new-host-keys")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "started chronos-edge under nohup" in run.stderr  # the fallback really ran
    for marker in markers:
        assert not marker.exists(), f"{marker.name}: the payload ran on the host"
    seen = service_environ(host)
    assert seen[b"EDGE_API_URL"] == url.encode()
    assert seen[b"FRP_TOKEN"] == token.encode()
    port = seen[b"EDGE_PORT"].decode()
    assert edge_page(host, port) == f"edge -> {url}\n"
    assert token not in "".join(p.read_text() for p in (project.path / ".deployer/logs").glob("*.log"))


def test_legal_values_reach_the_app_byte_for_byte(project: Project, ssh_hosts, app_origin,
                                                  operator_key) -> None:
    (host,) = ssh_hosts(1)
    url = "http://h/a b#c?d=$HOME&e=`id`&f='x'&g=\"y\"&h=\\$ é ✓ 😀  "
    token = "  t0k$en `with` 'quotes' \"and\" \\back\\slashes\\ # not a comment ünï"
    edge_project(project, host, app_origin, operator_key, edge_api_url=url, frp_token=token)
    run = project.deploy("edge", "stage", "--accept-new-host-keys")
    assert run.returncode == 0, run.stdout + run.stderr
    seen = service_environ(host)
    assert (seen[b"EDGE_API_URL"], seen[b"FRP_TOKEN"]) == (url.encode(), token.encode())
    assert edge_page(host, seen[b"EDGE_PORT"].decode()) == f"edge -> {url}\n"
    rendered = (host.home / "chronos-edge/current/edge_server/edge.env").read_text(encoding="utf-8")
    assert ('FRP_TOKEN="  t0k\\$en \\`with\\` \'quotes\' \\"and\\" \\\\back\\\\slashes\\\\'
            ' # not a comment ünï"') in rendered.splitlines()
    again = project.deploy("edge", "stage")
    assert again.returncode == 0 and "unchanged" in again.stdout, again.stdout + again.stderr


def test_rollback_to_a_name_that_is_not_a_release_stops_before_any_connection(
        project: Project, ssh_hosts, app_origin, operator_key) -> None:
    (host,) = ssh_hosts(1)
    edge_project(project, host, app_origin, operator_key)
    host.stop()  # a connection attempt would fail as unreachable (exit 1), not exit 2
    for bad in ("../../etc", "$(touch x)", "-rf", "20261118110640250-0123456/.."):
        run = project.deploy("rollback", "edge", "stage", "--to", bad, "--accept-new-host-keys")
        assert run.returncode == 2, run.stdout + run.stderr
        assert (f"--to {bad!r}: is not a release name (<17-digit UTC time>-<7-hex sha>, e.g."
                " 20261118110640250-0123456)") in run.stderr
        assert "unreachable" not in run.stdout + run.stderr
    assert not (project.path / ".deployer" / "known_hosts" / "stage").exists()


def test_rollback_to_a_release_the_host_does_not_have_changes_nothing(
        project: Project, ssh_hosts, app_origin, operator_key) -> None:
    (host,) = ssh_hosts(1)
    edge_project(project, host, app_origin, operator_key)
    assert project.deploy("edge", "stage", "--accept-new-host-keys").returncode == 0
    root = host.home / "chronos-edge"
    current, pid = os.readlink(root / "current"), (root / "chronos-edge.pid").read_text()
    audit = (root / "audit.log").read_text()
    missing = "20000101000000000-abcdef0"
    run = project.deploy("rollback", "edge", "stage", "--to", missing)
    assert run.returncode == 1, run.stdout + run.stderr
    assert (f"root@{host.address}: release {missing} does not exist in {root}/releases"
            f" (releases there: {current.removeprefix('releases/')})") in run.stdout
    assert os.readlink(root / "current") == current
    assert (root / "chronos-edge.pid").read_text() == pid  # nothing was restarted
    assert (root / "audit.log").read_text() == audit


def test_rollback_of_a_service_takes_the_lock_switches_first_and_checks_health(
        project: Project, ssh_hosts, app_origin, operator_key) -> None:
    """The edge service runs from `current`: rollback must switch before it restarts, or the
    release being left is the one restarted (and checked)."""
    (host,) = ssh_hosts(1)
    edge_project(project, host, app_origin, operator_key, edge_api_url="http://first/api")
    assert project.deploy("edge", "stage", "--accept-new-host-keys").returncode == 0
    root = host.home / "chronos-edge"
    first = os.readlink(root / "current")
    edge_project(project, host, app_origin, operator_key, edge_api_url="http://second/api",
                 edge_port=service_environ(host)[b"EDGE_PORT"].decode())
    assert project.deploy("edge", "stage").returncode == 0
    port = service_environ(host)[b"EDGE_PORT"].decode()
    assert edge_page(host, port) == "edge -> http://second/api\n"

    lock = root / ".deploy-lock"
    lock.mkdir()
    (lock / "info").write_text("bob@ci-runner pid=77 since 2026-12-01T00:00:00 deploying edge\n")
    held = project.deploy("rollback", "edge", "stage")
    assert held.returncode == 3, held.stdout + held.stderr
    assert "deploy lock held by bob@ci-runner pid=77" in held.stdout
    assert f"deploy unlock edge stage --host root@{host.address}" in held.stdout
    assert edge_page(host, port) == "edge -> http://second/api\n"  # nothing was touched
    refused = project.deploy("unlock", "edge", "stage")  # not interactive, no --yes
    assert lock.exists() and "pass --yes" in refused.stdout + refused.stderr
    unlocked = project.deploy("unlock", "edge", "stage", "--host", f"root@{host.address}", "-y")
    assert unlocked.returncode == 0, unlocked.stdout + unlocked.stderr
    assert "removed the deploy lock held by bob@ci-runner pid=77" in unlocked.stdout
    assert not lock.exists()
    assert "unlock: removed the lock held by bob@ci-runner" in (root / "audit.log").read_text()

    back = project.deploy("rollback", "edge", "stage")
    assert back.returncode == 0, back.stdout + back.stderr
    assert os.readlink(root / "current") == first
    assert edge_page(host, port) == "edge -> http://first/api\n"  # the release rolled back TO runs
    assert "health check 'edge http' passed" in back.stderr
    assert service_environ(host)[b"EDGE_API_URL"] == b"http://first/api"
    assert not lock.exists()
    assert "ok: rollback" in (root / "audit.log").read_text()
    log = max((project.path / ".deployer" / "logs").glob("*-edge-stage-rollback.log")).read_text()
    assert f"[root@{host.address}] steps run: lock, switch, install:edge_server/install.sh," \
        " restart:chronos-edge, health, audit, unlock" in log  # planner.plan_rollback's steps


def test_a_crashed_service_is_repaired_not_reported_unchanged(
        project: Project, ssh_hosts, app_origin, operator_key) -> None:
    (host,) = ssh_hosts(1)
    edge_project(project, host, app_origin, operator_key)
    assert project.deploy("edge", "stage", "--accept-new-host-keys").returncode == 0
    port = service_environ(host)[b"EDGE_PORT"].decode()
    pid = int((host.home / "chronos-edge" / "chronos-edge.pid").read_text())
    os.kill(pid, 9)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and \
            Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z":
        time.sleep(0.05)
    again = project.deploy("edge", "stage", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    result = result_of(again)["fleet"]["hosts"][0]
    assert result["status"] == "repaired", result
    assert "health check 'edge http'" in result["reason"]
    assert edge_page(host, port).startswith("edge -> ")
    log = max((project.path / ".deployer" / "logs").glob("*-edge-stage-apply.log")).read_text()
    assert f"[root@{host.address}] steps run: health, lock, install:edge_server/install.sh," \
        " restart:chronos-edge, health, audit, unlock" in log  # the unchanged plan's repair
    assert "repaired: restarted" in (host.home / "chronos-edge" / "audit.log").read_text()
    healthy = project.deploy("edge", "stage", "--json")
    assert result_of(healthy)["fleet"]["hosts"][0]["status"] == "unchanged"


def test_a_service_that_does_not_start_fails_the_host_and_the_previous_release_keeps_serving(
        project: Project, ssh_hosts, app_origin, operator_key) -> None:
    """The service starts after `current` has moved to the new release: when it does not start,
    the failure tail switches back and restarts the previous release."""
    (host,) = ssh_hosts(1)
    edge_project(project, host, app_origin, operator_key)
    assert project.deploy("edge", "stage", "--accept-new-host-keys").returncode == 0
    root = host.home / "chronos-edge"
    first = os.readlink(root / "current")
    port = service_environ(host)[b"EDGE_PORT"].decode()
    templates = project.path / "deployments" / "templates"
    templates.unlink()
    shutil.copytree(REPO / "deployments" / "templates", templates)
    unit = templates / "edge" / "chronos-edge.service.j2"
    unit.write_text(unit.read_text().replace("WorkingDirectory={{ home }}/chronos-edge/current",
                                             "WorkingDirectory=/nonexistent/workdir"))
    run = project.deploy("edge", "stage")
    assert run.returncode == 1, run.stdout + run.stderr
    assert re.search(r"start of chronos-edge \(nohup, exit \d+: .*/nonexistent/workdir.*\) failed on"
                     rf" root@{re.escape(host.address)}; release \S+ not made current; current stays",
                     run.stdout), run.stdout
    assert os.readlink(root / "current") == first  # switched back
    assert edge_page(host, port).startswith("edge -> ")  # and the previous release serves


def test_a_second_service_the_fallback_cannot_run_stops_the_host_before_the_switch(
        project: Project, ssh_hosts, app_origin, operator_key) -> None:
    """Every service's command line is read before the first one starts: a unit the nohup
    fallback cannot run ($VAR in ExecStart) fails the host with `current` and the running
    service untouched, not after the first service has moved to the new release."""
    (host,) = ssh_hosts(1)
    edge_project(project, host, app_origin, operator_key)
    assert project.deploy("edge", "stage", "--accept-new-host-keys").returncode == 0
    root = host.home / "chronos-edge"
    first = os.readlink(root / "current")
    pid = (root / "chronos-edge.pid").read_text()
    stack = project.path / "deployments" / "stacks" / "edge.toml"
    text = stack.read_text().replace("[app.service]", "[[app.services]]")
    stack.unlink()
    stack.write_text(text + '\n[[app.services]]\nname = "edge-side"\ntemplate = "side.service.j2"\n'
                     'fallback = "nohup"\n')
    (project.path / "side.service.j2").write_text(
        "[Service]\nExecStart=/bin/sleep $SIDE_SECONDS\n")
    run = project.deploy("edge", "stage")
    assert run.returncode != 0, run.stdout + run.stderr
    assert "edge-side.service: ExecStart" in run.stdout + run.stderr
    assert "which the nohup fallback cannot run" in run.stdout + run.stderr
    assert os.readlink(root / "current") == first
    assert (root / "chronos-edge.pid").read_text() == pid  # not restarted from the new release
    assert edge_page(host, service_environ(host)[b"EDGE_PORT"].decode()).startswith("edge -> ")


def test_one_release_name_for_the_whole_fleet_so_rollback_to_works_on_every_host(
        project: Project, ssh_hosts, app_origin, operator_key) -> None:
    hosts = ssh_hosts(2)
    edge_project(project, hosts[0], app_origin, operator_key,
                 edge_hosts=" ".join(f"root@{h.address}" for h in hosts))
    assert project.deploy("edge", "stage", "--accept-new-host-keys").returncode == 0
    roots = [h.home / "chronos-edge" for h in hosts]
    names = {os.readlink(r / "current") for r in roots}
    assert len(names) == 1, names
    (first,) = names
    env = project.path / "deployments" / "env-stage"
    env.write_text(env.read_text().replace("http://localhost:8080/api", "http://other/api"))
    assert project.deploy("edge", "stage").returncode == 0
    assert {os.readlink(r / "current") for r in roots} != {first}
    back = project.deploy("rollback", "edge", "stage", "--to", first.removeprefix("releases/"))
    assert back.returncode == 0, back.stdout + back.stderr
    assert {os.readlink(r / "current") for r in roots} == {first}


@pytest.mark.parametrize("holder_changes", [False, True])
def test_breaking_a_stale_lock_is_atomic(tmp_path: Path, holder_changes: bool) -> None:
    """Two runs break the same stale lock at once: exactly one wins. A lock that another run
    has taken again meanwhile is left alone. (The builder's shell, run by a real sh.)"""
    from deployer.hosts import commands as cmd

    root = tmp_path / "app"
    (root / cmd.LOCK_DIR).mkdir(parents=True)
    stale = "ci@runner pid=1 since 2026-12-01T00:00:00 deploying edge/stage"
    now = "ci@runner pid=2 since 2026-12-02T00:00:00 deploying edge/stage"
    (root / cmd.LOCK_DIR / "info").write_text((now if holder_changes else stale) + "\n")
    script = cmd.break_lock(str(root), stale + "\n")
    runs = [subprocess.Popen(["sh", "-c", script]) for _ in range(2)]
    codes = sorted(r.wait() for r in runs)
    if holder_changes:
        assert codes == [cmd.LOCK_MOVED, cmd.LOCK_MOVED]
        assert (root / cmd.LOCK_DIR / "info").read_text() == now + "\n"
    else:
        assert codes == [0, cmd.LOCK_MOVED]
        assert not (root / cmd.LOCK_DIR).exists()
    assert [p.name for p in root.iterdir()] == ([cmd.LOCK_DIR] if holder_changes else [])


def test_two_runs_at_once_never_split_the_fleet(project: Project, ssh_hosts, app_origin,
                                                operator_key, tmp_path: Path) -> None:
    """Per-host locks alone let two runs started together each win some hosts. The run lock
    (in the lock table) lets one run through; the other stops before it touches any host."""
    from deployer.config import load_settings

    hosts = ssh_hosts(3)
    work = tmp_path / "slow-edge"
    subprocess.run(["git", "clone", "-q", app_origin, str(work)], check=True)
    install = work / "edge_server" / "install.sh"
    install.write_text(install.read_text().replace("set -eu\n", "set -eu\nsleep 4\n"))
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(work), "commit",
                    "-qam", "a slow install"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(tmp_path / "slow.git")], check=True)
    edge_project(project, hosts[0], f"file://{tmp_path / 'slow.git'}", operator_key,
                 edge_hosts=" ".join(f"root@{h.address}" for h in hosts))
    table = load_settings(project.path, project.environ).lock_table
    ddb = project.client("dynamodb")
    ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}])
    first = subprocess.Popen([DEPLOY, "edge", "stage", "--accept-new-host-keys"], cwd=project.path,
                             env=project.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ddb.scan(TableName=table)["Items"]:
        time.sleep(0.05)
    second = project.deploy("edge", "stage", "--accept-new-host-keys")
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err
    assert second.returncode == 3, second.stdout + second.stderr
    assert re.search(rf"error: edge/stage \(run lock in dynamodb:{table}\) is locked by \S+@\S+"
                     r" pid=\d+ since \S+ deploying edge/stage to 3 host\(s\); if that run is gone:"
                     r" deploy unlock edge stage", second.stderr), second.stderr
    assert "run lock: edge/stage held in dynamodb:" in err
    assert len({os.readlink(h.home / "chronos-edge" / "current") for h in hosts}) == 1
    for h in hosts:  # the second run wrote nothing on any host
        assert (h.home / "chronos-edge" / "audit.log").read_text().count("result=ok") == 1
    assert ddb.scan(TableName=table)["Items"] == []


def test_lifecycle_steps_shared_files_and_an_after_switch_failure(
        project: Project, ssh_hosts, operator_key, tier_origin, tmp_path: Path) -> None:
    hosts = ssh_hosts(2)
    project.add_stack("lifecycle")
    (project.path / "testdata").symlink_to(Path(__file__).parent / "data")
    project.environ["DEPLOYER_SSH_KEY"] = str(operator_key)
    notify = tmp_path / "notified"
    project.environ["NOTIFY_FILE"] = str(notify)
    env = project.write_env("stage", f'web_hosts="{" ".join(f"root@{h.address}" for h in hosts)}"\n'
                            f"git_repo={tier_origin}\ngit_ref=main\nfail_hosts=\n")

    first = project.deploy("lifecycle", "stage", "--accept-new-host-keys")
    assert first.returncode == 0, first.stdout + first.stderr
    release = os.readlink(hosts[0].home / "tier" / "current")
    for host in hosts:
        lines = (host.home / "steps").read_text().splitlines()
        kinds = [line.split()[0] for line in lines]
        assert [k for k in kinds if k != "migrate"] == ["backup", "build", "before_switch", "after_switch"]
        assert lines[kinds.index("before_switch")] == "before_switch "  # not switched yet: no current
        assert lines[kinds.index("after_switch")] == f"after_switch {release}"
        shared = host.home / "tier" / "shared" / "config" / "app.env"
        linked = host.home / "tier" / "current" / "config" / "app.env"
        assert linked.is_symlink() and os.readlink(linked) == str(shared)
        assert shared.is_file() and not shared.is_symlink()
        assert shared.read_text() == "SEED=from the first release\n"
        assert (host.home / "tier" / "current" / "storage").is_symlink()
    migrations = [line for h in hosts for line in (h.home / "steps").read_text().splitlines()
                  if line.startswith("migrate")]
    assert migrations == [f"migrate {hosts[0].address} {migrations[0].split()[2]}"]  # once: the lead
    assert len(migrations[0].split()[2]) == 40
    assert not notify.exists()

    (hosts[0].home / "tier" / "shared" / "config" / "app.env").write_text("KEPT=1\n")
    (hosts[0].home / "break-after").write_text("")
    env.write_text(env.read_text().replace("fail_hosts=\n", "fail_hosts=nobody\n"))
    second = project.deploy("lifecycle", "stage")
    assert second.returncode == 1, second.stdout + second.stderr
    assert (f"health check 'serving' failed on root@{hosts[0].address}; release") in second.stdout
    assert os.readlink(hosts[0].home / "tier" / "current") == release  # switched back
    assert os.readlink(hosts[1].home / "tier" / "current") != release  # the other host went on
    assert notify.read_text() == f"health check 'serving' on {hosts[0].address}\n"  # exactly once
    shared = hosts[0].home / "tier" / "shared" / "config" / "app.env"
    assert shared.is_file() and not shared.is_symlink() and shared.read_text() == "KEPT=1\n"
    # The runner took exactly the planner's steps, failure tail included.
    app = load_stack(project.path, "lifecycle").apps["tier"]
    manifest = json.loads((hosts[0].home / "tier" / "current" / ".deploy" / "manifest.json").read_text())
    plan = plan_host(app, Found(release.removeprefix("releases/"), "old", manifest["sha"]),
                     fingerprint="new", sha=manifest["sha"])
    log = max((project.path / ".deployer" / "logs").glob("*-lifecycle-stage-apply.log")).read_text()
    ran = re.findall(rf"\[root@{re.escape(hosts[0].address)}\] steps run: (.*)", log)
    assert ran and ran[-1] == ", ".join(run_order(app, plan, fails="health:after_switch"))
    assert "restore" in ran[-1] and plan.change == CONFIG


def test_a_full_disk_is_named_not_gits_last_line(project: Project, ssh_hosts, app_origin,
                                                 operator_key) -> None:
    """The release directory on a 96 KiB tmpfs: the clone runs out of space while writing its
    refs, and git's last line ("unable to update refs/remotes/origin/HEAD") hides why."""
    (host,) = ssh_hosts(1)
    web_project(project, [host], app_origin, operator_key)
    root = host.home / "web"
    root.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(root)], check=True)
    try:
        run = project.deploy("web", "stage", "--accept-new-host-keys")
        assert run.returncode == 1, run.stdout + run.stderr
        assert re.search(r"git clone failed: .*(No space left on device|Out of diskspace)",
                         run.stdout), run.stdout
    finally:
        subprocess.run(["umount", "-l", str(root)], check=True)


def test_plan_previews_each_host_without_changing_it_or_showing_a_value(
        project: Project, ssh_hosts, app_origin, operator_key) -> None:
    (host,) = ssh_hosts(1)
    web_project(project, [host], app_origin, operator_key)
    fresh = project.deploy("web", "stage", "plan", "--accept-new-host-keys")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    sha = subprocess.run(["git", "ls-remote", app_origin, "main"], capture_output=True, text=True,
                         check=True).stdout.split()[0]
    assert (f"host     root@{host.address}  planned   no release (-) -> {sha[:7]}; new commit;"
            " files: .env.deployment, dashboard_backend/.env.docker, dashboard_frontend/.env.docker,"
            " frp_config/frps.toml; steps: lock, fetch, upload, install:install.sh, health,"
            " switch, prune, audit, unlock") in fresh.stdout
    assert "OK: plan has changes" in fresh.stdout
    assert not (host.home / "web").exists()  # read-only
    assert project.deploy("web", "stage").returncode == 0
    current = os.readlink(host.home / "web" / "current").removeprefix("releases/")

    env = project.path / "deployments" / "env-stage"
    env.write_text(env.read_text().replace("background_color=#112233", "background_color=#445566"))
    config = project.deploy("web", "stage", "plan")
    assert (f"planned   {current} ({sha[:7]}) -> {sha[:7]}; config only; files:"
            " dashboard_frontend/.env.docker; steps: lock, copy") in config.stdout
    assert "#445566" not in config.stdout + config.stderr  # names, never values
    for value in SECRETS.values():
        assert value not in config.stdout + config.stderr
    assert os.readlink(host.home / "web" / "current") == f"releases/{current}"
    env.write_text(env.read_text().replace("background_color=#445566", "background_color=#112233"))
    same = project.deploy("web", "stage", "plan")
    assert f"unchanged {current} ({sha[:7]}) -> {sha[:7]}; unchanged; steps: health" in same.stdout
    assert "OK: no changes" in same.stdout
