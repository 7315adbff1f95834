"""Fan-out benchmark: `deploy edge` to N loopback hosts, against the same work done by plain
`ssh` (one connection per host: the floor) and by `ansible-playbook -f N`, in one run.

    python benchmarks/fanout.py [--sizes 1 10 50] [--repeat 3]

Each run is a first deploy (fresh app roots): clone the app at a commit, write the edge env file,
run edge_server/install.sh, start the edge server, check /health over HTTP on the host, switch
`current`. Hosts are real OpenSSH sshd processes on 127.0.x.y:22 (root needed). The methods take
turns within each repeat (the order rotates), so a slower or busier moment of the machine is
shared rather than charged to one method. Prints medians, ratios, the CPU the whole machine
spent per run (client and hosts: they share its cores), the CPU of the client side alone (what
a real fleet, whose hosts have their own cores, would load the operator's machine with), and
the deploy client's peak RSS.

Ansible runs twice: as installed (`ansible-playbook -f N`, the issue's comparison) and with SSH
pipelining on (its documented speed-up), so a reader sees both. Needs ansible-core
(pip install ansible-core); without it those columns say so.

    python benchmarks/fanout.py --machines [--sizes 1 10 50] [--repeat 3]

With --machines every host is a real sandbox machine (deployer/sandbox/machines.py: the cached
mmdebstrap base image booted by systemd-nspawn with systemd as PID 1, its own filesystem and
network namespace on the private LAN 10.78.0.0/16 at 10.78.0.i), reached on a public loopback
address 127.0.78.i:22 through the machine's forwarder (no jump host), logging in as root, as on
the sshd hosts: the steps and the playbook are the very same. The app's origin is bound
read-only into every machine at its own path, so `git clone` of the local path works there. Only
port 22 is forwarded: every method checks /health from the host itself (plain ssh and ansible run
curl / the uri module there, deploy polls through its SSH connection), and inside the machine's
own network namespace the edge server listens on 127.0.78.i (any 127.x is its own loopback).

What differs on machines: deploy sees a running systemd (/run/systemd/system), so it starts the
edge server as the systemd unit chronos-edge.service (installs the unit into /etc/systemd/system,
`systemctl daemon-reload`, `enable`, `restart`), while plain ssh and ansible start it under nohup
with a pid file, as every method does on the sshd hosts (no systemd there, deploy takes its nohup
fallback). So on machines deploy does a little more work, the work a real edge host gets.
For each N, N machines boot together before its runs (the time to ssh-ready is printed) and
are stopped after them (a machine keeps its disk and host key for the next N); between runs
reset() stops and removes the unit, kills the nohup server and removes the app root on every
machine over ssh. For each N it also prints the machines' total PSS after the runs (summed over
the machines' processes as benchmarks/machines.py measures them: inside each machine and its
launcher, the public forwarders apart) and the drop of this machine's MemAvailable from before
the boot to after the runs (other work on this machine moves it too). A machine that dies while
booting ends the series there: the sizes that ran are printed, with the reason for the one that
did not. (Machines raise the kernel's fs.inotify.max_user_instances, 128 per user by default,
to 1024 before they boot: each machine's systemd holds about 7, and at 128 the 17th machine's
PID 1 died with "Too many open files".) Every machine is stopped (Machines.stop_all), also on
a failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.machines import inside_pids, pss_kib  # noqa: E402
from deployer.demo import ensure_app_origin  # noqa: E402
from deployer.sandbox.machines import Machines, ensure_base_image  # noqa: E402
from deployer.sandbox.sshd import SandboxHost  # noqa: E402

DEPLOY = str(Path(sys.executable).with_name("deploy"))
PORT = 9400
# --machines: a LAN and public addresses of the benchmark's own (the demo sandbox uses
# 10.20.0.0/16 and 127.0.10-12.x, benchmarks/machines.py 10.79.0.0/16 and 127.0.178.1).
MACHINE_CIDR = "10.78.0.0/16"
MACHINE_PRIVATE = "10.78.0."
MACHINE_PUBLIC = "127.0.78."
BOOT_TIMEOUT = 300.0

# What every method runs on a host: the same steps deploy takes for the edge stack.
STEPS = """set -e
root="$HOME/chronos-edge"; rel="$root/releases/bench"
mkdir -p "$root/releases" && rm -rf "$rel" && git clone --quiet --no-checkout {repo} "$rel"
git -C "$rel" -c advice.detachedHead=false checkout --quiet {sha}
umask 077; printf 'EDGE_API_URL="http://localhost/api"\\nFRP_TOKEN="bench-token-1234"\\nEDGE_PORT="{port}"\\nEDGE_BIND="{address}"\\n' > "$rel/edge_server/edge.env"; umask 022
cd "$rel" && ./edge_server/install.sh >/dev/null
[ -f "$root/chronos-edge.pid" ] && kill $(cat "$root/chronos-edge.pid") 2>/dev/null || true
(set -a; . "$rel/edge_server/edge.env"; set +a; nohup python3 edge_server/server.py >> "$root/chronos-edge.log" 2>&1 < /dev/null & echo $! > "$root/chronos-edge.pid")
for i in $(seq 1 40); do curl -fsS -m 2 -o /dev/null http://{address}:{port}/health && break; sleep 0.1; done
ln -sfn releases/bench "$root/.current.tmp" && mv -T "$root/.current.tmp" "$root/current"
"""


@dataclass(frozen=True)
class MachineHost:
    """A sandbox machine as a benchmark host: `address` is its public address (its forwarder)."""
    name: str
    address: str
    private_ip: str
    key: Path


# A machine's pids live in its own PID namespace and its files under its overlay: reset it from
# inside, over ssh. deploy's systemd unit first (Restart=on-failure would bring a killed server
# back), then the nohup server of plain ssh and ansible, waited for so that its port is free.
MACHINE_RESET = """set -u
unit=/etc/systemd/system/chronos-edge.service
if [ -e "$unit" ] || systemctl is-active --quiet chronos-edge; then
  systemctl disable --now --quiet chronos-edge 2>/dev/null; rm -f "$unit"; systemctl daemon-reload
  systemctl reset-failed chronos-edge 2>/dev/null
