"""SSH connections: verified host keys, an optional jump host, retried connects, one connection
per host for all its steps, a timeout on every command, everything logged through the masker.

Host keys are checked against a per-environment known_hosts file the tool keeps
(`.deployer/known_hosts/<env>`). An unknown key is refused unless the operator allows first
contact (OpenSSH `accept-new`); a changed key is always refused. (Fabric alone would add unknown
keys silently and load no known_hosts.)
"""

from __future__ import annotations

import http.client
import logging
import re
import socket
import threading
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fabric
import invoke
import paramiko
import tenacity

from deployer.errors import HostError
from deployer.hosts import commands
from deployer.hosts.address import Host
from deployer.logs import RunLog

# Paramiko logs a refused forward as an ERROR; the caller reports what it means instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 600.0
CONNECT_ATTEMPTS = 4


class HostKeyUnknown(HostError):
    pass


class ForwardingRefused(HostError):
    """The host's sshd does not forward TCP connections (`AllowTcpForwarding no`)."""


class _Policy(paramiko.MissingHostKeyPolicy):
    """Unknown key: add it when first contact is allowed (and save the file), else refuse."""

    _save_lock = threading.Lock()

    def __init__(self, known_hosts: Path, accept_new: bool):
        self.known_hosts = known_hosts
        self.accept_new = accept_new

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self.accept_new:
            raise HostKeyUnknown(
                f"{hostname}: unknown host key ({key.get_name()} {key.get_fingerprint().hex()});"
                f" not in {self.known_hosts}. Check it, then rerun with --accept-new-host-keys")
        entry = paramiko.hostkeys.HostKeyEntry([hostname], key).to_line()
        with self._save_lock:  # appended, as OpenSSH does: a fleet's first contact stays O(N)
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
            with self.known_hosts.open("a+b") as f:
                f.seek(0, 2)
                if f.tell():
                    f.seek(-1, 2)
                    if f.read(1) != b"\n":  # a hand-edited file without a final newline
                        entry = "\n" + entry
                f.write(entry.encode())
        client.get_host_keys().add(hostname, key.get_name(), key)


_GCM = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def _transport(*args: Any, **kwargs: Any) -> paramiko.Transport:
    """A transport that offers AES-GCM first (the client's order decides). With CTR+HMAC,
    paramiko checks every packet's MAC in a Python loop (`util.constant_time_bytes_eq`), the
    largest client CPU cost of a fleet deploy; a GCM tag is checked inside `cryptography`.
    CTR stays offered for servers without GCM."""
    transport = paramiko.Transport(*args, **kwargs)
    options = transport.get_security_options()
    options.ciphers = _GCM + tuple(c for c in options.ciphers if c not in _GCM)
    return transport


def _transient(exc: BaseException) -> bool:
    """Worth another try: the host is not up (yet), or the connection dropped."""
    if isinstance(exc, (HostKeyUnknown, paramiko.BadHostKeyException,
                        paramiko.AuthenticationException)):
        return False
    return isinstance(exc, (OSError, EOFError, socket.timeout, paramiko.SSHException,
                            paramiko.ssh_exception.NoValidConnectionsError))


# What explains a failure better than whatever line came last.
_CAUSES = re.compile(r"No space left on device|Out of diskspace|Disk quota exceeded|Permission"
                     r" denied|Read-only file system|command not found|Cannot allocate memory"
                     r"|Too many open files")


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def last_line(self) -> str:
        """What an error message quotes: the line that explains (a full disk, a permission, a
        missing command: the cause, which a tool like git often follows with a vaguer last
        line), else the last line of stderr, else of stdout.

        >>> Result(128, "", "error: write error: No space left on device\\nfatal: index-pack"
        ...        " failed\\n").last_line
        'error: write error: No space left on device'
        """
        lines = (self.stderr or self.stdout).strip().splitlines()
        cause = next((ln for ln in lines if _CAUSES.search(ln)), "")
        return (cause or (lines[-1:] or ["no output"])[0]).strip()


class _Lines:
    """A file-like sink that hands complete lines to `emit` (parallel hosts never interleave)."""

    def __init__(self, emit: Callable[[str], None]):
        self.emit = emit
        self.buffer = ""

    def write(self, data: str) -> None:
        self.buffer += data
        while "\n" in self.buffer:
            line, self.buffer = self.buffer.split("\n", 1)
            self.emit(line)

    def flush(self) -> None:
        if self.buffer:
            self.emit(self.buffer)
            self.buffer = ""


