"""Sandbox machines are real machines: their own users and files, systemd as PID 1 (units survive
a reboot), user_data run once, private addresses reachable only through a jump machine, and
stop_all leaves nothing of the sandbox behind. Real mmdebstrap image, systemd-nspawn, OpenSSH.

Needs root, systemd-nspawn and mmdebstrap (apt-get install systemd-container mmdebstrap); the
base image is built once (about 90 seconds) and cached in /var/cache/deployer/images.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer.process import pids_naming
from deployer.sandbox import machines as m

import conftest
from conftest import wait_for

# Never skipped: without root, systemd-nspawn or mmdebstrap these fail, saying which (`make
# test` installs the packages; CI runs as root).
pytestmark = pytest.mark.slow

_OCTET = int(os.environ.get("DEPLOYER_TEST_HOST_OCTET", "0"))
JUMP_ADDRESS = f"127.{_OCTET}.177.1"
CIDR = f"10.{77 + _OCTET % 100}.0.0/16"
NET = CIDR.split(".0.0/")[0]  # "10.77"


@pytest.fixture(scope="session")
def image() -> Path:
    return m.ensure_base_image().path


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def ssh_config(key: Path) -> Path:
    """-F reaches the jump hop too (options given with -o reach only the destination)."""
    config = key.parent / "ssh_config"
    config.write_text(
        "Host *\n"
        f"  IdentityFile {key}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {key.parent / 'known_hosts'}\n"
        "  StrictHostKeyChecking accept-new\n  BatchMode yes\n  ConnectTimeout 10\n"
        "  User ec2-user\n")
    return config


@pytest.fixture(scope="module")
def fleet(image: Path, key: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[m.Machines]:
    """A jump machine (public 127.x address + private address) and two private-only machines."""
    machines = m.Machines(tmp_path_factory.mktemp("sandbox"), image=image, cidr=CIDR)
    public_key = key.with_suffix(".pub").read_text()
    try:
        machines.start("jump", f"{NET}.0.1", public_address=JUMP_ADDRESS, authorized_keys=public_key,
                       wait=False)
        machines.start("alpha", f"{NET}.0.2", authorized_keys=public_key, wait=False)
        machines.start("beta", f"{NET}.0.3", authorized_keys=public_key, wait=False,
                       user_data="echo ran >> /home/ec2-user/user-data-runs\n"
                                 "touch /home/ec2-user/.setup_complete\n")
        for name in ("jump", "alpha", "beta"):
            machines.wait_until_ready(name)
        yield machines
    finally:
        machines.stop_all()


ssh = functools.partial(conftest.ssh, jump=JUMP_ADDRESS)  # the private machines are behind it



def test_users_and_files_stay_inside_their_machine(fleet: m.Machines, ssh_config: Path) -> None:
    user = f"u{uuid.uuid4().hex[:8]}"
    host_passwd = Path("/etc/passwd").read_text()
    ssh(ssh_config, f"{NET}.0.2", f"sudo useradd {user} && sudo touch /etc/only-in-alpha && id {user}")
    assert ssh(ssh_config, f"{NET}.0.3", f"id {user}", check=False).returncode != 0
    assert ssh(ssh_config, f"{NET}.0.3", "test -e /etc/only-in-alpha", check=False).returncode == 1
    assert Path("/etc/passwd").read_text() == host_passwd
    assert not Path("/etc/only-in-alpha").exists()
    assert ssh(ssh_config, f"{NET}.0.2", "hostname").stdout.strip() == "alpha"


def test_a_private_machine_is_reachable_only_through_the_jump_machine(
        fleet: m.Machines, ssh_config: Path) -> None:
    started = time.monotonic()
    with pytest.raises(OSError) as refused:
        socket.create_connection((f"{NET}.0.2", 22), timeout=10)
    assert refused.value.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)
    assert time.monotonic() - started < 1.0  # fails at once: the unreachable route, not a timeout
    assert ssh(ssh_config, f"{NET}.0.2", "hostname").stdout.strip() == "alpha"
    assert ssh(ssh_config, JUMP_ADDRESS, "hostname", jump="").stdout.strip() == "jump"
    # systemd is PID 1 in the machine and the login user has passwordless sudo
    assert ssh(ssh_config, f"{NET}.0.2", "cat /proc/1/comm; sudo -n true && echo sudo-ok"
               ).stdout.split() == ["systemd", "sudo-ok"]


def test_start_of_a_running_machine_leaves_it_alone(fleet: m.Machines, key: Path) -> None:
    before = {s.name: s.supervisor_pid for s in fleet.status()}
    again = fleet.start("jump", f"{NET}.0.1", public_address=JUMP_ADDRESS,
                        authorized_keys=key.with_suffix(".pub").read_text())
    assert again.status == "unchanged"
    assert {s.name: s.supervisor_pid for s in fleet.status()} == before
    assert all(s.status == "running" and s.ssh_ready for s in fleet.status())


def test_user_data_runs_once_at_first_boot(fleet: m.Machines, ssh_config: Path, key: Path) -> None:
    assert wait_for(lambda: ssh(ssh_config, f"{NET}.0.3", "test -e .setup_complete",
                                check=False).returncode == 0, 30)
    assert ssh(ssh_config, f"{NET}.0.3", "cat /var/lib/deployer/user-data.done"
               ).stdout.startswith("exit=0 ")
    assert fleet.stop("beta").status == "changed"
    restarted = fleet.start("beta", f"{NET}.0.3", authorized_keys=key.with_suffix(".pub").read_text(),
                            user_data="echo ran >> /home/ec2-user/user-data-runs\n")
    assert restarted.status == "changed" and "disk kept" in restarted.reason
    assert ssh(ssh_config, f"{NET}.0.3", "cat user-data-runs").stdout == "ran\n"


def test_a_reboot_brings_the_machine_back_with_its_enabled_units(
        fleet: m.Machines, ssh_config: Path) -> None:
    unit = ("[Unit]\\nDescription=probe\\n[Service]\\nType=oneshot\\nRemainAfterExit=yes\\n"
            "ExecStart=/bin/true\\n[Install]\\nWantedBy=multi-user.target\\n")
    ssh(ssh_config, f"{NET}.0.2",
        f"printf '{unit}' | sudo tee /etc/systemd/system/probe.service >/dev/null"
        " && sudo systemctl enable --now probe.service && sudo touch /run/before-reboot")
    supervisor = {s.name: s.supervisor_pid for s in fleet.status()}["alpha"]
    ssh(ssh_config, f"{NET}.0.2", "sudo systemctl reboot", check=False)  # the connection drops

    def rebooted() -> bool:
        done = ssh(ssh_config, f"{NET}.0.2", "test ! -e /run/before-reboot && systemctl is-active probe",
                   check=False)
        return done.returncode == 0 and done.stdout.strip() == "active"

    assert wait_for(rebooted, 60)
    assert {s.name: s.supervisor_pid for s in fleet.status()}["alpha"] == supervisor
    assert "rebooted (exit 133)" in (fleet.machine_dir("alpha") / "nspawn.log").read_text()


def test_a_machine_installs_nginx_offline_from_the_image_repository(
        fleet: m.Machines, ssh_config: Path, key: Path) -> None:
    """nginx is not installed, the machine has no way out, and yet `apt-get install nginx` works:
    from the image's own repository, and nginx then serves on port 80 as a systemd service."""
    web = f"{NET}.0.4"
    fleet.start("web", web, authorized_keys=key.with_suffix(".pub").read_text())
    try:
        assert ssh(ssh_config, web, "ip route show default").stdout.strip() == ""  # no network
        assert ssh(ssh_config, web, "dpkg -s nginx", check=False).returncode != 0
        assert ssh(ssh_config, web, "grep -rh '^deb' /etc/apt/sources.list /etc/apt/sources.list.d"
                   ).stdout.split() == ["deb", "[trusted=yes]", f"file:{m.REPO_DIR}", "./"]
        ssh(ssh_config, web, "sudo -n apt-get install -y nginx")
        assert ssh(ssh_config, web, "systemctl is-active nginx").stdout.strip() == "active"
        assert "Welcome to nginx" in ssh(ssh_config, web, "curl -s http://127.0.0.1/").stdout
    finally:
        fleet.stop("web")