fi
root="$HOME/chronos-edge"
if [ -f "$root/chronos-edge.pid" ]; then
  pid=$(cat "$root/chronos-edge.pid"); kill "$pid" 2>/dev/null
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
fi
rm -rf "$root"
"""


def ssh_argv(key: Path, address: str, command: str) -> list[str]:
    return ["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"root@{address}",
            command]


def on_machines(hosts: list[MachineHost], command: str, what: str) -> list[str]:
    """Run `command` as root on every machine at once; their outputs, in order."""
    procs = [subprocess.Popen(ssh_argv(h.key, h.address, command), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for h in hosts]
    outputs = []
    for host, proc in zip(hosts, procs, strict=True):
        out, err = proc.communicate()
        if proc.returncode == 255:  # ssh itself failed; the command's own status is the caller's
            raise SystemExit(f"{what} on {host.name} ({host.address}) failed: {err.strip()}")
        outputs.append(out.strip())
    return outputs


def reset(hosts: list[SandboxHost] | list[MachineHost]) -> None:
    """Fresh app roots and no edge server running: every run is a first deploy."""
    if hosts and isinstance(hosts[0], MachineHost):
        on_machines(hosts, MACHINE_RESET, "reset")  # type: ignore[arg-type]
        return
    for host in hosts:
        pid_file = host.home / "chronos-edge" / "chronos-edge.pid"
        if pid_file.exists():
            subprocess.run(["kill", pid_file.read_text().strip()], stderr=subprocess.DEVNULL)
        shutil.rmtree(host.home / "chronos-edge", ignore_errors=True)


def machine_cpu() -> float:
    """CPU seconds the whole machine has spent (user + system, all cores) since boot."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def children_cpu() -> float:
    """CPU seconds of every finished child of this process (the tools, their forks and ssh
    clients); the hosts' sshd sessions are children of the sshd daemons, not counted here."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], **kwargs) -> tuple[float, int, str, float]:
    """Run `argv`: its wall time, exit status, output, and its own peak RSS in MB (wait4)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait
    return took, proc.returncode, output, usage.ru_maxrss / 1024