class Remote:
    """One host's SSH connection, opened once and reused for every step."""

    def __init__(self, host: Host, *, known_hosts: Path, key_file: str, accept_new: bool,
                 log: RunLog, gateway: Host | None = None):
        self.host = host
        self.log = log
        config = fabric.Config(overrides={"load_ssh_configs": False, "run": {"hide": True}})
        kwargs: dict[str, Any] = {"allow_agent": not key_file, "look_for_keys": not key_file,
                                  "transport_factory": _transport}
        if key_file:
            kwargs["key_filename"] = [key_file]
        gw = None
        if gateway is not None:
            gw = fabric.Connection(gateway.address, user=gateway.user, port=gateway.port,
                                   config=config, connect_timeout=CONNECT_TIMEOUT,
                                   connect_kwargs=dict(kwargs))
            self._verify_keys(gw, known_hosts, accept_new)
        self.conn = fabric.Connection(host.address, user=host.user, port=host.port, config=config,
                                      gateway=gw, connect_timeout=CONNECT_TIMEOUT,
                                      connect_kwargs=kwargs)
        self._verify_keys(self.conn, known_hosts, accept_new)
        self.known_hosts = known_hosts
        self._home = ""
        self.forwarding = True  # until the host's sshd refuses a direct-tcpip channel
        # Set when the connection drops mid-command: nothing more runs over this Remote (Fabric
        # would quietly reconnect, and a restore could race a command still running there).
        self.lost_during = ""

    @staticmethod
    def _verify_keys(conn: fabric.Connection, known_hosts: Path, accept_new: bool) -> None:
        conn.client.set_missing_host_key_policy(_Policy(known_hosts, accept_new))
        if known_hosts.exists():
            conn.client.load_host_keys(str(known_hosts))

    def open(self) -> None:
        """Connect, retrying while the host is not reachable yet; never retry a bad key or login."""
        try:
            for attempt in tenacity.Retrying(
                retry=tenacity.retry_if_exception(_transient),
                wait=tenacity.wait_exponential(multiplier=0.5, max=5),
                stop=tenacity.stop_after_attempt(CONNECT_ATTEMPTS), reraise=True,
            ):
                with attempt:
                    self.conn.open()
        except paramiko.BadHostKeyException as exc:
            raise HostError(
                f"{self.host}: the host key CHANGED (now {exc.key.get_name()}"
                f" {exc.key.get_fingerprint().hex()}); refusing to connect. If the host was"
                f" rebuilt, remove its line from {self.known_hosts}") from None
        except HostKeyUnknown:
            raise
        except paramiko.AuthenticationException:
            raise HostError(f"{self.host}: authentication failed (check DEPLOYER_SSH_KEY and the"
                            " host's authorized_keys)") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise HostError(f"{self.host}: unreachable after {CONNECT_ATTEMPTS} attempts: {exc}") from None

    def remember_home(self, home: str) -> None:
        """The probe learns $HOME on its way; no separate round trip then."""
        if home:
            self._home = home

    @property
    def home(self) -> str:
        """The remote $HOME (SFTP paths are absolute: its working directory is not $HOME)."""
        if not self._home:
            self._home = self.run('printf %s "$HOME"', check=True).stdout.strip()
        return self._home

    def run(self, command: str, *, timeout: float = COMMAND_TIMEOUT, check: bool = False,
            on_line: Callable[[str], None] | None = None, what: str = "",
            stop: threading.Event | None = None) -> Result:
        """Run one shell command; its output goes to the run log (masked), and to `on_line`.
        With `stop`: the command runs in a process group of its own, and when `stop` is set
        (Ctrl-C) that whole group is signalled over a second channel, so the command ends now
        instead of running to its end."""
        if stop is None:
            return self._run(command, timeout=timeout, check=check, on_line=on_line, what=what)
        pgid_file = f"{self.home}/.deploy-pgid-{uuid.uuid4().hex[:12]}"
        finished = threading.Event()
        watcher = threading.Thread(target=self._stop_on, args=(stop, finished, pgid_file),
                                   daemon=True)
        watcher.start()
        try:
            return self._run(commands.interruptible(command, pgid_file), timeout=timeout,
                             check=check, on_line=on_line, what=what)
        finally:
            finished.set()
            if stop.is_set():  # the group is being stopped: wait until it is, before any restore
                watcher.join()
            # else the watcher sees `finished` at its next poll and ends; waiting for that poll
            # would add up to its interval to every step

    def _stop_on(self, stop: threading.Event, finished: threading.Event, pgid_file: str) -> None:
        """Until the command ends (`finished`): once `stop` is set, signal its process group."""
        while not finished.is_set():
            if stop.wait(0.2):
                break
        else:
            return
        self.log.write(f"[{self.host}] interrupted: stopping the running command's process group")
        try:
            _in, out, _err = self.conn.client.exec_command(commands.stop_group(pgid_file), timeout=30)
            out.channel.recv_exit_status()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.log.write(f"[{self.host}] could not stop the running command: {exc!r}")

    def _run(self, command: str, *, timeout: float, check: bool,
             on_line: Callable[[str], None] | None, what: str) -> Result:
        if self.lost_during:
            raise HostError(f"{self.host}: the connection was lost during {self.lost_during};"
                            f" {what or 'nothing more'} was not run over a new one")
        self.log.write(f"[{self.host}] $ {command}")

        def emit(line: str) -> None:
            masked = self.log.write(f"[{self.host}] {line}")
            if on_line is not None:
                on_line(masked.split("] ", 1)[1] if "] " in masked else masked)

        out, err = _Lines(emit), _Lines(emit)
        try:
            done = self.conn.run(command, warn=True, timeout=timeout, in_stream=False,
                                 out_stream=out, err_stream=err)
        except invoke.exceptions.CommandTimedOut:
            raise HostError(f"{self.host}: {what or 'a command'} timed out after {timeout:.0f}s") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.lost_during = what or "a command"
            raise HostError(f"{self.host}: connection lost during {self.lost_during}: {exc}") from None
        finally:
            out.flush()
            err.flush()
        transport = self.conn.client.get_transport()
        if done.exited == -1 or transport is None or not transport.is_active():
            # The channel closed with no exit status: the connection (or the host) went away.
            self.lost_during = what or "a command"
            raise HostError(f"{self.host}: connection lost during {self.lost_during}; nothing was"
                            " restored over it: the next run finds this run's lock (broken once"
                            " its holder is gone) and the host's state, and converges")
        result = Result(done.exited, done.stdout, done.stderr)
        if check and not result.ok:
            raise HostError(f"{self.host}: {what or 'command'} failed (exit {done.exited}):"
                            f" {self.log.masker.mask(result.last_line)}")
        return result

    def put(self, data: bytes, path: str, *, mode: int) -> None:
        """Upload `data` to the absolute `path` with `mode`, through SFTP (never a command line):
        written to a temporary name with its mode set first, then renamed into place."""
        self.log.write(f"[{self.host}] upload {path} (mode {mode:o}, {len(data)} bytes)")
        try:
            sftp = self.conn.sftp()
            tmp = f"{path}.deploy-tmp"
            with sftp.open(tmp, "wb") as f:
                sftp.chmod(tmp, mode)
                f.write(data)
            sftp.posix_rename(tmp, path)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            transport = self.conn.client.get_transport()
            if transport is None or not transport.is_active():
                self.lost_during = f"the upload of {path}"
            raise HostError(f"{self.host}: upload of {path} failed: {exc}") from None

    def http_status(self, url: str, *, timeout: float) -> int | None:
        """GET an http:// `url` as the host sees it, through this connection: the host's sshd
        opens the TCP connection (an SSH direct-tcpip channel), so no process runs on the host.
        The status, or None when nothing (valid) answers. Raises ForwardingRefused when the
        host's sshd does not forward (`AllowTcpForwarding no`)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not an http:// URL: {url}")
        port = parts.port or 80
        transport = self.conn.client.get_transport()
        if transport is None or not transport.is_active():
            raise HostError(f"{self.host}: connection lost before a health check")
        try:
            channel = transport.open_channel("direct-tcpip", (parts.hostname, port),
                                             ("127.0.0.1", 0), timeout=timeout)
        except paramiko.ChannelException as exc:
            if exc.code == paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED:
                raise ForwardingRefused(f"{self.host}: sshd refuses TCP forwarding") from None
            self.log.write(f"[{self.host}] GET {url} through the SSH connection: {exc.text}")
            return None  # nothing listens there (yet)
        except paramiko.SSHException as exc:
            raise HostError(f"{self.host}: connection lost during a health check: {exc}") from None
        try:
            channel.settimeout(timeout)
            request = http.client.HTTPConnection(parts.hostname, port, timeout=timeout)
            request.sock = channel  # socket-like: sendall() and makefile() are all it uses
            path = parts.path or "/"
            request.request("GET", f"{path}?{parts.query}" if parts.query else path,
                            headers={"Connection": "close"})
            status = request.getresponse().status
            self.log.write(f"[{self.host}] GET {url} through the SSH connection: {status}")
            return status
        except (OSError, EOFError, http.client.HTTPException, paramiko.SSHException) as exc:
            self.log.write(f"[{self.host}] GET {url} through the SSH connection: {exc!r}")
            return None
        finally:
            channel.close()

    def close(self) -> None:
        self.conn.close()