def _snapshot() -> dict[str, list[str]]:
    def lines(argv: list[str]) -> list[str]:
        return sorted(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines())

    return {"netns": lines(["ip", "netns", "list"]),
            "links": [line.split("@")[0] for line in lines(["ip", "-o", "link", "show"])],
            "routes": lines(["ip", "route", "show", "table", "all"]),
            "mounts": sorted(Path("/proc/mounts").read_text().splitlines())}


def test_stop_all_leaves_nothing_of_the_sandbox(image: Path, key: Path, tmp_path: Path) -> None:
    cidr = f"10.{178 + _OCTET % 50}.0.0/16"
    net = cidr.split(".0.0/")[0]
    before = _snapshot()
    machines = m.Machines(tmp_path / "sandbox", image=image, cidr=cidr)
    try:
        machines.start("gate", f"{net}.0.1", public_address=f"127.{_OCTET}.177.2",
                       authorized_keys=key.with_suffix(".pub").read_text(), wait=False)
        machines.start("inner", f"{net}.0.2", authorized_keys=key.with_suffix(".pub").read_text())
        machines.wait_until_ready("gate")
        during = _snapshot()
        assert len(during["netns"]) == len(before["netns"]) + 3  # two machines and the hub
        assert any(f"unreachable {cidr}" in r for r in during["routes"])
        pids = machines.pids("gate") + machines.pids("inner")
        assert len(pids) > 6  # supervisor, nspawn, systemd, journald, sshd, ... per machine
    finally:
        results = machines.stop_all()
    assert {r.name for r in results} >= {"machine gate", "machine inner", "network", "route"}
    after = _snapshot()
    for what in ("netns", "links", "routes"):
        assert after[what] == before[what], what
    assert not [line for line in after["mounts"] if str(tmp_path) in line]
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert not pids_naming(str(tmp_path / "sandbox"))
    assert not [p for p in m.CGROUP_ROOTS if (p / f"deployer-{machines.tag}").exists()]
    assert machines.stop_all()[0].status == "unchanged"