def run_deploy(project: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall time and the client's peak RSS in MB."""
    took, code, output, peak_mb = timed(
        [DEPLOY, "edge", "bench", "--accept-new-host-keys", "--parallel", "64"], cwd=project, env=env)
    if code != 0:
        raise SystemExit(f"deploy failed:\n{output[-3000:]}")
    return took, peak_mb


def run_ssh(hosts: list[SandboxHost] | list[MachineHost], key: Path, repo: str, sha: str) -> float:
    started = time.perf_counter()
    procs = [subprocess.Popen(
        ssh_argv(key, h.address, STEPS.format(repo=repo, sha=sha, port=PORT, address=h.address)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for h in hosts]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"plain ssh failed: {err}")
    return time.perf_counter() - started


def run_ansible(hosts: list[SandboxHost] | list[MachineHost], key: Path, repo: str, sha: str,
                work: Path, *, pipelining: bool) -> float | None:
    playbook_bin = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)) \
        or shutil.which("ansible-playbook")
    if not playbook_bin:
        return None
    inventory = work / "inventory.ini"
    inventory.write_text("[edge]\n" + "".join(
        f"{h.address} ansible_user=root ansible_ssh_private_key_file={key}\n" for h in hosts))
    playbook = work / "edge.yml"
    # The same steps as tasks, the way an Ansible user writes them (one module per step).
    playbook.write_text(f"""- hosts: edge
  gather_facts: false
  tasks:
    - name: app root
      shell: echo "$HOME/chronos-edge"
      register: app
      changed_when: false
    - name: clone the release
      git:
        repo: "{repo}"
        dest: "{{{{ app.stdout }}}}/releases/bench"
        version: "{sha}"
    - name: edge env file
      copy:
        dest: "{{{{ app.stdout }}}}/releases/bench/edge_server/edge.env"
        mode: "0600"
        content: |
          EDGE_API_URL="http://localhost/api"
          FRP_TOKEN="bench-token-1234"
          EDGE_PORT="{PORT}"
          EDGE_BIND="{{{{ inventory_hostname }}}}"
    - name: install
      command: ./edge_server/install.sh
      args:
        chdir: "{{{{ app.stdout }}}}/releases/bench"
    - name: start the edge server (no systemd on these hosts)
      shell: |
        root="{{{{ app.stdout }}}}"
        [ -f "$root/chronos-edge.pid" ] && kill $(cat "$root/chronos-edge.pid") 2>/dev/null || true
        cd "$root/releases/bench" && (set -a; . edge_server/edge.env; set +a; nohup python3 edge_server/server.py >> "$root/chronos-edge.log" 2>&1 < /dev/null & echo $! > "$root/chronos-edge.pid")
    - name: health
      uri:
        url: "http://{{{{ inventory_hostname }}}}:{PORT}/health"
      register: health
      until: health.status == 200
      retries: 40
      delay: 0.1
    - name: switch current
      file:
        src: releases/bench
        dest: "{{{{ app.stdout }}}}/current"
        state: link
        force: true
""")
    env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "False",
           "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
           "ANSIBLE_PIPELINING": "True" if pipelining else "False"}
    started = time.perf_counter()
    done = subprocess.run([playbook_bin, "-f", str(len(hosts)), "-i", str(inventory), str(playbook)],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ansible failed:\n{done.stdout[-2000:]}")
    return time.perf_counter() - started


class BootFailed(Exception):
    """Some machine did not come up; the message says which and why."""


def boot_failure(fleet: Machines, name: str) -> str:
    """Why machine `name` stopped while booting: the first error its console log shows."""
    log = fleet.machine_dir(name) / "nspawn.log"
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines()
                 if "Failed" in line or "rror" in line]
    except OSError:
        lines = []
    why = re.sub(r"\x1b\[[0-9;]*m", "", (lines or ["?"])[0])
    return f"machine {name} stopped while booting: {why.strip()!r} (see {log})"


