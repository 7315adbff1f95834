"""Emulated hosts: an OpenSSH sshd bound to one loopback address, with its own host key,
authorized_keys and $HOME, under a directory of its own.

    host = SandboxHost(Path(".deployer/sandbox/hosts/127.0.10.1"), "127.0.10.1")
    host.start(authorized_keys="ssh-ed25519 AAAA... operator")   # idempotent
    host.stop()                                                   # sshd and the host's processes

Every 127.x.y.z address is local, so sshds on distinct addresses, port 22, act as distinct hosts.
They share one filesystem, so each gets its own $HOME (`SetEnv HOME=`), which also keeps this
machine's own dotfiles out of their sessions. Facts this relies on: /run/sshd must exist;
`StrictModes no` because the keys live outside a real home; `Subsystem sftp internal-sftp` for
uploads; MaxStartups/MaxSessions raised for fleets. Only loopback addresses are accepted.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from deployer import process
from deployer.errors import DeployerError
from deployer.process import is_alive, stop_pid
from deployer.secrets import Masker

SSHD = "/usr/sbin/sshd"

CONFIG = """\
# Written by deployer's sandbox: one emulated host.
ListenAddress {address}:{port}
HostKey {dir}/ssh_host_ed25519_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
SetEnv HOME={home}
AllowTcpForwarding {forwarding}
MaxStartups 200:30:400
MaxSessions 100
LogLevel ERROR
"""


class SandboxHost:
    def __init__(self, directory: Path, address: str, port: int = 22):
        if not address.startswith("127."):
            raise DeployerError(f"emulated hosts live on loopback only, not {address}")
        self.directory = directory.resolve()
        self.address = address
        self.port = port

    @property
    def home(self) -> Path:
        return self.directory / "home"

    @property
    def config(self) -> Path:
        return self.directory / "sshd_config"

    @property
    def host_key(self) -> Path:
        return self.directory / "ssh_host_ed25519_key"

    def host_public_key(self) -> str:
        return self.host_key.with_suffix(".pub").read_text().strip()

    def _pid(self) -> int:
        try:
            return int((self.directory / "sshd.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    def is_running(self) -> bool:
        pid = self._pid()
        return bool(pid) and is_alive(pid, str(self.config))

    def start(self, *, authorized_keys: str, timeout: float = 10.0, forwarding: bool = True) -> None:
        """Start sshd (or leave a running one alone, with the keys updated). `forwarding=False`
        makes a hardened host whose sshd refuses TCP forwarding (`AllowTcpForwarding no`)."""
        self.home.mkdir(parents=True, exist_ok=True)
        (self.directory / "authorized_keys").write_text(authorized_keys.strip() + "\n")
        if self.is_running():
            return
        if not self.host_key.exists():  # kept across restarts: known_hosts stays valid
            process.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", self.address,
                         "-f", str(self.host_key)], env=dict(os.environ), masker=Masker())
        if _answers(self.address, self.port):
            raise DeployerError(
                f"{self.address}:{self.port} already answers SSH, but not from this sandbox's"
                " sshd: another sandbox (run `deploy sandbox down` in its checkout) or another"
                " sshd owns it; DEPLOYER_SANDBOX_EDGE_ADDRESSES moves the demo's edge hosts")
        self.config.write_text(CONFIG.format(address=self.address, port=self.port,
                                             dir=self.directory, home=self.home,
                                             forwarding="yes" if forwarding else "no"))
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        proc = process.start_background([SSHD, "-D", "-e", "-f", str(self.config)],
                                        env=dict(os.environ), log_path=self.directory / "sshd.log")
        (self.directory / "sshd.pid").write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log = (self.directory / "sshd.log").read_text(errors="replace").strip()
                raise DeployerError(f"sshd for {self.address} exited: {log.splitlines()[-1:]}")
            if _answers(self.address, self.port):
                return
            time.sleep(0.05)
        raise DeployerError(f"sshd for {self.address}:{self.port} did not answer in {timeout:.0f}s")

    def stop(self) -> bool:
        """Stop sshd, its connections, and every process of the host's sessions, as a machine
        going down would."""
        pid = self._pid()
        doomed = _descendants(pid) if pid and self.is_running() else []
        stopped = stop_pid(pid, str(self.config)) if pid else False
        for other in doomed + _processes_with_home(self.home):
            stopped = stop_pid(other, "") or stopped
        return stopped


def _answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5) as s:
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _descendants(root: int) -> list[int]:
    """Every process below `root` (sshd's per-connection children and their sessions)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _processes_with_home(home: Path) -> list[int]:
    """Processes started in the host's sessions: their environment has HOME=<the host's home>."""
    wanted = f"HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in env:
            found.append(int(entry.name))
    return found