def test_stop_all_removes_only_what_its_own_sandbox_made(image: Path, key: Path, tmp_path: Path) -> None:
    """Two sandboxes on one CIDR and a namespace of someone else's: stopping one sandbox leaves
    the other running, still behind its own unreachable route, and the foreign namespace alone."""
    cidr = f"10.{230 + _OCTET % 20}.0.0/16"
    net = cidr.split(".0.0/")[0]
    foreign = f"foreign-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", foreign], check=True)
    first = m.Machines(tmp_path / "first", image=image, cidr=cidr)
    second = m.Machines(tmp_path / "second", image=image, cidr=cidr)
    public_key = key.with_suffix(".pub").read_text()
    try:
        first.start("one", f"{net}.0.1", authorized_keys=public_key, wait=False)
        second.start("two", f"{net}.1.1", authorized_keys=public_key)
        first.wait_until_ready("one")
        first.stop_all()
        routes = subprocess.run(["ip", "route", "show", "type", "unreachable", cidr],
                                capture_output=True, text=True, check=True).stdout.splitlines()
        assert len(routes) == 1  # the second sandbox's: the CIDR stays unreachable
        assert second.is_ssh_ready("two") and [s.status for s in second.status()] == ["running"]
        assert (Path("/run/netns") / foreign).exists()
        assert (Path("/run/netns") / second.netns("two")).exists()
        assert not (Path("/run/netns") / first.netns("one")).exists()
    finally:
        first.stop_all()
        second.stop_all()
        subprocess.run(["ip", "netns", "delete", foreign], check=True)
    assert not subprocess.run(["ip", "route", "show", "type", "unreachable", cidr],
                              capture_output=True, text=True, check=True).stdout.strip()


def test_the_kernels_inotify_instances_are_raised_for_machines_never_lowered(tmp_path: Path) -> None:
    limit = tmp_path / "max_user_instances"
    limit.write_text("128\n")
    raised = m.ensure_inotify_instances(limit, 1024)
    assert (raised.status, limit.read_text()) == ("changed", "1024\n")
    assert "128 -> 1024" in raised.reason and "about 16 machines" in raised.reason
    limit.write_text("4096\n")
    assert m.ensure_inotify_instances(limit, 1024).status == "unchanged"
    assert limit.read_text() == "4096\n"
    with pytest.raises(m.MachineError, match="cannot read"):
        m.ensure_inotify_instances(tmp_path / "missing", 1024)
    # A limit not even root may write (file-nr is read-only; its first field is a number).
    with pytest.raises(m.MachineError, match="sysctl -w fs.inotify.max_user_instances"):
        m.ensure_inotify_instances(Path("/proc/sys/fs/file-nr"), 10**15)
