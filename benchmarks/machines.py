"""Sandbox machines benchmark: boot N real machines (mmdebstrap image + systemd-nspawn), time
them to ssh-ready, measure their memory when idle, and time the teardown.

    python benchmarks/machines.py [--count 10] [--settle 5]

Machine 0 is a jump machine with a public loopback address; the others are private-only. "ssh
ready" means every machine's sshd sent its banner on its private address (and the jump machine's
through its public forwarder too); one real `ssh -J` login to the last machine then checks it.
Memory is PSS (from /proc/<pid>/smaps_rollup), summed per machine over the processes in its
cgroup, split into what runs inside the machine (systemd, journald, sshd, ...) and its launcher
(the Python supervisor and systemd-nspawn); the public forwarder is reported on its own.
Needs root; the base image is built first if it is not cached (minutes, once).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deployer.sandbox import machines as m  # noqa: E402


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def inside_pids(machines: m.Machines, name: str) -> set[int]:
    """The machine's own processes: nspawn puts them in the `payload` cgroup."""
    payload = machines.cgroups(name)[0] / "payload"
    found: set[int] = set()
    for directory, _, _ in os.walk(payload):
        try:
            found.update(int(p) for p in (Path(directory) / "cgroup.procs").read_text().split())
        except OSError:
            pass
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before measuring memory")
    parser.add_argument("--cidr", default="10.79.0.0/16")
    parser.add_argument("--public-address", default="127.0.178.1")
    args = parser.parse_args()
    net = args.cidr.split(".0.0/")[0]

    started = time.monotonic()
    image = m.ensure_base_image()
    print(f"base image: {image.result.status} ({image.result.reason}) in {time.monotonic() - started:.1f}s")

    work = Path(tempfile.mkdtemp(prefix="deployer-machines-bench-"))
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    machines = m.Machines(work / "sandbox", image=image.path, cidr=args.cidr)
    names = [f"m{i}" for i in range(args.count)]
    try:
        started = time.monotonic()
        for i, name in enumerate(names):
            machines.start(name, f"{net}.0.{i + 1}", public_address=args.public_address if i == 0 else None,
                           authorized_keys=key.with_suffix(".pub").read_text(), wait=False)
        launched = time.monotonic() - started
        ready_at = {}
        pending = set(names)
        while pending and time.monotonic() - started < 120:
            for name in sorted(pending):
                if machines.is_ssh_ready(name):
                    ready_at[name] = time.monotonic() - started
                    pending.discard(name)
            time.sleep(0.02)
        if pending:
            print(f"NOT READY after 120s: {sorted(pending)}")
            return 1
        all_ready = max(ready_at.values())
        print(f"{args.count} machines: launched in {launched:.2f}s, all ssh-ready in {all_ready:.2f}s"
              f" (first {min(ready_at.values()):.2f}s, median {statistics.median(ready_at.values()):.2f}s)")

        config = work / "ssh_config"
        config.write_text(f"Host *\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
                          f"  UserKnownHostsFile {work / 'known_hosts'}\n  StrictHostKeyChecking accept-new\n"
                          "  BatchMode yes\n  ConnectTimeout 10\n  User ec2-user\n")
        t = time.monotonic()
        login = subprocess.run(["ssh", "-F", str(config), "-J", args.public_address,
                                f"{net}.0.{args.count}", "hostname; cat /proc/1/comm"],
                               capture_output=True, text=True, timeout=60)
        print(f"ssh -J {args.public_address} {net}.0.{args.count}: exit {login.returncode},"
              f" {login.stdout.split()} in {time.monotonic() - t:.2f}s")

        time.sleep(args.settle)
        inside, launcher = [], []
        for name in names:
            own = inside_pids(machines, name)
            inside.append(sum(pss_kib(p) for p in own) / 1024)
            launcher.append(sum(pss_kib(p) for p in set(machines.pids(name)) - own) / 1024)
        procs = statistics.median(len(inside_pids(machines, n)) for n in names)
        print(f"PSS per machine after {args.settle:.0f}s idle (MiB): inside median {statistics.median(inside):.1f}"
              f" (min {min(inside):.1f}, max {max(inside):.1f}, {procs:.0f} processes);"
              f" launcher (supervisor + nspawn) median {statistics.median(launcher):.1f};"
              f" total median {statistics.median(a + b for a, b in zip(inside, launcher, strict=True)):.1f}")
        forwarders = [e.get("forwarder", 0) for e in json.loads(machines.state_path.read_text())["machines"].values()]
        print(f"public forwarder PSS: {sum(pss_kib(p) for p in forwarders if p) / 1024:.1f} MiB"
              f" ({sum(1 for p in forwarders if p)} forwarder)")
    finally:
        t = time.monotonic()
        results = machines.stop_all()
        print(f"teardown (stop_all): {time.monotonic() - t:.2f}s,"
              f" {sum(1 for r in results if r.name.startswith('machine '))} machines stopped")
        if str(work) not in Path("/proc/mounts").read_text():  # never rm -r through a mount
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
