"""Provisioning builders: exact commands, and the probe run by a real shell. The steps
themselves run on real machines in tests/test_chom.py (they create users and install
packages, which this machine must not get)."""

from __future__ import annotations

import hashlib
import shlex
import subprocess
from pathlib import Path

import pytest

from deployer.hosts import provision
from deployer.hosts.release import parse_kv
from deployer.stacks import Provision, ProvisionDir, ProvisionFile, ProvisionUnit

REPO = Path(__file__).resolve().parent.parent


def test_the_user_command_quotes_every_value_and_checks_the_sudo_rule() -> None:
    command = provision.user_command("stilgar", "ssh-ed25519 AAAA op@here", "sudo -n ")
    assert command.startswith("sudo -n sh -c ")
    script = shlex.split(command)[-1]
    assert "useradd --create-home --shell /bin/bash -- stilgar" in script
    assert "visudo -cqf /etc/sudoers.d/90-deployer-stilgar.tmp" in script
    assert "grep -qxF -- 'ssh-ed25519 AAAA op@here'" in script


def test_a_key_that_tries_to_become_shell_stays_a_string() -> None:
    hostile = "ssh-ed25519 AAAA x'; touch /tmp/pwned; echo '"
    script = shlex.split(provision.user_command("stilgar", hostile, ""))[-1]
    assert shlex.quote(hostile) in script


@pytest.mark.parametrize(("verbs", "expected"), [
    ((True, [], ["a"], [], []), "set -e\nsystemctl daemon-reload\nsystemctl start -- a.service"),
    ((False, ["a"], [], ["b"], ["nginx"]),
     "set -e\nsystemctl enable -- a.service\nsystemctl restart -- b.service\n"
     "if systemctl -q is-active -- nginx.service; then systemctl reload-or-restart -- nginx.service;"
     " echo reloaded=nginx; fi"),
])
def test_units_in_one_round_trip(verbs: tuple, expected: str) -> None:
    assert provision.units_command(*verbs, "") == expected


def test_install_file_goes_in_atomically_with_mode_and_owner() -> None:
    assert provision.install_file_command("/home/d/.up", "/etc/chom/x.yml", "0640", "root", "sudo -n ") == (
        "sudo -n install -D -m 0640 -o root -g \"$(id -gn root)\" -- /home/d/.up /etc/chom/x.yml.deploy-new"
        " && sudo -n mv -f -- /etc/chom/x.yml.deploy-new /etc/chom/x.yml; rc=$?; rm -f -- /home/d/.up;"
        " exit $rc")


def test_the_probe_reads_packages_files_and_units_in_one_shell(tmp_path: Path) -> None:
    present = tmp_path / "present.conf"
    present.write_bytes(b"listen 80;\n")
    present.chmod(0o640)
    out = subprocess.run(["sh", "-c", provision.probe_command(
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


def test_render_reads_templates_and_sources_and_names_the_deploy_user(tmp_path: Path) -> None:
    (tmp_path / "t.env.j2").write_text("DOMAIN={{ domain }}\n")
    (tmp_path / "s.py").write_bytes(b"print('x')\n")
    (tmp_path / "u.service.j2").write_text("[Service]\nUser={{ deploy_user }}\n")
    spec = Provision(
        packages=("nginx",), dirs=(ProvisionDir("/var/www/app", "deploy"),),
        files=(ProvisionFile("/srv/.env", template="t.env.j2", owner="deploy", mode="0600",
                             format="env", reload=("app",)),
               ProvisionFile("/opt/s.py", source="s.py", mode="0755")),
        units=(ProvisionUnit("app", "u.service.j2", start=False),))
    wanted = provision.render(spec, tmp_path, {"domain": "a b", "deploy_user": "stilgar"}, "stilgar")
    assert wanted.dirs == (("/var/www/app", "0755", "stilgar"),)
    assert wanted.files["/srv/.env"] == (b'DOMAIN="a b"\n', "0600", "stilgar", ("app",))
    assert wanted.files["/opt/s.py"] == (b"print('x')\n", "0755", "root", ())
    assert wanted.units["app"] == (b"[Service]\nUser=stilgar\n", False)


@pytest.mark.parametrize(("have", "pinned", "ok"), [
    ("1.22.1-9", "1.22.1-9", True), ("1.22.1-9", "1.22.*", True), ("1.24.0-1", "1.22.*", False),
])
def test_pinned_versions(have: str, pinned: str, ok: bool) -> None:
    assert provision._version_matches(have, pinned) is ok


def _every_builder(value: str) -> dict[str, list[str]]:
    """Each builder's output; the `sh -c` wrappers are checked through their scripts (their own
    argument is single-quoted on purpose: it expands on the host, as root or the user)."""
    return {
        "user_script": [provision.user_script("stilgar", value)],
        "host_key_script": [provision.host_key_script("stilgar")],
        "trust_check_command": [provision.trust_check_command("10.0.0.2")],
        "probe_command": [provision.probe_command(["nginx"], ["/etc/a b"], ["nginx"])],
        "install_packages_command": [provision.install_packages_command(["nginx"], "sudo -n ")],
        "install_file_command": [provision.install_file_command("/h/.up", "/etc/a b", "0640", "root",
                                                                "sudo -n ")],
        "dir_command": [provision.dir_command("/var/www/a b", "0755", "stilgar", "")],
        "units_command": [provision.units_command(True, ["a"], ["b"], ["c"], ["nginx"], "sudo -n ")],
    }


def test_every_builder_is_in_the_shellcheck_test() -> None:
    builders = {name for name, value in vars(provision).items()
                if name.endswith(("_command", "_script")) and callable(value)}
    wrappers = {"user_command", "host_key_command"}  # as_root(user_script), sudo -u (host_key_script)
    assert builders == set(_every_builder("v")) | wrappers
    assert provision.user_command("u", "k", "sudo -n ") == \
        f"sudo -n sh -c {shlex.quote(provision.user_script('u', 'k'))}"
    assert provision.host_key_command("u", "") == \
        f"runuser -u u -- sh -c {shlex.quote(provision.host_key_script('u'))}"


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_shellcheck_finds_nothing_in_any_builder(shell: str) -> None:
    from test_hosts_commands import NASTY, _shellcheck

    assert _shellcheck(shell, _every_builder("v a l u e")) == {}
    assert _shellcheck(shell, _every_builder(NASTY), "SC2016", "SC1003") == {}
