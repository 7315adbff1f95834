"""SSH connections: verified host keys, an optional jump host, retried connects, one connection
per host for all its steps, a timeout on every command, everything logged through the masker.

Host keys are checked against a per-environment known_hosts file the tool keeps
(`.deployer/known_hosts/<env>`). An unknown key is refused unless the operator allows first
contact (OpenSSH `accept-new`); a changed key is always refused.

Built on paramiko's client and channels directly: one session channel per command, read in the
calling thread (no reader threads, no polling loop), and files sent on a command's stdin.
"""

from __future__ import annotations

import codecs
import logging
import re
import select
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
PUT_AT_ONCE = 8  # upload channels open at once (OpenSSH's sshd allows 10 sessions per connection)


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


def _no_key(exc: BaseException) -> bool:
    """paramiko found no key to offer (no key file, none in ~/.ssh, no agent). It says so only
    in this message, on a plain SSHException."""
    return isinstance(exc, paramiko.SSHException) and str(exc) == "No authentication methods available"


def _transient(exc: BaseException) -> bool:
    """Worth another try: the host is not up (yet), or the connection dropped."""
    if isinstance(exc, (HostKeyUnknown, paramiko.BadHostKeyException,
                        paramiko.AuthenticationException)) or _no_key(exc):
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
        self.parts: list[str] = []

    @property
    def text(self) -> str:
        """Everything written."""
        return "".join(self.parts)

    def write(self, data: str) -> None:
        self.parts.append(data)
        self.buffer += data
        while "\n" in self.buffer:
            line, self.buffer = self.buffer.split("\n", 1)
            self.emit(line)

    def flush(self) -> None:
        if self.buffer:
            self.emit(self.buffer)
            self.buffer = ""


_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: [^\r\n]*)?\r?\n")


def _status(channel: paramiko.Channel) -> int | None:
    """The status of the HTTP response arriving on `channel`, from its status line alone (all a
    health check needs); None when the answer does not start with one.

    A health check needs no more of HTTP than this, and http.client costs 0.03 s of every run's
    start to import."""
    head = b""
    while b"\n" not in head and len(head) < 4096:
        chunk = channel.recv(4096)
        if not chunk:
            break
        head += chunk
    found = _STATUS_LINE.match(head)
    return int(found.group(1)) if found else None