def boot_machines(fleet: Machines, hosts: list[MachineHost], key: Path, origin: Path) -> str:
    """Boot every machine at once (as `deploy sandbox up` does), wait until each one's sshd
    answers on its private and its public address, then until systemd finished booting; says
    how long each took."""
    public_key = key.with_suffix(".pub").read_text()
    started = time.monotonic()
    for host in hosts:
        fleet.start(host.name, host.private_ip, public_address=host.address,
                    authorized_keys=public_key, login_user="root", binds=[origin], wait=False)
    launched = time.monotonic() - started
    ready_at: dict[str, float] = {}
    while len(ready_at) < len(hosts):
        for host in hosts:
            if host.name in ready_at:
                continue
            if fleet.is_ssh_ready(host.name):
                ready_at[host.name] = time.monotonic() - started
            elif not fleet.is_running(host.name):
                raise BootFailed(boot_failure(fleet, host.name))
        if time.monotonic() - started > BOOT_TIMEOUT:
            raise BootFailed(f"not ssh-ready after {BOOT_TIMEOUT:.0f}s: "
                             + " ".join(h.name for h in hosts if h.name not in ready_at))
        time.sleep(0.1)
    all_ready = max(ready_at.values())
    states = on_machines(hosts, "timeout 120 systemctl is-system-running --wait", "boot wait")
    settled = time.monotonic() - started
    counts = {state: states.count(state) for state in sorted(set(states))}
    return (f"launched in {launched:.2f}s, all ssh-ready in {all_ready:.2f}s"
            f" (first {min(ready_at.values()):.2f}s, median {statistics.median(ready_at.values()):.2f}s),"
            f" systemd done booting on all in {settled:.2f}s ("
            + ", ".join(f"{count} {state or '?'}" for state, count in counts.items()) + ")")


def machines_memory(fleet: Machines, hosts: list[MachineHost]) -> tuple[float, float, float, int]:
    """PSS in MiB, summed over the machines as benchmarks/machines.py measures it: what runs
    inside them, their launchers (supervisor + nspawn), and their public forwarders."""
    inside = launcher = 0
    for host in hosts:
        own = inside_pids(fleet, host.name)
        inside += sum(pss_kib(pid) for pid in own)
        launcher += sum(pss_kib(pid) for pid in set(fleet.pids(host.name)) - own)
    forwarders = [entry.get("forwarder", 0) for entry in fleet.recorded().values()]
    forwarders = [pid for pid in forwarders if pid]
    return (inside / 1024, launcher / 1024, sum(pss_kib(pid) for pid in forwarders) / 1024,
            len(forwarders))


def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no MemAvailable in /proc/meminfo")


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM: stop the machines as Ctrl-C does


def stop_machines(fleet: Machines) -> None:
    """Stop every machine and remove every mount, namespace, route and cgroup made for them;
    a Ctrl-C or SIGTERM meanwhile waits until that is done."""
    handlers = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        started = time.monotonic()
        results = fleet.stop_all()
        stopped = sum(1 for r in results if r.name.startswith("machine ") and r.status == "changed")
        if stopped:
            print(f"teardown (stop_all): {stopped} machines stopped in"
                  f" {time.monotonic() - started:.2f}s", flush=True)
    finally:
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])


