"""The subprocess choke point, with real child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from deployer import process
from deployer.errors import Interrupted
from deployer.logs import RunLog
from deployer.secrets import Masker


def test_streams_masks_and_logs(tmp_path: Path) -> None:
    masker = Masker(["s3cr3t-value"])
    seen: list[str] = []
    with RunLog(tmp_path / "run.log", masker) as log:
        done = process.run(
            [sys.executable, "-c", "import os,sys; print('v=' + os.environ['V'], flush=True);"
             " print('err s3cr3t-value', file=sys.stderr)"],
            env={"V": "s3cr3t-value"}, masker=masker, log=log, on_line=seen.append)
    assert seen == ["v=****", "err ****"]
    assert done.output == "v=****\nerr ****\n"
    text = (tmp_path / "run.log").read_text()
    assert "s3cr3t-value" not in text and "v=****" in text


def test_failure_is_typed(tmp_path: Path) -> None:
    with pytest.raises(process.CommandFailed) as err:
        process.run([sys.executable, "-c", "print('boom'); raise SystemExit(4)"],
                    env={}, masker=Masker())
    assert err.value.returncode == 4 and err.value.output == "boom\n"


def test_accepted_codes() -> None:
    done = process.run([sys.executable, "-c", "raise SystemExit(2)"], env={}, masker=Masker(),
                       ok_codes=(0, 2))
    assert done.returncode == 2


CHILD = textwrap.dedent("""
    import signal, sys, time
    def stop(*_):
        print("cleaned up", flush=True)
        sys.exit(1)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)
    time.sleep(30)
""")


def test_ctrl_c_is_forwarded_once_and_waited_for(tmp_path: Path) -> None:
    """A real runner process gets SIGINT; its child (own process group) cleans up first."""
    runner = tmp_path / "runner.py"
    runner.write_text(textwrap.dedent(f"""
        import sys
        from deployer import process
        from deployer.errors import Interrupted
        from deployer.secrets import Masker
        try:
            process.run([sys.executable, "-c", {CHILD!r}], env={{}}, masker=Masker(),
                        on_line=lambda l: print(l, flush=True))
        except Interrupted as exc:
            print("interrupted:", exc, flush=True)
            sys.exit(130)
    """))
    proc = subprocess.Popen([sys.executable, str(runner)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ})
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert "cleaned up" in out
    assert out.count("Interrupted: asking the process to stop cleanly") == 1


def test_interrupt_in_process_raises_interrupted() -> None:
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    with pytest.raises(Interrupted):
        process.run([sys.executable, "-c", CHILD], env={}, masker=Masker())
    assert time.monotonic() - started < 10


def test_stop_pid_returns_once_a_process_that_ignores_term_is_gone(tmp_path: Path) -> None:
    """TERM is ignored, so KILL follows after the timeout; stop_pid returns only when the
    process is gone (reaped here by the test's own wait, as a zombie is not alive)."""
    marker = f"stop-pid-test-{tmp_path.name}"
    proc = subprocess.Popen([sys.executable, "-c", "import signal, time;"
                             " signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True);"
                             " time.sleep(60)", marker], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"1\n"  # TERM is ignored now
    started = time.monotonic()
    assert process.stop_pid(proc.pid, marker, timeout=0.5) is True
    assert not process.is_alive(proc.pid, marker)
    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - started < 5
    assert process.stop_pid(proc.pid, marker) is False  # not running any more


def test_stop_pid_waits_for_a_process_whose_command_line_is_gone(tmp_path: Path) -> None:
    """A dying process loses its command line before it stops running (and leaves its cgroup),
    so its command line cannot tell when it has stopped. This one blanks it on TERM and runs on:
    stop_pid still KILLs it after the timeout, and returns only once it has stopped running."""
    marker = f"stop-pid-blank-{tmp_path.name}"
    proc = subprocess.Popen(["perl", "-e", '$SIG{TERM} = sub { $0 = "" }; $| = 1; print "1\\n";'
                             " sleep 1 while 1", marker], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"1\n"  # the handler is set
    started = process.start_time(proc.pid)
    assert process.running(proc.pid, started) and process.is_alive(proc.pid, marker)
    assert not process.running(proc.pid, "0")  # another process that had this pid
    began = time.monotonic()
    assert process.stop_pid(proc.pid, marker, timeout=0.5) is True
    assert 0.5 <= time.monotonic() - began < 5  # it waited out the TERM, then KILLed
    assert not process.running(proc.pid, started)  # a zombie, until the wait below reaps it
    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert process.start_time(proc.pid) is None
