"""Pure host builders and parsers: exact strings, no SSH."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from deployer.config import EnvConfig
from deployer.errors import ConfigError
from deployer.hosts import commands as cmd
from deployer.hosts.address import Host, parse_host
from deployer.hosts.fleet import resolve_hosts
from deployer.hosts.release import parse_kv
from deployer.stacks import HostsSpec, Stack
from deployer.templates import quote_env


@pytest.mark.parametrize(("text", "host"), [
    ("edge-1", Host("ec2-user", "edge-1", 22)),
    ("root@127.0.10.1", Host("root", "127.0.10.1", 22)),
    ("ops@10.0.0.5:2222", Host("ops", "10.0.0.5", 2222)),
    ("ops@[2001:db8::1]:2200", Host("ops", "2001:db8::1", 2200)),
])
def test_parse_host(text: str, host: Host) -> None:
    assert parse_host(text, default_user="ec2-user") == host


@pytest.mark.parametrize("text", ["", "a b", "user@", "host:99999", "user@host:port"])
def test_parse_host_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_host(text, default_user="u")


def test_host_str() -> None:
    assert str(Host("root", "127.0.0.2")) == "root@127.0.0.2"
    assert str(Host("root", "h", 2222)) == "root@h:2222"


def env(values: dict[str, str]) -> EnvConfig:
    return EnvConfig("stage", Path("deployments/env-stage"), values, frozenset())


EDGE = Stack("edge", Path("edge.toml"), hosts=HostsSpec(source="env", variable="edge_hosts", user="ec2-user"))
DASH = Stack("dashboard", Path("dashboard.toml"),
             hosts=HostsSpec(source="terraform", output="host_address", user_output="ssh_user"))


def test_hosts_from_the_env_file() -> None:
    hosts = resolve_hosts(EDGE, env({"edge_hosts": "a, root@b:2200\n  c"}), {})
    assert [str(h) for h in hosts] == ["ec2-user@a", "root@b:2200", "ec2-user@c"]


def test_bad_host_entries_are_all_named() -> None:
    with pytest.raises(ConfigError) as err:
        resolve_hosts(EDGE, env({"edge_hosts": "ok x@ y:0"}), {})
    assert err.value.problems == (
        "deployments/env-stage: edge_hosts: 'x@' is not user@host[:port]",
        "deployments/env-stage: edge_hosts: 'y:0': port 0 is out of range (1-65535)",
    )


def test_hosts_from_terraform_outputs() -> None:
    hosts = resolve_hosts(DASH, env({}), {"host_address": "127.1.2.3", "ssh_user": "ec2-user"})
    assert hosts == [Host("ec2-user", "127.1.2.3", 22)]
    with pytest.raises(ConfigError, match="output 'host_address' is empty; apply the stack first"):
        resolve_hosts(DASH, env({}), {})


def test_builders() -> None:
    assert cmd.ready_check(".setup_complete") == 'test -f "$HOME"/.setup_complete'
    assert cmd.acquire_lock("/h/app", "me pid=1") == (
        "mkdir -p /h/app && if mkdir /h/app/.deploy-lock 2>/dev/null; then printf '%s\\n' "
        "'me pid=1' > /h/app/.deploy-lock/info; else cat /h/app/.deploy-lock/info 2>/dev/null"
        " || echo unknown; exit 3; fi")
    assert cmd.switch_current("/h/app", "20260101-abc") == (
        "ln -sfn releases/20260101-abc /h/app/.current.tmp && mv -T /h/app/.current.tmp /h/app/current")
    assert cmd.run_script("/h/r", "install.sh", {"B": "2", "A": "x y"}) == (
        "cd /h/r && chmod +x install.sh && env A='x y' B=2 ./install.sh")
    assert cmd.remove_releases("/h/app", []) == "true"
    assert cmd.remove_releases("/h/app", ["a", "b"]) == "rm -rf /h/app/releases/a /h/app/releases/b"
    assert cmd.health_url("http://127.0.0.1:8080/health").startswith(
        "if command -v curl >/dev/null; then curl -fsS -m 5 -o /dev/null http://127.0.0.1:8080/health;")


def test_paths_are_quoted() -> None:
    assert cmd.release_lock("/h/my app; rm -rf /") == "rm -rf '/h/my app; rm -rf /'/.deploy-lock"


def test_parse_kv() -> None:
    assert parse_kv("state=present\ncurrent=releases/x\nlock=\n") == {
        "state": "present", "current": "releases/x", "lock": ""}


def test_begin_release_takes_the_lock_lists_then_stages() -> None:
    assert cmd.begin_release("/h/app", "me", ["git clone x", "mkdir -p y"]) == (
        f"{cmd.acquire_lock('/h/app', 'me')} && ( {cmd.list_releases('/h/app')} )"
        " && { ( { git clone x; } && { mkdir -p y; } ) || exit 4; }")



GIT = "GIT_ALLOW_PROTOCOL=https:ssh:file GIT_TERMINAL_PROMPT=0 git"


def test_git_commands_take_no_options_from_values_and_only_safe_transports() -> None:
    assert cmd.resolve_ref("file:///srv/app.git", "main") == (
        f"{GIT} ls-remote -- file:///srv/app.git main refs/heads/main 'refs/tags/main^{{}}'"
        " refs/tags/main")
    assert cmd.resolve_ref("--upload-pack=touch /tmp/x", "-q") == (
        f"{GIT} ls-remote -- '--upload-pack=touch /tmp/x' -q refs/heads/-q 'refs/tags/-q^{{}}'"
        " refs/tags/-q")
    assert cmd.fetch_release("ext::sh -c id", "a" * 40, "/h/app/releases/r1") == (
        "rm -rf /h/app/releases/r1 && mkdir -p /h/app/releases/r1"
        f" && {GIT} clone --quiet --no-checkout -- 'ext::sh -c id' /h/app/releases/r1"
        f" && {GIT} -C /h/app/releases/r1 -c advice.detachedHead=false checkout --quiet"
        f" --detach {'a' * 40} --")


def test_every_git_command_a_builder_makes_is_guarded() -> None:
    built = " ; ".join(c for commands in _every_builder().values() for c in commands)
    # ls-remote in the probe and alone; clone and checkout in begin_release and alone.
    assert len(re.findall(r"(?<![\w./-])git(?![\w./-])", built)) == built.count(f"{GIT} ") == 6


def test_small_builders() -> None:
    assert cmd.read_file("/h/r/.deploy/x y.service") == "cat -- '/h/r/.deploy/x y.service'"
    assert cmd.then("", "b") == "b"
    assert cmd.then("a", "b; c") == "a && { b; c; }"
    assert cmd.log_command("/h/app", 50, "tail -n ${LINES:-200} x.log") == (
        "cd /h/app && export LINES=50 && tail -n ${LINES:-200} x.log")
    assert cmd.finish_release("/h/app", "/h/app/releases/r1", "r1", "fp", ["r0"], "line") == (
        f"{{ {cmd.mark_ok('/h/app/releases/r1', 'fp')} && {cmd.switch_current('/h/app', 'r1')}"
        f" && {{ rm -rf /h/app/releases/r0; {cmd.audit('/h/app', 'line')}; }}; }};"
        ' rc=$?; rm -rf /h/app/.deploy-lock; exit "$rc"')


def test_the_user_command_quotes_every_value_and_checks_the_sudo_rule() -> None:
    command = cmd.user_command("stilgar", "ssh-ed25519 AAAA op@here", "sudo -n ")
    assert command.startswith("sudo -n sh -c ")
    script = shlex.split(command)[-1]
    assert "useradd --create-home --shell /bin/bash -- stilgar" in script
    assert "visudo -cqf /etc/sudoers.d/90-deployer-stilgar.tmp" in script
    assert "grep -qxF -- 'ssh-ed25519 AAAA op@here'" in script


def test_a_key_that_tries_to_become_shell_stays_a_string() -> None:
    hostile = "ssh-ed25519 AAAA x'; touch /tmp/pwned; echo '"
    script = shlex.split(cmd.user_command("stilgar", hostile, ""))[-1]
    assert shlex.quote(hostile) in script


@pytest.mark.parametrize(("verbs", "expected"), [
    ((True, [], ["a"], [], []), "set -e\nsystemctl daemon-reload\nsystemctl start -- a.service"),
    ((False, ["a"], [], ["b"], ["nginx"]),
     "set -e\nsystemctl enable -- a.service\nsystemctl restart -- b.service\n"
     "if systemctl -q is-active -- nginx.service; then systemctl reload-or-restart -- nginx.service;"
     " echo reloaded=nginx; fi"),
])
def test_units_in_one_round_trip(verbs: tuple, expected: str) -> None:
    assert cmd.units_command(*verbs, "") == expected


def test_install_file_goes_in_atomically_with_mode_and_owner() -> None:
    assert cmd.install_file_command("/home/d/.up", "/etc/chom/x.yml", "0640", "root", "sudo -n ") == (
        "sudo -n install -D -m 0640 -o root -g \"$(id -gn root)\" -- /home/d/.up /etc/chom/x.yml.deploy-new"
        " && sudo -n mv -f -- /etc/chom/x.yml.deploy-new /etc/chom/x.yml; rc=$?; rm -f -- /home/d/.up;"
        " exit $rc")


def test_the_probe_reads_packages_files_and_units_in_one_shell(tmp_path: Path) -> None:
    present = tmp_path / "present.conf"
    present.write_bytes(b"listen 80;\n")
    present.chmod(0o640)
    out = subprocess.run(["sh", "-c", cmd.probe_command(
        ["dash", "no-such-package-here"], [str(present), str(tmp_path / "absent")], ["no-such"])],
        capture_output=True, text=True, check=True).stdout
    found = parse_kv(out)
    assert found["pkg:dash"]  # a version: dash is installed here
    assert found["pkg:no-such-package-here"] == ""
    owner = subprocess.run(["stat", "-c", "%U", str(present)], capture_output=True, text=True).stdout.strip()
    digest = hashlib.sha256(present.read_bytes()).hexdigest()
    assert found[f"path:{present}"] == f"{digest} 640 {owner}"
    assert found[f"path:{tmp_path / 'absent'}"] == ""
    assert "unit:no-such" in found


def test_nohup_service_runs_argv_with_env_files_read_not_sourced() -> None:
    built = cmd.nohup_service("/h/app", "edge", "/h/app/current", ["/usr/bin/env", "python3", "my app.py"],
                              ["/h/app/current/edge.env"])
    assert built == (
        f"cd /h/app/current && ( {cmd.load_env_files(['/h/app/current/edge.env'])} && {{"
        " if [ -f /h/app/edge.pid ]; then old=$(cat /h/app/edge.pid); kill \"$old\" 2>/dev/null;"
        " for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do"
        " kill -0 \"$old\" 2>/dev/null || break; sleep 0.05; done; fi;"
        " nohup /usr/bin/env python3 'my app.py' >> /h/app/edge.log 2>&1 < /dev/null"
        " & echo $! > /h/app/edge.pid; } )")
    assert cmd.load_env_files(["/a", "/b c"]) == (
        f"{cmd._ENV_READER}; {{ [ ! -f /a ] || env_file /a; }} && {{ [ ! -f '/b c' ] || env_file '/b c'; }}")
    assert cmd.load_env_files([]) == f"{cmd._ENV_READER}; true"
    assert " . " not in built and "source" not in built and "eval" not in built


# Values an env file must carry byte for byte: shell syntax of every kind, quotes, '#',
# spaces at both ends, backslashes in every position, non-ASCII.
TRICKY = {
    "DOLLAR": "a$b ${HOME} $(touch m1)",  # relative: a marker in the test's own directory
    "BACKTICK": "`touch m2`",
    "SEMI": ";touch m3 && echo hi | cat",
    "QUOTES": "it's \"quoted\"",
    "HASH": "#not-a-comment # still value",
    "SPACES": "  both ends  ",
    "BACKSLASH": "\\ \\\\ \\$ \\n \\",
    "UNICODE": "héllo wörld ✓ 😀",
    "TAB": "a\tb",
    "EMPTY": "",
}


def _read_with(shell: str, text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env_file = tmp_path / "app.env"
    env_file.write_bytes(text.encode())
    dump = "import json, os; print(json.dumps(dict(os.environ)))"
    load = cmd.load_env_files([str(env_file), str(tmp_path / "missing.env")])
    script = f"{load} && exec python3 -c {cmd.q(dump)}"
    return subprocess.run([shell, "-c", script], capture_output=True, text=True, timeout=30,
                          env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8"}, cwd=tmp_path)


@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_the_env_reader_gives_the_process_every_value_byte_for_byte(shell: str, tmp_path: Path) -> None:
    assert shutil.which(shell), f"{shell} is missing: make system-packages installs it"
    text = ("# header\n\n  ; other comment\n"
            + "".join(f"{k}={quote_env(v)}\n" for k, v in TRICKY.items())
            + "BARE=plain#x\nSINGLE='lit $x \\ \"'\nBARE_CMD=$(touch m4) `touch m5`\n"
            + "SINGLE_CMD='$(touch m6)'\n LAST=\"no newline\"")
    done = _read_with(shell, text, tmp_path)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert {k: seen[k] for k in TRICKY} == TRICKY
    assert (seen["BARE"], seen["SINGLE"], seen["LAST"]) == ("plain#x", 'lit $x \\ "', "no newline")
    assert (seen["BARE_CMD"], seen["SINGLE_CMD"]) == ("$(touch m4) `touch m5`", "$(touch m6)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.env"]  # no marker was made


@pytest.mark.parametrize("line", ['A="x"y', 'A=x"', "A= x", 'A="a"b"', 'A="a\\"', "1A=x", "A",
                                  "A-B=x", "A='a'b'", 'A="x" ', 'export A="x"', 'A="x"\r'])
def test_the_env_reader_refuses_what_it_cannot_read_exactly_without_showing_it(
        line: str, tmp_path: Path) -> None:
    done = _read_with("sh", f'OK="1"\n{line}\n', tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (f'{tmp_path}/app.env:2: not KEY="value" (the line is not shown: it may'
                           " hold a secret)\n")


# A value with shell syntax of every kind, for the builders that take one.
NASTY = "x'; touch /tmp/m $(id) `id` \"q\" \\ -x"


def _every_builder(value: str = "v a l u e") -> dict[str, list[str]]:
    """Each builder's output for representative inputs, `value` wherever a value goes."""
    release = "/h/app/releases/20261118110640250-0123456"
    return {
        "ready_check": [cmd.ready_check(".setup_complete")],
        "probe": [cmd.probe("app", cmd.resolve_ref(value, value)), cmd.probe("/srv/app"),
                  cmd.probe("app", "", ".setup_complete")],
        "acquire_lock": [cmd.acquire_lock("/h/app", f"me pid=1 {value}")],
        "break_lock": [cmd.break_lock("/h/app", f"me pid=1 {value}\n")],
        "release_lock": [cmd.release_lock("/h/my app")],
        "begin_release": [cmd.begin_release("/h/app", value, [
            cmd.fetch_release(value, "a" * 40, release), cmd.make_dirs([f"{release}/a"])])],
        "resolve_ref": [cmd.resolve_ref(value, value)],
        "fetch_release": [cmd.fetch_release(value, "a" * 40, release)],
        "copy_release": [cmd.copy_release("/h/app/releases/r0", release)],
        "link_shared": [cmd.link_shared("/h/app", release, ("logs", "data dir"), (".env", "conf/a b"))],
        "run_step": [cmd.run_step(release, "php artisan migrate --force", {"DEPLOY_ENV": value})],
        "interruptible": [cmd.interruptible(cmd.run_script(release, "install.sh", {"A": value}),
                                            "/h/.deploy-pgid-0123")],
        "stop_group": [cmd.stop_group("/h/.deploy-pgid-0123")],
        "make_dirs": [cmd.make_dirs([f"{release}/a", f"{release}/.deploy"])],
        "run_script": [cmd.run_script(release, "edge_server/install.sh", {"DEPLOY_ENV": value})],
        "health_command": [cmd.health_command(release, "test -f app/server.py")],
        "health_url": [cmd.health_url("http://127.0.0.1:8080/health?a=1&b=2")],
        "unit_states": [cmd.unit_states(["nginx", value])],
        "read_markers": [cmd.read_markers([".setup-done", value])],
        "receive_file": [cmd.receive_file(f"{release}/edge env/{value}", 0o600)],
        "switch_current": [cmd.switch_current("/h/app", "20261118110640250-0123456")],
        "mark_ok": [cmd.mark_ok(release, "0123456789abcdef")],
        "list_releases": [cmd.list_releases("/h/app")],
        "remove_releases": [cmd.remove_releases("/h/app", ["a", "b"]),
                            cmd.remove_releases("/h/app", [])],
        "audit": [cmd.audit("/h/app", value)],
        "audit_tail": [cmd.audit_tail("/h/app")],
        "has_systemd": [cmd.has_systemd()],
        "service_units": [cmd.service_units([(f"{release}/.deploy/chronos-edge.service", "chronos-edge")],
                                            [("restart", "chronos-edge"), ("reload", "nginx")]),
                          cmd.service_units([], [("reload", "nginx")])],
        "load_env_files": [cmd.load_env_files(["/h/app/current/edge.env", "/h/extra env"]),
                           cmd.load_env_files([])],
        "nohup_service": [cmd.nohup_service("/h/app", "edge", "/h/app/current",
                                            ["/usr/bin/env", "python3", value],
                                            ["/h/app/current/edge.env", "/h/extra env"])],
        "read_file": [cmd.read_file(f"{release}/.deploy/x.service")],
        "then": [cmd.then(cmd.switch_current("/h/app", "r1"),
                          cmd.service_units([("/h/u", "x")], [("restart", "x")])),
                 cmd.then("", cmd.has_systemd())],
        "finish_release": [cmd.finish_release("/h/app", release, "r1", "fp", ["r0"], value)],
        "log_command": [cmd.log_command("/h/app", 200, "tail -n ${LINES:-200} dashboard.log")],
        "doctor_probe": [cmd.doctor_probe("/srv/my app", ("curl", "python3"), ((value, 5432),
                                                                            ("10.0.0.5", 22))),
                         cmd.doctor_probe("/")],
        "reach_probe": [cmd.reach_probe(((value, 1), ("db.internal", 22)), 2.5)],
        # The `sh -c` wrappers (WRAPPERS) are checked through their scripts: their own argument
        # is single-quoted on purpose, to expand on the host, as root or as the user.
        "user_script": [cmd.user_script("stilgar", value)],
        "host_key_script": [cmd.host_key_script("stilgar")],
        "trust_check_command": [cmd.trust_check_command("10.0.0.2")],
        "probe_command": [cmd.probe_command(["nginx"], ["/etc/a b"], ["nginx"])],
        "install_packages_command": [cmd.install_packages_command(["nginx"], "sudo -n ")],
        "install_file_command": [cmd.install_file_command("/h/.up", "/etc/a b", "0640", "root",
                                                          "sudo -n ")],
        "dir_command": [cmd.dir_command("/var/www/a b", "0755", "stilgar", "")],
        "units_command": [cmd.units_command(True, ["a"], ["b"], ["c"], ["nginx"], "sudo -n ")],
    }


