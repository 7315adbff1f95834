"""Pre-flight checks (`deploy doctor STACK ENV`): the probe builder and what its answers mean,
exactly; the probe itself under dash and bash; then the real CLI against real OpenSSH hosts on
loopback (tests/data/preflight.toml), and a real sandbox machine for a login without sudo."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer import doctor
from deployer.config import EnvConfig, load_settings
from deployer.doctor import ReachTarget, host_checks, not_reached, parse_facts, reach_targets
from deployer.hosts import commands as cmd
from deployer.logs import RunLog
from deployer.results import Check, DoctorResult, to_data
from deployer.secrets import Masker
from deployer.stacks import DoctorSpec, Reach

from conftest import REPO, Project, result_of

# --- the probe builder ---------------------------------------------------------------------

START = "printf 'clock_%s=%s\\n' start \"$(date +%s.%N)\""
END = "printf 'clock_%s=%s\\n' end \"$(date +%s.%N)\""
SUDO = ('if [ "$(id -u)" = 0 ]; then echo sudo=root; elif ! command -v sudo >/dev/null 2>&1;'
        " then echo sudo=missing; elif out=$(sudo -n true 2>&1 < /dev/null); then echo sudo=yes;"
        " else printf 'sudo=no %s\\n' \"$(printf %s \"$out\" | head -n 1)\"; fi")
OS = ("{ cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null; }"
      " | sed -n -e 's/^ID=/os_id=/p' -e 's/^VERSION_ID=/os_version=/p'")


def disk(path: str) -> str:
    return f"df -Pk -- {path} 2>/dev/null | awk 'NR == 2 {{ print \"disk_kb=\" $4 }}'"


PY = shlex.quote(cmd._REACH_PY)
BASH = 'timeout 3 bash -c "exec 3<>\\"/dev/tcp/\\$1/\\$2\\"" reach'


@pytest.mark.parametrize(("args", "expected"), [
    (("/",), [START, SUDO, OS, disk("/"), END]),
    (("/var/lib/app data", ("git", "python3")),
     [START, SUDO, OS, disk("'/var/lib/app data'"),
      "for c in git python3; do if command -v \"$c\" >/dev/null 2>&1; then r=yes; else r=no; fi;"
      " printf 'command:%s=%s\\n' \"$c\" \"$r\"; done", END]),
    (("/", (), (("10.0.0.5", 5432),)),
     [START, SUDO, OS, disk("/"),
      f"if command -v python3 >/dev/null 2>&1; then python3 -c {PY} 3 0 10.0.0.5 5432; elif"
      " command -v bash >/dev/null 2>&1 && command -v timeout >/dev/null 2>&1; then"
      f" {BASH} 10.0.0.5 5432 2>/dev/null; printf 'reach.0=exit %s\\n' \"$?\"; else"
      " echo reach.0=untested; fi", END]),
])
def test_doctor_probe_is_one_command_with_the_clock_first_and_last(args: tuple, expected: list) -> None:
    assert cmd.doctor_probe(*args) == "; ".join(expected)


@pytest.mark.parametrize(("targets", "timeout", "expected"), [
    ((("10.0.0.5", 5432), ("db-1.internal", 22)), 3,
     f"if command -v python3 >/dev/null 2>&1; then python3 -c {PY} 3 0 10.0.0.5 5432 1 db-1.internal"
     " 22; elif command -v bash >/dev/null 2>&1 && command -v timeout >/dev/null 2>&1; then"
     f" {BASH} 10.0.0.5 5432 2>/dev/null; printf 'reach.0=exit %s\\n' \"$?\";"
     f" {BASH} db-1.internal 22 2>/dev/null; printf 'reach.1=exit %s\\n' \"$?\"; else"
     " echo reach.0=untested; echo reach.1=untested; fi"),
    # Validated before it gets here; quoted all the same: an argument, never code.
    ((("a'b; reboot", 1),), 2.5,
     f"if command -v python3 >/dev/null 2>&1; then python3 -c {PY} 2.5 0 'a'\"'\"'b; reboot' 1;"
     " elif command -v bash >/dev/null 2>&1 && command -v timeout >/dev/null 2>&1; then"
     ' timeout 2.5 bash -c "exec 3<>\\"/dev/tcp/\\$1/\\$2\\"" reach \'a\'"\'"\'b; reboot\' 1 2>/dev/null;'
     " printf 'reach.0=exit %s\\n' \"$?\"; else echo reach.0=untested; fi"),
])
def test_reach_probe(targets: tuple, timeout: float, expected: str) -> None:
    assert cmd.reach_probe(targets, timeout) == expected


# --- what the answers mean ----------------------------------------------------------------

SPEC = DoctorSpec(min_free_mb=1024, disk_path="/srv", os=("debian 12", "ubuntu"), commands=("git",),
                  max_clock_skew=5.0, reach=(Reach("app", "db_address", 5432),))
REACH = (ReachTarget("reach db_address:5432", "10.0.0.7", 5432),)
W = "deploy@10.0.0.5"
GOOD = {"clock_start": "1000.1", "sudo": "yes", "os_id": "debian", "os_version": '"12"',
        "disk_kb": str(2048 * 1024), "command:git": "yes", "reach.0": "ok", "clock_end": "1000.1"}
ALL_OK = [Check(W, "sudo", True, "sudo -n true works"),
          Check(W, "os", True, "debian 12"),
          Check(W, "disk", True, "2048 MB free on /srv (needs 1024 MB)"),
          Check(W, "command git", True, "installed"),
          Check(W, "clock", True, "0.0s ahead of this machine (max 5s)"),
          Check(W, "reach db_address:5432", True, "10.0.0.7:5432 connected")]


def checks_for(facts: dict[str, str], missing: str = "") -> list[Check]:
    """The checks of a probe sent at 1000.0 and answered at 1000.2, by our clock."""
    return host_checks(W, SPEC, REACH, facts, sent=1000.0, received=1000.2, user="deploy",
                       missing=missing)


@pytest.mark.parametrize(("changed", "expected"), [
    ({}, None),
    ({"sudo": "root"}, Check(W, "sudo", True, "root: no sudo needed")),
    ({"sudo": "no sudo: a password is required"},
     Check(W, "sudo", False, "sudo -n true failed (sudo: a password is required): deploy needs"
                             " sudo without a password, or log in as root")),
    ({"sudo": "missing"}, Check(W, "sudo", False, "sudo is not installed, and deploy is not root")),
    ({"os_id": "ubuntu", "os_version": '"24.04"'}, Check(W, "os", True, "ubuntu 24.04")),
    ({"os_version": "11"},
     Check(W, "os", False, "debian 11, not one of: debian 12, ubuntu (doctor.os)")),
    ({"disk_kb": str(1023 * 1024 + 1023)},
     Check(W, "disk", False, "1023 MB free on /srv, under the 1024 MB needed (doctor.min_free_mb)")),
    ({"command:git": "no"}, Check(W, "command git", False, "git is not installed (not on the"
                                                            " login's PATH)")),
    ({"clock_start": "1007.1", "clock_end": "1007.1"},
     Check(W, "clock", False, "7.0s ahead of this machine, more than 5s (doctor.max_clock_skew);"
                              " sync its clock (NTP)")),
    ({"clock_start": "995.2", "clock_end": "995.2"},
     Check(W, "clock", True, "4.9s behind this machine (max 5s)")),
    # A date(1) without %N: whole seconds are enough to measure seconds of skew.
    ({"clock_start": "1007", "clock_end": "1007.%N"},
     Check(W, "clock", False, "6.9s ahead of this machine, more than 5s (doctor.max_clock_skew);"
                              " sync its clock (NTP)")),
    ({"reach.0": "error [Errno 111] Connection refused"},
     Check(W, "reach db_address:5432", False, "10.0.0.7:5432: [Errno 111] Connection refused")),
    ({"reach.0": "error timed out"},
     Check(W, "reach db_address:5432", False, "10.0.0.7:5432: timed out")),
    ({"reach.0": "exit 0"}, Check(W, "reach db_address:5432", True, "10.0.0.7:5432 connected")),
    ({"reach.0": "exit 124"},
     Check(W, "reach db_address:5432", False, "10.0.0.7:5432: no connection within 3s")),
    ({"reach.0": "exit 1"},
     Check(W, "reach db_address:5432", False, "10.0.0.7:5432: cannot connect (bash /dev/tcp exit 1)")),
    ({"reach.0": "untested"},
     Check(W, "reach db_address:5432", False, "10.0.0.7:5432 not tried: the host has neither"
                                              " python3 nor bash with timeout to try it")),
])
def test_host_checks_each_answer(changed: dict[str, str], expected: Check | None) -> None:
    found = checks_for({**GOOD, **changed})
    if expected is None:
        assert found == ALL_OK
        return
    assert [c for c in found if c.name == expected.name] == [expected]
    assert [c for c in found if c.name != expected.name] == [c for c in ALL_OK if c.name != expected.name]


def test_host_checks_without_answers_say_why() -> None:
    why = " (the probe exited 127: sh: 1: date: not found)"
    assert checks_for({}, missing=why) == [
        Check(W, "sudo", False, f"the probe gave no answer about sudo{why}"),
        Check(W, "os", False, f"the probe gave no ID from /etc/os-release{why}"),
        Check(W, "disk", False, f"the probe gave no free space for /srv (does it exist?){why}"),
        Check(W, "command git", False, f"the probe gave no answer for git{why}"),
        Check(W, "clock", False, f"the probe gave no time (date +%s){why}"),
        Check(W, "reach db_address:5432", False, f"the probe gave no answer for 10.0.0.7:5432{why}"),
    ]


def test_an_unreachable_host_fails_once_and_runs_nothing_else() -> None:
    assert not_reached(W, SPEC, REACH, "deploy@10.0.0.5: unreachable after 4 attempts") == [
        Check(W, "reachable", False, "deploy@10.0.0.5: unreachable after 4 attempts"),
        *(Check(W, name, None, "the host was not reached")
          for name in ("sudo", "os", "disk", "command git", "clock", "reach db_address:5432")),
    ]


@pytest.mark.parametrize(("values", "expected"), [
    ({"db_address": "10.0.0.7", "cache": "cache-1.internal"},
     (ReachTarget("reach db_address:5432", "10.0.0.7", 5432),
      ReachTarget("reach cache:6379", "cache-1.internal", 6379))),
    ({"db_address": "", "cache": "fd00::7"},
     (ReachTarget("reach db_address:5432", "", 5432,
                  "db_address is empty in the env file; nothing to connect to"),
      ReachTarget("reach cache:6379", "fd00::7", 6379))),
    ({"db_address": "-oProxyCommand=sh", "cache": "$(reboot)"},
     (ReachTarget("reach db_address:5432", "-oProxyCommand=sh", 5432,
                  "db_address in the env file is not an IP address or a host name; not tried"),
      ReachTarget("reach cache:6379", "$(reboot)", 6379,
                  "cache in the env file is not an IP address or a host name; not tried"))),
])
def test_reach_targets_of_a_role_with_their_addresses_checked(values: dict, expected: tuple) -> None:
    spec = DoctorSpec(reach=(Reach("app", "db_address", 5432), Reach("web", "db_address", 5432),
                             Reach("app", "cache", 6379)))
    assert reach_targets(spec, "app", values) == expected
    assert reach_targets(spec, "db", values) == ()


def test_a_reach_not_tried_takes_no_slot_in_the_probe() -> None:
    spec = DoctorSpec(reach=(Reach("app", "bad", 1), Reach("app", "good", 2)))
    reach = reach_targets(spec, "app", {"bad": "-x", "good": "10.0.0.9"})
    found = host_checks(W, spec, reach, {"reach.0": "ok"}, sent=0, received=0)
    assert [(c.name, c.ok) for c in found if c.name.startswith("reach")] == [
        ("reach bad:1", False), ("reach good:2", True)]


@pytest.mark.parametrize(("text", "facts"), [
    ("sudo=root\nos_id=debian\n", {"sudo": "root", "os_id": "debian"}),
    # a banner, a shell's chatter and a repeated key: only the first known key=value counts
    ("Welcome to prod!\nPATH=/bin\nsudo=no sudo: a=b\nsudo=yes\nreach.0=ok\nreach.x=ok\n",
     {"sudo": "no sudo: a=b", "reach.0": "ok"}),
    ("command:python3=yes\ncommand:g++=no\n", {"command:python3": "yes", "command:g++": "no"}),
    ("", {}),
])
def test_parse_facts(text: str, facts: dict[str, str]) -> None:
    assert parse_facts(text) == facts


@pytest.mark.parametrize(("times", "offset"), [
    ((100.0, 100.2, 100.1, 100.1), 0.0),
    ((100.0, 100.2, 107.05, 107.15), 7.0),  # 0.05 s each way, 0.1 s spent on the host
    ((100.0, 104.0, 96.5, 99.5), -4.0),  # 0.5 s each way, 3 s of reach checks on the host
])
def test_clock_offset_is_measured_over_the_round_trip(times: tuple, offset: float) -> None:
    assert doctor.clock_offset(*times) == offset


def test_doctor_result_ok_failed_and_json() -> None:
    result = DoctorResult((Check("local", "env file", False, "run: chmod 600 x"),
                           Check("root@h", "reachable", True), Check("root@h", "disk", None)))
    assert result.failed == (result.checks[0],) and not result.ok
    data = to_data(result)
    assert data["ok"] is False and data["failed"] == ["local env file"]
    assert data["checks"][2] == {"where": "root@h", "name": "disk", "ok": None, "detail": ""}
    assert DoctorResult((Check("local", "x", True), Check("h", "y", None))).ok


# --- here: files, tools and git, for real ------------------------------------------------


@pytest.mark.parametrize(("mode", "ok"), [(0o600, True), (0o400, True), (0o640, False), (0o644, False)])
def test_env_file_mode(tmp_path: Path, mode: int, ok: bool) -> None:
    env = tmp_path / "my env" / "env-stage"
    env.parent.mkdir()
    env.write_text("a=b\n")
    env.chmod(mode)
    found = doctor.env_file_check(env)
    assert found.ok is ok
    if ok:
        assert found.detail == f"{env} (mode {mode:04o})"
    else:
        assert found.detail == (f"{env} is mode {mode:04o}: it holds secrets, and group or others"
                                f" can read it; run: chmod 600 '{env}'")


def test_ssh_key_checks(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    assert doctor.ssh_key_check("").ok is None
    missing = doctor.ssh_key_check(str(key))
    assert (missing.ok, missing.detail) == (False, f"{key} (DEPLOYER_SSH_KEY): No such file or directory")
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    key.chmod(0o644)
    loose = doctor.ssh_key_check(str(key))
    assert (loose.ok, loose.detail) == (False, f"{key} is mode 0644: others can read it;"
                                               f" run: chmod 600 {key}")
    key.chmod(0o600)
    assert doctor.ssh_key_check(str(key)) == Check("local", "ssh key", True, f"{key} (mode 0600)")


def test_local_tools_and_git_through_the_subprocess_choke_point(tmp_path: Path) -> None:
    log = RunLog(tmp_path / "doctor.log", Masker())
    spec = DoctorSpec(tools=("ssh", "no-such-tool-here", "git"))
    env = tmp_path / "env-stage"
    env.write_text("")
    env.chmod(0o600)
    settings = load_settings(tmp_path, {"PATH": os.environ["PATH"]})
    found = doctor.local_checks(settings, EnvConfig("stage", env, {}, frozenset()), spec, log)
    by_name = {c.name: c for c in found}
    assert [c.name for c in found] == ["tool ssh", "tool no-such-tool-here", "tool git", "ssh key",
                                       "env file"]
    assert by_name["tool ssh"].ok and by_name["tool ssh"].detail.endswith("/ssh")
    assert by_name["tool no-such-tool-here"] == Check(
        "local", "tool no-such-tool-here", False, "no-such-tool-here is not on PATH; install it")
    assert by_name["tool git"].ok and by_name["tool git"].detail.startswith("git version ")
    assert "--version" in (tmp_path / "doctor.log").read_text()
    bare = load_settings(tmp_path, {"PATH": str(tmp_path)})
    assert doctor.git_check(bare, log) == Check("local", "tool git", False,
                                                "git is not on PATH; install it")


# --- the probe itself, as a host's shell runs it ---------------------------------------------


@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_the_probe_runs_in_a_posix_shell_and_its_answers_parse(shell: str) -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        open_port = listening.getsockname()[1]
        with socket.socket() as closed:  # bound, never listening: a connection is refused
            closed.bind(("127.0.0.1", 0))
            closed_port = closed.getsockname()[1]
            spec = DoctorSpec(min_free_mb=1, commands=("sh", "no-such-command-here"),
                              reach=(Reach("app", "up", open_port), Reach("app", "down", closed_port)))
            reach = reach_targets(spec, "app", {"up": "127.0.0.1", "down": "127.0.0.1"})
            probe = cmd.doctor_probe("/", spec.commands, tuple((t.address, t.port) for t in reach))
            sent = time.time()
            done = subprocess.run([shell, "-c", probe], capture_output=True, text=True, timeout=30)
            received = time.time()
    assert done.returncode == 0 and done.stderr == ""
    found = host_checks("here", spec, reach, parse_facts(done.stdout), sent=sent, received=received)
    assert [(c.name, c.ok) for c in found[1:]] == [
        ("disk", True), ("command sh", True), ("command no-such-command-here", False),
        ("clock", True), (f"reach up:{open_port}", True), (f"reach down:{closed_port}", False)]
    assert found[0].name == "sudo" and found[0].detail  # root here; CI may differ
    assert found[-1].detail == f"127.0.0.1:{closed_port}: [Errno 111] Connection refused"


@pytest.mark.parametrize(("tools", "answers"), [
    (("python3", "bash", "timeout"), ["ok", "error [Errno 111] Connection refused"]),
    (("bash", "timeout"), ["exit 0", "exit 1"]),  # no python3: bash's /dev/tcp
    ((), ["untested", "untested"]),
])
def test_reach_probe_with_python3_with_bash_and_with_neither(tools: tuple, answers: list,
                                                             tmp_path: Path) -> None:
    """A host's PATH with only `tools` on it, taken from this machine's system directories."""
    for tool in tools:
        (tmp_path / tool).symlink_to(shutil.which(tool, path="/usr/bin:/bin"))
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        closed.bind(("127.0.0.1", 0))
        probe = cmd.reach_probe((("127.0.0.1", listening.getsockname()[1]),
                                 ("127.0.0.1", closed.getsockname()[1])))
        done = subprocess.run([shutil.which("dash"), "-c", probe], env={"PATH": str(tmp_path)},
                              capture_output=True, text=True, timeout=30)
    assert done.stdout.splitlines() == [f"reach.{i}={a}" for i, a in enumerate(answers)]


# --- the CLI against real hosts --------------------------------------------------------------


def preflight_project(project: Project, hosts: list, key: Path, *, db_address: str,
                      bootstrap: str = "root", changes: tuple[tuple[str, str], ...] = ()) -> Path:
    """tests/data/preflight.toml (with `changes` made to a copy of it) and env-stage."""
    if changes:
        text = (REPO / "tests/data/preflight.toml").read_text()
        for old, new in changes:
            assert old in text
            text = text.replace(old, new)
        (project.path / "deployments" / "stacks" / "preflight.toml").write_text(text)
    elif not (project.path / "deployments" / "stacks" / "preflight.toml").exists():
        project.add_stack("preflight")
    project.environ["DEPLOYER_SSH_KEY"] = str(key)
    return project.write_env("stage", "\n".join([
        "app_hosts=" + " ".join(hosts), "git_repo=file:///nonexistent/app.git", "git_ref=main",
        f"bootstrap_user={bootstrap}", "deploy_user=deployer", f"db_address={db_address}"]) + "\n")


def rows(stdout: str) -> dict[tuple[str, str], tuple[str, str]]:
    """The table as {(where, check): (result, detail)}."""
    lines = stdout.splitlines()
    header = lines[0]
    cols = [header.index(name) for name in ("WHERE", "CHECK", "RESULT", "DETAIL")]
    found = {}
    for line in lines[1:-1]:
        cells = [line[a:b].strip() for a, b in zip(cols, [*cols[1:], None], strict=True)]
        found[(cells[0], cells[1])] = (cells[2], cells[3])
    return found


@pytest.mark.slow
def test_all_checks_pass_on_a_good_host(project: Project, ssh_hosts, operator_key: Path) -> None:
    (host,) = ssh_hosts(1)
    preflight_project(project, [host.address], operator_key, db_address=host.address)
    run = project.deploy("doctor", "preflight", "stage", "--accept-new-host-keys")
    assert run.returncode == 0, run.stdout + run.stderr
    table = rows(run.stdout)
    where = f"root@{host.address}"
    assert [k for k, (result, _) in table.items() if result != "ok"] == []
    assert [name for w, name in table if w == where] == [
        "reachable", "sudo", "os", "disk", "command sh", "command git", "command python3", "clock",
        "reach db_address:22"]
    assert [name for w, name in table if w == "local"] == [
        "tool ssh", "tool ssh-keygen", "tool git", "ssh key", "env file"]
    assert table[(where, "sudo")] == ("ok", "root: no sudo needed")
    assert table[(where, "reach db_address:22")] == ("ok", f"{host.address}:22 connected")
    assert run.stdout.splitlines()[-1] == "doctor: OK, 14 checks passed"
    assert f"[{where}] doctor: 9 checks passed" in run.stderr

    again = project.deploy("doctor", "preflight", "stage", "--json")  # the key is known now
    assert again.returncode == 0, again.stderr
    data = result_of(again)
    assert data["ok"] is True and data["failed"] == [] and len(data["checks"]) == 14


@pytest.mark.slow
def test_free_disk_under_the_threshold_fails_naming_host_and_threshold(
        project: Project, ssh_hosts, operator_key: Path) -> None:
    (host,) = ssh_hosts(1)
    preflight_project(project, [host.address], operator_key, db_address=host.address,
                      changes=(("min_free_mb = 64", "min_free_mb = 100000000"),))
    run = project.deploy("doctor", "preflight", "stage", "--accept-new-host-keys")
    assert run.returncode == 1, run.stdout + run.stderr
    where = f"root@{host.address}"
    result, detail = rows(run.stdout)[(where, "disk")]
    assert result == "FAILED"
    assert detail.endswith(" MB free on /, under the 100000000 MB needed (doctor.min_free_mb)")
    assert run.stdout.splitlines()[-1] == f"doctor: FAILED 1 of 14 checks: {where} disk"


@pytest.mark.slow
def test_an_unreachable_reach_target_fails(project: Project, ssh_hosts, operator_key: Path) -> None:
    (host,) = ssh_hosts(1)
    with socket.socket() as closed:  # bound on the host's address, never listening
        closed.bind((host.address, 0))
        port = closed.getsockname()[1]
        preflight_project(project, [host.address], operator_key, db_address=host.address,
                          changes=(("port = 22", f"port = {port}"),))
        run = project.deploy("doctor", "preflight", "stage", "--accept-new-host-keys")
    assert run.returncode == 1, run.stdout + run.stderr
    where = f"root@{host.address}"
    assert rows(run.stdout)[(where, f"reach db_address:{port}")] == (
        "FAILED", f"{host.address}:{port}: [Errno 111] Connection refused")
    assert run.stdout.splitlines()[-1] == f"doctor: FAILED 1 of 14 checks: {where} reach db_address:{port}"


@pytest.mark.slow
def test_an_env_file_others_can_read_fails_with_the_chmod_to_run(
        project: Project, ssh_hosts, operator_key: Path) -> None:
    (host,) = ssh_hosts(1)
    env = preflight_project(project, [host.address], operator_key, db_address=host.address)
    env.chmod(0o644)
    run = project.deploy("doctor", "preflight", "stage", "--accept-new-host-keys")
    assert run.returncode == 1, run.stdout + run.stderr
    assert rows(run.stdout)[("local", "env file")] == (
        "FAILED", f"{env} is mode 0644: it holds secrets, and group or others can read it;"
                  f" run: chmod 600 {env}")
    assert run.stdout.splitlines()[-1] == "doctor: FAILED 1 of 14 checks: local env file"
    env.chmod(0o600)
    assert project.deploy("doctor", "preflight", "stage").returncode == 0


@pytest.mark.slow
def test_an_unreachable_host_fails_and_its_other_checks_are_not_run(
        project: Project, ssh_hosts, operator_key: Path) -> None:
    up, down = ssh_hosts(2)
    down.stop()  # its address is ours, and nothing answers there now
    preflight_project(project, [up.address, down.address], operator_key, db_address=up.address)
    run = project.deploy("doctor", "preflight", "stage", "--accept-new-host-keys")
    assert run.returncode == 1, run.stdout + run.stderr
    table = rows(run.stdout)
    gone = f"root@{down.address}"
    result, detail = table[(gone, "reachable")]
    assert result == "FAILED" and detail.startswith(f"{gone}: unreachable after 4 attempts")
    assert {r for (w, name), (r, _) in table.items() if w == gone and name != "reachable"} == {"not run"}
    assert {r for (w, _), (r, _) in table.items() if w == f"root@{up.address}"} == {"ok"}
    assert run.stdout.splitlines()[-1] == f"doctor: FAILED 1 of 23 checks: {gone} reachable"


def test_bad_input_is_exit_2_before_any_connection(project: Project, operator_key: Path) -> None:
    preflight_project(project, ["root@"], operator_key, db_address="127.0.0.1")
    run = project.deploy("doctor", "preflight", "stage")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "app_hosts" in run.stderr and run.stdout == ""
    assert project.deploy("doctor", "no-such-stack", "stage").returncode == 2


def test_help_says_what_is_checked(project: Project) -> None:
    shown = project.deploy("doctor", "--help")
    assert shown.returncode == 0
    for word in ("sudo -n true", "/etc/os-release", "min_free_mb", "max_clock_skew",
                 "[[doctor.reach]]", "DEPLOYER_SSH_KEY", "--accept-new-host-keys"):
        assert word in shown.stdout, word
    assert "--skip-doctor" in project.deploy("stack", "--help").stdout


# --- a login without sudo: a real machine -----------------------------------------------------

# A host without sudo needs a login user other than root whom sudo refuses. The loopback sshd
# hosts above log in as root on this very machine, so such a user would have to be added to
# this machine's own /etc/passwd (and might be left there by a killed run). A sandbox machine
# (systemd-nspawn, its own /etc/passwd, sudo installed) is an honest bare server instead: its
# ec2-user has passwordless sudo, and the user made here has none. stop_all removes it all.
_OCTET = int(os.environ.get("DEPLOYER_TEST_HOST_OCTET", "0"))
MACHINE_ADDRESS = f"127.{_OCTET}.96.1"  # outside the loopback hosts' 127.x.100-249.y
MACHINE_CIDR = f"10.{160 + _OCTET % 10}.0.0/16"


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A Debian 12 machine on MACHINE_ADDRESS:22 with `plain`, a login user without sudo (and
    ec2-user, with it); the key that logs in as both."""
    from deployer.sandbox import machines as m

    work = tmp_path_factory.mktemp("bare")
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    fleet = m.Machines(work / "sandbox", image=m.ensure_base_image().path, cidr=MACHINE_CIDR)
    try:
        fleet.start("bare", f"{MACHINE_CIDR.split('.0.0/')[0]}.0.1", public_address=MACHINE_ADDRESS,
                    authorized_keys=key.with_suffix(".pub").read_text())
        ssh = ["ssh", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
               "-o", f"UserKnownHostsFile={work / 'known_hosts'}",
               "-o", "StrictHostKeyChecking=accept-new", "-o", "ConnectTimeout=10"]
        subprocess.run([*ssh, f"ec2-user@{MACHINE_ADDRESS}",
                        "sudo useradd --create-home --shell /bin/bash plain"
                        " && sudo install -d -m 700 -o plain -g plain /home/plain/.ssh"
                        " && sudo install -m 600 -o plain -g plain .ssh/authorized_keys"
                        " /home/plain/.ssh/authorized_keys"], check=True, timeout=60)
        refused = subprocess.run([*ssh, f"plain@{MACHINE_ADDRESS}", "sudo -n true"],
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1, refused  # the premise: sudo refuses `plain`
        yield MACHINE_ADDRESS, key
    finally:
        fleet.stop_all()


@pytest.mark.slow
def test_a_login_without_sudo_fails_clearly(project: Project, bare_server: tuple[str, Path]) -> None:
    address, key = bare_server
    # db_address is seen from the machine: its own sshd, on its own loopback.
    preflight_project(project, [address], key, db_address="127.0.0.1", bootstrap="plain")
    run = project.deploy("doctor", "preflight", "stage", "--accept-new-host-keys")
    assert run.returncode == 1, run.stdout + run.stderr
    where = f"plain@{address}"
    assert rows(run.stdout)[(where, "sudo")] == (
        "FAILED", "sudo -n true failed (sudo: a password is required): plain needs sudo without"
                  " a password, or log in as root")
    assert run.stdout.splitlines()[-1] == f"doctor: FAILED 1 of 14 checks: {where} sudo"

    # The same machine as a user with sudo: everything passes (the failure above was sudo's).
    preflight_project(project, [address], key, db_address="127.0.0.1", bootstrap="ec2-user")
    ok = project.deploy("doctor", "preflight", "stage", "--accept-new-host-keys")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert rows(ok.stdout)[(f"ec2-user@{address}", "sudo")] == ("ok", "sudo -n true works")
    assert rows(ok.stdout)[(f"ec2-user@{address}", "os")] == ("ok", "debian 12")

