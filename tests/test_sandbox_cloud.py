"""The sandbox cloud keeps one endpoint: never a second beside a live one, a watcher tied to the
endpoint it watches, and `down` stops everything any `up` started. Real moto, real sshd."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from deployer.process import is_alive, pids_naming
from deployer.sandbox import cloud, endpoint

from conftest import wait_for

pytestmark = pytest.mark.slow

_OCTET = int(os.environ.get("DEPLOYER_TEST_HOST_OCTET", "0"))


@pytest.fixture
def work_dir(tmp_path: Path, provider_mirror: Path):
    work = tmp_path / ".deployer"
    work.mkdir()
    (work / "plugins").symlink_to(provider_mirror)  # no second copy of the provider
    yield work
    cloud.down(work)


def environ(index: int) -> dict[str, str]:
    return {**os.environ, "DEPLOYER_SANDBOX_EDGE_ADDRESSES": f"127.{_OCTET}.252.{index}"}


def state(work: Path) -> dict:
    return json.loads((work / "sandbox" / "state.json").read_text())



def test_a_live_endpoint_that_does_not_answer_is_never_replaced(
        work_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = work_dir / "sandbox"
    root.mkdir()
    # A process that is the recorded endpoint by its command line, and never answers.
    mute = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             cloud.ENDPOINT_MARKER, str(root)])
    # Between fork and exec the child's command line is still ours: wait for its own.
    assert wait_for(lambda: is_alive(mute.pid, cloud.ENDPOINT_MARKER), 10)
    try:
        cert, _ = endpoint.ensure_certificate(root / "tls")
        (root / "state.json").write_text(json.dumps({"endpoint": {
            "url": f"https://127.0.0.1:{endpoint.free_port()}", "pid": mute.pid,
            "ca_bundle": str(cert)}}))
        monkeypatch.setattr(endpoint, "PATIENCE_SECONDS", 1.0)
        with pytest.raises(cloud.SandboxError, match=rf"pid {mute.pid}.*did not answer within 1s"):
            cloud.up(work_dir, environ(1))
        assert state(work_dir)["endpoint"]["pid"] == mute.pid
        assert [p for p in pids_naming(str(root)) if is_alive(p, cloud.ENDPOINT_MARKER)] == [mute.pid]
    finally:
        mute.kill()
        mute.wait()


def test_rerun_keeps_the_endpoint_and_the_watcher(work_dir: Path) -> None:
    first = cloud.up(work_dir, environ(2))
    before = state(work_dir)
    again = cloud.up(work_dir, environ(2))
    assert [r.status for r in first][:1] == ["changed"]
    assert {r.name: r.status for r in again}["aws endpoint"] == "unchanged"
    assert {r.name: r.status for r in again}["instance emulation"] == "unchanged"
    assert state(work_dir) == before


def test_the_watcher_stops_with_its_endpoint_and_is_replaced_with_it(work_dir: Path) -> None:
    cloud.up(work_dir, environ(3))
    old = state(work_dir)
    os.kill(old["endpoint"]["pid"], signal.SIGKILL)
    assert wait_for(lambda: not is_alive(old["watcher"]["pid"], cloud.WATCHER_MARKER))
    cloud.up(work_dir, environ(3))
    new = state(work_dir)
    assert new["endpoint"]["pid"] != old["endpoint"]["pid"]
    assert new["watcher"]["endpoint_pid"] == new["endpoint"]["pid"]
    assert is_alive(new["watcher"]["pid"], cloud.WATCHER_MARKER)


def test_down_stops_an_endpoint_whose_record_was_lost(work_dir: Path) -> None:
    cloud.up(work_dir, environ(4))
    root = work_dir / "sandbox"
    lost = endpoint.start(root / "endpoint-lost.log")  # an earlier `up` whose record is gone
    recorded = state(work_dir)
    assert lost.pid in pids_naming(str(root))
    results = cloud.down(work_dir)
    assert f"stopped stray {cloud.ENDPOINT_MARKER} {lost.pid}" in [r.reason for r in results]
    for pid in (lost.pid, recorded["endpoint"]["pid"], recorded["watcher"]["pid"]):
        assert wait_for(lambda pid=pid: not is_alive(pid, str(root)), 5), pid
    assert [p for p in pids_naming(str(root))] == []
