"""The one choke point for local subprocesses.

argv only (never a shell), an explicit environment, output streamed line by line through the
secret masker into the run log and an optional callback, Ctrl-C forwarded to the child so it can
clean up (Terraform releases its state lock), and a typed error on failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deployer.errors import DeployerError, Interrupted
from deployer.logs import RunLog
from deployer.secrets import Masker

# How long a child may take to finish after Ctrl-C before it is terminated. Terraform needs
# this long to stop in-flight API calls, write state and release its lock.
INTERRUPT_GRACE_SECONDS = 120.0


class CommandFailed(DeployerError):
    """A local command exited with a code its caller did not accept."""

    def __init__(self, argv: Sequence[str], returncode: int, output: str):
        self.argv = tuple(argv)
        self.returncode = returncode
        self.output = output
        super().__init__(f"{argv[0]} exited with {returncode}")


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    output: str  # stdout and stderr, merged in order, masked


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    masker: Masker,
    cwd: Path | None = None,
    log: RunLog | None = None,
    on_line: Callable[[str], None] | None = None,
    ok_codes: Sequence[int] = (0,),
) -> Completed:
    """Run `argv` to completion and return its masked output.

    >>> run(["true"], env={}, masker=Masker()).returncode
    0
    """
    argv = [str(a) for a in argv]
    if log is not None:
        log.write("$ " + " ".join(argv))
    # A new process group: a terminal's Ctrl-C reaches only us, and we forward exactly one
    # SIGINT. Terraform treats a second interrupt as "abandon now", which leaves a stale lock.
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
        process_group=0,
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=_pump, args=(proc, masker, log, on_line, lines), daemon=True
    )
    reader.start()
    interrupted = False
    while True:
        try:
            proc.wait()
            reader.join()
            break
        except KeyboardInterrupt:
            if interrupted:
                continue  # one forwarded interrupt is enough; keep waiting for a clean exit
            interrupted = True
            if on_line is not None:
                on_line("Interrupted: asking the process to stop cleanly...")
            _stop_gracefully(proc)
    output = "".join(lines)
    if interrupted:
        raise Interrupted(f"interrupted: {argv[0]} stopped (exit {proc.returncode})")
    if proc.returncode not in ok_codes:
        raise CommandFailed(argv, proc.returncode, output)
    return Completed(tuple(argv), proc.returncode, output)


def _pump(
    proc: subprocess.Popen[str],
    masker: Masker,
    log: RunLog | None,
    on_line: Callable[[str], None] | None,
    lines: list[str],
) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        masked = log.write(raw) if log is not None else masker.mask(raw.rstrip("\n"))
        lines.append(masked + "\n")
        if on_line is not None:
            on_line(masked)


def _stop_gracefully(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGINT)
    except ProcessLookupError:
        return
    timer = threading.Timer(INTERRUPT_GRACE_SECONDS, _terminate, args=(proc,))
    timer.daemon = True
    timer.start()


def _terminate(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def start_background(argv: Sequence[str], *, env: Mapping[str, str], log_path: Path,
                     cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a long-running local service (its own session, output appended to `log_path`).

    The sandbox's AWS endpoint, sshd hosts and instance watcher start here; callers keep the pid.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        return subprocess.Popen(
            [str(a) for a in argv], cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )


def is_alive(pid: int, marker: str) -> bool:
    """The pid runs and its command line contains `marker` (a reused pid is not ours)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return False
    return marker in cmdline


def pids_naming(text: str) -> list[int]:
    """Processes whose command line contains `text`, this process and its ancestors excepted.

    >>> os.getpid() in pids_naming("python")
    False
    """
    spared, pid = set(), os.getpid()
    while pid > 1:
        spared.add(pid)
        try:
            pid = int(_stat(pid)[1])
        except (ValueError, IndexError):
            break
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) not in spared and is_alive(int(entry.name), text):
            found.append(int(entry.name))
    return found


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat from its third field on (state, ppid, …, start time at [19]); [] if gone.
    The command name before it is cut off: it may hold spaces and parentheses."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def start_time(pid: int) -> str | None:
    """When `pid` started (clock ticks since boot, field 22 of /proc/PID/stat): with the pid, a
    process's identity. None when there is no such process."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else None


def running(pid: int, started: str | None) -> bool:
    """`pid` is still the process that started at `started` (`start_time`), and it has not yet
    finished exiting. A killed process drops its memory (and so its command line, which
    `is_alive` reads) and leaves its cgroup a moment before it stops running; only as a zombie,
    or gone, has it stopped."""
    fields = _stat(pid)
    return started is not None and len(fields) > 19 and fields[19] == started \
        and fields[0] not in ("Z", "X")


def stop_pid(pid: int, marker: str, timeout: float = 10.0) -> bool:
    """Stop our process `pid`: TERM, then KILL after `timeout`, then wait (as long again) until
    it has stopped running (`running`), which the caller (`sandbox down`) promises of all it
    started. False when it was not running."""
    started = start_time(pid)
    if not is_alive(pid, marker):
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if sig == signal.SIGKILL and not running(pid, started):
            break
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and running(pid, started):
            time.sleep(0.05)
    return True
