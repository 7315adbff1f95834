"""The sandbox cloud keeps one endpoint: never a second beside a live one, a watcher tied to the
endpoint it watches, CHOM's two servers booted with the edge hosts, and `down` stops everything
any `up` started. Real moto, real machines, real sshd."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from deployer.process import is_alive, pids_naming
from deployer.sandbox import cloud, endpoint

from conftest import ssh, wait_for

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
    """Addresses of this test's own: never the project's sandbox's, nor another test's."""
    return {**os.environ, "DEPLOYER_SANDBOX_EDGE_ADDRESSES": f"127.{_OCTET}.252.{index}",
            "DEPLOYER_SANDBOX_CHOM_ADDRESSES": f"127.{_OCTET}.253.{2 * index - 1}"
                                               f" 127.{_OCTET}.253.{2 * index}"}


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


def test_chom_servers_boot_with_the_edge_hosts_let_root_in_and_share_the_lan(
        work_dir: Path, tmp_path: Path) -> None:
    env = environ(5)
    steps = {r.name: r for r in cloud.up(work_dir, env)}
    observability, app = cloud.chom_addresses(env)
    assert steps[f"chom observability server {observability}"].status == "changed"
    assert steps[f"chom app server {app}"].status == "changed"
    config = tmp_path / "ssh_config"  # root, with the operator key `up` made
    config.write_text(
        f"Host *\n  User root\n  IdentityFile {cloud.paths(work_dir).key}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {tmp_path / 'known_hosts'}\n  StrictHostKeyChecking accept-new\n"
        "  BatchMode yes\n  ConnectTimeout 10\n")
    for role, address in zip(cloud.CHOM_ROLES, (observability, app), strict=True):
        assert ssh(config, address, "id -un; hostname").stdout.split() == [
            "root", cloud.chom_machine(role)]
    # A listener on observability's port 9090: chom-app reaches it over the private LAN, and
    # this machine through the public address's forwarded port.
    ssh(config, observability, "systemd-run --unit=probe-9090 python3 -m http.server 9090"
        " --directory /etc")
    private = f"http://{cloud.CHOM_PRIVATE_IPS[0]}:9090/hostname"
    assert wait_for(lambda: ssh(config, app, f"curl -sf {private}", check=False
                                ).stdout.strip() == "chom-observability", 20)
    with urllib.request.urlopen(f"http://{observability}:9090/hostname", timeout=10) as answer:
        assert answer.read().decode().strip() == "chom-observability"

    listed = {r.name: r for r in cloud.status(work_dir)}
    for role, address in zip(cloud.CHOM_ROLES, (observability, app), strict=True):
        line = listed[f"machine {cloud.chom_machine(role)}"]
        assert line.status == "running" and f"public {address}" in line.reason
        assert "ssh ready" in line.reason
    stopped = {r.name for r in cloud.down(work_dir) if r.status == "changed"}
    assert {f"machine {cloud.chom_machine(role)}" for role in cloud.CHOM_ROLES} <= stopped
    assert not [r for r in cloud.status(work_dir) if r.name.startswith("machine ")]