class Remote:
    """One host's SSH connection, opened once and reused for every step."""

    def __init__(self, host: Host, *, known_hosts: Path, key_file: str, accept_new: bool,
                 log: RunLog, gateway: Host | None = None):
        self.host = host
        self.log = log
        self.gateway = gateway
        self.known_hosts = known_hosts
        self._policy = _Policy(known_hosts, accept_new)
        self._auth: dict[str, Any] = {"allow_agent": not key_file, "look_for_keys": not key_file}
        if key_file:
            self._auth["key_filename"] = [key_file]
        self._clients: list[paramiko.SSHClient] = []  # the gateway's first, then the host's
        self._home = ""
        self.forwarding = True  # until the host's sshd refuses a direct-tcpip channel
        # Set when the connection drops mid-command: nothing more runs over this Remote (it never
        # reconnects: a restore could race a command still running there).
        self.lost_during = ""

    def _client(self, host: Host, sock: Any = None) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        self._clients.append(client)
        client.set_missing_host_key_policy(self._policy)
        if self.known_hosts.exists():
            client.load_host_keys(str(self.known_hosts))
        client.connect(host.address, port=host.port, username=host.user, sock=sock,
                       timeout=CONNECT_TIMEOUT, banner_timeout=CONNECT_TIMEOUT,
                       auth_timeout=CONNECT_TIMEOUT, transport_factory=_transport, **self._auth)
        transport = client.get_transport()
        if transport is not None and isinstance(transport.sock, socket.socket):
            # Steps are many small messages (a command, then its stdin's EOF): without this,
            # Nagle's algorithm holds the second until the first is acknowledged, and a
            # delayed ACK makes that up to 40 ms per step. OpenSSH sets it too.
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client

    def _connect(self) -> None:
        self.close()  # what a failed attempt left
        sock = None
        if self.gateway is not None:  # the host is reached through a channel of the jump host's
            jump = self._client(self.gateway).get_transport()
            assert jump is not None
            sock = jump.open_channel("direct-tcpip", (self.host.address, self.host.port),
                                     ("", 0), timeout=CONNECT_TIMEOUT)
        self._client(self.host, sock)

    def _transport(self) -> paramiko.Transport | None:
        transport = self._clients[-1].get_transport() if self._clients else None
        return transport if transport is not None and transport.is_active() else None

    def open(self) -> None:
        """Connect, retrying while the host is not reachable yet; never retry a bad key or login."""
        try:
            for attempt in tenacity.Retrying(
                retry=tenacity.retry_if_exception(_transient),
                wait=tenacity.wait_exponential(multiplier=0.5, max=5),
                stop=tenacity.stop_after_attempt(CONNECT_ATTEMPTS), reraise=True,
            ):
                with attempt:
                    self._connect()
        except paramiko.BadHostKeyException as exc:
            self.close()
            raise HostError(
                f"{self.host}: the host key CHANGED (now {exc.key.get_name()}"
                f" {exc.key.get_fingerprint().hex()}); refusing to connect. If the host was"
                f" rebuilt, remove its line from {self.known_hosts}") from None
        except HostKeyUnknown:
            self.close()
            raise
        except paramiko.AuthenticationException:
            self.close()
            raise HostError(f"{self.host}: authentication failed (check DEPLOYER_SSH_KEY and the"
                            " host's authorized_keys)") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.close()
            if _no_key(exc):
                raise HostError(f"{self.host}: no SSH key to log in with: set DEPLOYER_SSH_KEY to a"
                                " private key file, or load a key into ssh-agent") from None
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
            discard = _Lines(lambda line: None)
            self._exec(commands.stop_group(pgid_file), timeout=30, out=discard, err=discard)
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
            code = self._exec(command, timeout=timeout, out=out, err=err)
        except TimeoutError:
            raise HostError(f"{self.host}: {what or 'a command'} timed out after {timeout:.0f}s") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.lost_during = what or "a command"
            raise HostError(f"{self.host}: connection lost during {self.lost_during}: {exc}") from None
        finally:
            out.flush()
            err.flush()
        if code == -1 or self._transport() is None:
            # The channel closed with no exit status: the connection (or the host) went away.
            self.lost_during = what or "a command"
            raise HostError(f"{self.host}: connection lost during {self.lost_during}; nothing was"
                            " restored over it: the next run finds this run's lock (broken once"
                            " its holder is gone) and the host's state, and converges")
        result = Result(code, out.text, err.text)
        if check and not result.ok:
            raise HostError(f"{self.host}: {what or 'command'} failed (exit {code}):"
                            f" {self.log.masker.mask(result.last_line)}")
        return result

    def _exec(self, command: str, *, timeout: float, out: _Lines, err: _Lines,
              data: bytes = b"") -> int:
        """Run `command` on a session channel of its own with `data` on its stdin (then EOF, so
        a command that reads stdin never waits for input nobody sends), its output going to
        `out` and `err` as it comes. Its exit status, or -1 when the channel closed without one
        (the connection went away). Raises TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        return self._finish(self._start(command, data), deadline, out, err)

    def _start(self, command: str, data: bytes) -> paramiko.Channel:
        transport = self._transport()
        if transport is None:
            raise EOFError("the connection is closed")
        channel = transport.open_session(timeout=CONNECT_TIMEOUT)
        try:
            channel.exec_command(command)
            if data:
                channel.sendall(data)
            channel.shutdown_write()
        except BaseException:
            channel.close()
            raise
        return channel

    @staticmethod
    def _finish(channel: paramiko.Channel, deadline: float, out: _Lines, err: _Lines) -> int:
        decode_out = codecs.getincrementaldecoder("utf-8")("replace")
        decode_err = codecs.getincrementaldecoder("utf-8")("replace")

        def drain() -> None:
            while channel.recv_ready():
                out.write(decode_out.decode(channel.recv(65536)))
            while channel.recv_stderr_ready():
                err.write(decode_err.decode(channel.recv_stderr(65536)))

        try:
            # A pipe that is readable whenever output, the EOF or the close has arrived (also what
            # came before this call). Made here, not at the start, so that uploads started
            # together hold one pipe at a time; poll(), unlike select(), takes any fd number.
            ready = select.poll()
            ready.register(channel.fileno(), select.POLLIN)
            while not (channel.eof_received or channel.closed):
                drain()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                ready.poll(left * 1000)
            drain()  # what came just before the EOF
            # The exit status may follow the EOF; the channel's close sets the event too.
            if not channel.status_event.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError
            out.write(decode_out.decode(b"", final=True))
            err.write(decode_err.decode(b"", final=True))
            return channel.exit_status
        finally:
            channel.close()

    def put(self, files: list[tuple[str, bytes, int]]) -> None:
        """Upload each (absolute path, data, mode), on a command's stdin (never on its command
        line): written to a temporary name only its owner can read, then renamed into place.
        The files travel at once, each on a channel of its own (PUT_AT_ONCE at a time): one
        round trip for a release's few files, not one each."""
        for start in range(0, len(files), PUT_AT_ONCE):
            self._put_batch(files[start:start + PUT_AT_ONCE])

    def _put_batch(self, files: list[tuple[str, bytes, int]]) -> None:
        deadline = time.monotonic() + COMMAND_TIMEOUT
        started: list[tuple[str, paramiko.Channel]] = []
        path = ""
        try:
            for path, data, mode in files:
                self.log.write(f"[{self.host}] upload {path} (mode {mode:o}, {len(data)} bytes)")
                started.append((path, self._start(commands.receive_file(path, mode), data)))
            for path, channel in started:
                lines = _Lines(lambda line: None)
                code = self._finish(channel, deadline, lines, lines)
                if code == -1 or self._transport() is None:
                    self.lost_during = f"the upload of {path}"
                    raise HostError(f"{self.host}: connection lost during {self.lost_during}")
                if code != 0:
                    reason = self.log.masker.mask(Result(code, "", lines.text).last_line)
                    raise HostError(f"{self.host}: upload of {path} failed: {reason}")
        except TimeoutError:
            raise HostError(f"{self.host}: upload of {path} timed out") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if self._transport() is None:
                self.lost_during = f"the upload of {path}"
            raise HostError(f"{self.host}: upload of {path} failed: {exc}") from None
        finally:
            for _, channel in started:
                channel.close()

    def http_status(self, url: str, *, timeout: float) -> int | None:
        """GET an http:// `url` as the host sees it, through this connection: the host's sshd
        opens the TCP connection (an SSH direct-tcpip channel), so no process runs on the host.
        The status, or None when nothing (valid) answers. Raises ForwardingRefused when the
        host's sshd does not forward (`AllowTcpForwarding no`)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not an http:// URL: {url}")
        port = parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = parts.netloc.rpartition("@")[2]
        if _CONTROL.search(target + host_header):  # a line break would be a header of its own
            raise ValueError(f"not an http:// URL (a space or control character): {url!r}")
        transport = self._transport()
        if transport is None:
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
            channel.sendall(f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close"
                            "\r\nUser-Agent: deployer\r\n\r\n".encode())
            status = _status(channel)
            self.log.write(f"[{self.host}] GET {url} through the SSH connection:"
                           f" {status or 'no HTTP status line in the answer'}")
            return status
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.log.write(f"[{self.host}] GET {url} through the SSH connection: {exc!r}")
            return None
        finally:
            channel.close()

    def close(self) -> None:
        while self._clients:  # the host's connection first, then the jump host's under it
            self._clients.pop().close()