def remove_work(work: Path, *, remove: bool) -> None:
    """Remove the work directory unless something is still mounted under it or `remove` is
    false (kept after a failure: the machines' console logs are there)."""
    if str(work) in Path("/proc/mounts").read_text():  # never rm -r through a mount
        print(f"left {work} in place: something is still mounted under it", file=sys.stderr)
    elif remove:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work} (the machines' logs are under sandbox/machines/)", file=sys.stderr)


def show(value: float | None, width: int) -> str:
    return f"{value:>{width - 1}.2f}s" if value is not None else f"{'n/a':>{width}}"


def ratio(value: float | None, base: float, width: int) -> str:
    return f"{value / base:>{width - 1}.1f}x" if value is not None else f"{'n/a':>{width}}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--machines", action="store_true",
                        help="every host a sandbox machine (systemd-nspawn, systemd as PID 1)"
                             f" on {MACHINE_PUBLIC}x, instead of an sshd process")
    args = parser.parse_args()
    # `deploy` as installed: pip compiles every module. An editable checkout run under
    # PYTHONDONTWRITEBYTECODE=1 would compile each module changed since its .pyc on every run.
    compileall.compile_dir(REPO / "deployer", quiet=1)
    if os.geteuid() != 0:
        raise SystemExit("run as root: the hosts are sshd processes on port 22 of 127.x addresses")
    if args.machines and max(args.sizes) > 250:
        raise SystemExit(f"--machines: at most 250 hosts ({MACHINE_PUBLIC}1-250)")
    image = ensure_base_image() if args.machines else None  # built once, cached (minutes)
    work = Path(tempfile.mkdtemp(prefix="deployer-bench-"))
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    repo = ensure_app_origin(REPO, work / "app.git", dict(os.environ))
    sha = subprocess.run(["git", "ls-remote", repo, "main"], capture_output=True, text=True,
                         check=True).stdout.split()[0]
    project = work / "project"
    (project / "deployments" / "stacks").mkdir(parents=True)
    stacks = project / "deployments" / "stacks"
    (stacks / "edge.toml").symlink_to(REPO / "deployments/stacks/edge.toml")
    (project / "deployments" / "templates").symlink_to(REPO / "deployments/templates")
    env = {**os.environ, "DEPLOYER_SSH_KEY": str(key)}
    fleet: Machines | None = None
    all_hosts: list[SandboxHost] | list[MachineHost]
    if image is not None:
        fleet = Machines(work / "sandbox", image=image.path, cidr=MACHINE_CIDR)
        all_hosts = [MachineHost(f"fan{i}", f"{MACHINE_PUBLIC}{i}", f"{MACHINE_PRIVATE}{i}", key)
                     for i in range(1, max(args.sizes) + 1)]
        signal.signal(signal.SIGTERM, _terminated)
    else:
        all_hosts = [SandboxHost(work / "hosts" / f"127.0.77.{i}", f"127.0.77.{i}")
                     for i in range(1, max(args.sizes) + 1)]
        for host in all_hosts:
            host.start(authorized_keys=key.with_suffix(".pub").read_text())
    methods = ("ssh", "deploy", "ansible", "ansible+pipe")
    runs: dict[int, dict[str, list[tuple[float, float, float]]]] = {n: {m: [] for m in methods}
                                                              for n in args.sizes}
    peak_mb = 0.0
    # --machines, per N: the boot, PSS after the runs, MemAvailable before the boot and after
    booted: dict[int, str] = {}
    memory: dict[int, tuple[float, float, float, int]] = {}
    available: dict[int, tuple[float, float]] = {}
    failed: dict[int, str] = {}
    finished = False
    try:
        for n in args.sizes:
            hosts = all_hosts[:n]
            if fleet is not None:  # N machines booted for this N, stopped after its runs
                before = mem_available_mib()
                try:
                    booted[n] = boot_machines(fleet, hosts, key, work / "app.git")  # type: ignore[arg-type]
                except BootFailed as exc:
                    failed[n] = str(exc)
                    print(f"N={n:<3} boot failed: {exc}", flush=True)
                    stop_machines(fleet)
                    break
                print(f"N={n:<3} boot: {booted[n]}", flush=True)
            (project / "deployments" / "env-bench").write_text(
                "edge_hosts=" + " ".join(f"root@{h.address}" for h in hosts) + "\n"
                f"git_repo={repo}\ngit_ref=main\nfrp_token=bench-token-1234\n"
                f"edge_api_url=http://localhost/api\nedge_port={PORT}\n")
            for repeat in range(args.repeat):
                order = methods[repeat % len(methods):] + methods[:repeat % len(methods)]
                for method in order:
                    reset(hosts)
                    cpu, client = machine_cpu(), children_cpu()
                    if method == "ssh":
                        took = run_ssh(hosts, key, repo, sha)
                    elif method == "deploy":
                        took, rss = run_deploy(project, env)
                        peak_mb = max(peak_mb, rss)
                    else:
                        took = run_ansible(hosts, key, repo, sha, work,
                                           pipelining=method == "ansible+pipe")
                        if took is None:
                            continue
                    runs[n][method].append((took, machine_cpu() - cpu, children_cpu() - client))
                    print(f"N={n:<3} repeat {repeat + 1}  {method:<12} {took:6.2f}s  machine CPU"
                          f" {runs[n][method][-1][1]:6.2f}s  client CPU {runs[n][method][-1][2]:6.2f}s",
                          flush=True)
            if fleet is not None:  # after the runs: the last run's edge servers still run
                memory[n] = machines_memory(fleet, hosts)  # type: ignore[arg-type]
                available[n] = (before, mem_available_mib())
                stop_machines(fleet)
        finished = not failed  # after a failed boot, keep the logs the message points at
    finally:
        if fleet is None:
            reset(all_hosts)
            for host in all_hosts:
                host.stop()
        else:
            stop_machines(fleet)
            remove_work(work, remove=finished)

    def median(n: int, method: str, index: int = 0) -> float | None:
        got = [r[index] for r in runs[n][method]]
        return statistics.median(got) if got else None

    print()
    if fleet is None:
        print(f"medians of {args.repeat} runs, methods interleaved; first deploys to N loopback sshd"
              f" hosts on this {os.cpu_count()}-core machine (client and hosts share its cores)")
    else:
        print(f"medians of {args.repeat} runs, methods interleaved; first deploys to N sandbox"
              " machines (systemd-nspawn, systemd as PID 1, own filesystem; ssh as root to"
              f" {MACHINE_PUBLIC}x:22 through each machine's forwarder) on this"
              f" {os.cpu_count()}-core machine (client and machines share its cores).")
        print("what differs: deploy starts the edge server as the systemd unit chronos-edge"
              " (installs it, daemon-reload, enable, restart); plain ssh and ansible start it"
              " under nohup with a pid file")
    print(f"{'N':>3}  {'plain ssh':>10}  {'deploy':>8}  {'ansible':>8}  {'ansible+pipe':>12}"
          f"  {'deploy/ssh':>10}  {'ansible/deploy':>14}  {'ansible+pipe/deploy':>19}")
    sizes = [n for n in args.sizes if runs[n]["ssh"]]
    for n in sizes:
        ssh, dep = median(n, "ssh"), median(n, "deploy")
        ans, pipe = median(n, "ansible"), median(n, "ansible+pipe")
        assert ssh is not None and dep is not None
        print(f"{n:>3}  {show(ssh, 10)}  {show(dep, 8)}  {show(ans, 8)}  {show(pipe, 12)}"
              f"  {dep / ssh:>9.2f}x  {ratio(ans, dep, 14)}  {ratio(pipe, dep, 19)}")
    # The fixed start cost (at N=1): deploy minus plain ssh within each repeat, where the two ran
    # moments apart, so a busier stretch of the machine moves both (the medians above can come
    # from different repeats).
    print("deploy minus plain ssh, paired within each repeat (at N=1: the fixed start cost):")
    for n in sizes:
        paired = sorted(d[0] - s[0] for d, s in zip(runs[n]["deploy"], runs[n]["ssh"], strict=True))
        print(f"  N={n:<3} median {statistics.median(paired):+.2f}s"
              f"  (min {paired[0]:+.2f}s, max {paired[-1]:+.2f}s, {len(paired)} pairs)")
    for index, what in ((1, "machine CPU per run (client + hosts)"),
                        (2, "client CPU per run (the tool and its ssh processes)")):
        print(f"{what}, medians:")
        for n in sizes:
            print(f"  N={n:<3} " + "  ".join(f"{m} {median(n, m, index):.2f}s" for m in methods
                                              if median(n, m, index) is not None))
    print(f"peak RSS of the deploy client (largest run): {peak_mb:.0f} MB")
    if fleet is None:
        shutil.rmtree(work, ignore_errors=True)
        return
    print("N machines booted fresh for each N (ssh-ready: sshd answered on the private and the"
          " public address), stopped after its runs:")
    for n in sizes:
        print(f"  N={n:<3} boot {booted[n]}")
    print("memory after the runs (the last run's edge servers running): the machines' PSS (inside"
          " + launcher, summed), their public forwarders' PSS, and the drop of this machine's"
          " MemAvailable from before the boot (anything else running here moves it too):")
    for n in sizes:
        inside, launcher, forwarders, count = memory[n]
        before, after = available[n]
        print(f"  N={n:<3} machines {inside + launcher:.0f} MiB (inside {inside:.0f}, launchers"
              f" {launcher:.0f}; {(inside + launcher) / n:.1f} per machine); {count} forwarders"
              f" {forwarders:.0f} MiB; together {inside + launcher + forwarders:.0f} MiB;"
              f" MemAvailable {before:.0f} -> {after:.0f} MiB: dropped {before - after:.0f} MiB")
    for n, why in failed.items():
        print(f"  N={n:<3} not run: {why}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