@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_the_probe_says_whether_the_ready_marker_is_there(shell: str, tmp_path: Path) -> None:
    def probe() -> dict[str, str]:
        done = subprocess.run([shell, "-c", cmd.probe("app", "", ".setup complete")],
                              env={"HOME": str(tmp_path), "PATH": os.environ["PATH"]},
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return parse_kv(done.stdout)

    assert "ready" not in probe() and probe()["state"] == "absent"
    (tmp_path / ".setup complete").touch()
    assert probe()["ready"] == "yes"


@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_receive_file_writes_stdin_with_its_mode_and_leaves_no_temporary(shell: str,
                                                                         tmp_path: Path) -> None:
    target = tmp_path / "conf dir" / "a $b.env"
    target.parent.mkdir()
    target.write_text("old\n")
    data = b"KEY='v a l u e'\n\x00\xff no newline at the end"
    for mode in (0o600, 0o644):
        done = subprocess.run([shell, "-c", cmd.receive_file(str(target), mode)], input=data,
                              capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert target.read_bytes() == data and target.stat().st_mode & 0o777 == mode
    assert sorted(p.name for p in target.parent.iterdir()) == ["a $b.env"]
    missing = subprocess.run([shell, "-c", cmd.receive_file(str(tmp_path / "none" / "f"), 0o600)],
                             input=data, capture_output=True, text=False, timeout=30)
    assert missing.returncode != 0 and b"/none/f.deploy-tmp" in missing.stderr


WRAPPERS = {"as_root", "user_command", "host_key_command"}  # sh -c of a script _every_builder has


def test_every_builder_is_in_the_shellcheck_test() -> None:
    builders = {name for name, value in vars(cmd).items()
                if callable(value) and getattr(value, "__module__", "") == cmd.__name__}
    assert builders == set(_every_builder()) | WRAPPERS
    assert cmd.user_command("u", "k", "sudo -n ") == \
        f"sudo -n sh -c {shlex.quote(cmd.user_script('u', 'k'))}"
    assert cmd.host_key_command("u", "") == \
        f"runuser -u u -- sh -c {shlex.quote(cmd.host_key_script('u'))}"


def _shellcheck(shell: str, commands: dict[str, list[str]], *exclude: str) -> dict[str, str]:
    if not shutil.which("shellcheck"):
        pytest.fail("shellcheck is missing: make system-packages installs it")
    problems = {}
    for name, built in commands.items():
        for command in built:
            done = subprocess.run(
                ["shellcheck", "-s", shell, "-f", "gcc", *(["-e", ",".join(exclude)] if exclude else []),
                 "-"], input=command, capture_output=True, text=True, timeout=60)
            if done.returncode != 0 or done.stdout.strip():
                problems[name] = done.stdout.strip() or done.stderr.strip()
    return problems


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_shellcheck_finds_nothing_in_any_builder(shell: str) -> None:
    assert _shellcheck(shell, _every_builder()) == {}


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_shellcheck_finds_nothing_with_shell_syntax_in_every_value(shell: str) -> None:
    """The same, every value full of shell syntax. Two notes are expected here and only here:
    SC2016 ("expressions don't expand in single quotes") and SC1003 (a single quote closed,
    escaped and reopened) say a quoted value stays literal, which is the point."""
    assert _shellcheck(shell, _every_builder(NASTY), "SC2016", "SC1003") == {}


def test_nohup_service_keeps_the_old_process_when_an_env_file_is_refused(tmp_path: Path) -> None:
    """Run locally with sh: a refused env file stops before the old process is touched; a good
    one replaces it with the new process, which sees the values exactly."""
    old = subprocess.Popen(["sleep", "60"])
    (tmp_path / "svc.pid").write_text(f"{old.pid}\n")
    env_file = tmp_path / "svc.env"
    argv = ["python3", "-c", "import os, time; open('seen', 'w').write(os.environ['V']); time.sleep(60)"]
    build = cmd.nohup_service(str(tmp_path), "svc", str(tmp_path), argv, [str(env_file)])
    try:
        env_file.write_text('V="ok"\nW="unterminated\n')
        refused = subprocess.run(["sh", "-c", build], capture_output=True, text=True, timeout=30)
        assert refused.returncode == 1
        assert refused.stderr == (f'{env_file}:2: not KEY="value" (the line is not shown: it may'
                                  " hold a secret)\n")
        assert old.poll() is None  # still running
        env_file.write_text(f"V={quote_env('$(touch marker) `x` é')}\n")
        started = subprocess.run(["sh", "-c", build], capture_output=True, text=True, timeout=30)
        assert started.returncode == 0, started.stderr
        assert old.wait(timeout=5) is not None  # stopped
        for _ in range(100):
            if (tmp_path / "seen").exists() and (tmp_path / "seen").read_text():
                break
            time.sleep(0.05)
        assert (tmp_path / "seen").read_text() == "$(touch marker) `x` é"
        assert not (tmp_path / "marker").exists()
    finally:
        old.kill()
        old.wait()
        new_pid = int((tmp_path / "svc.pid").read_text())
        if new_pid != old.pid:  # the process this test's second run started
            os.kill(new_pid, signal.SIGTERM)
