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
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deployer.demo import ensure_app_origin  # noqa: E402
from deployer.sandbox.sshd import SandboxHost  # noqa: E402

DEPLOY = str(Path(sys.executable).with_name("deploy"))
PORT = 9400

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


def reset(hosts: list[SandboxHost]) -> None:
    """Fresh app roots and no edge server running: every run is a first deploy."""
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


def run_ssh(hosts: list[SandboxHost], key: Path, repo: str, sha: str) -> float:
    started = time.perf_counter()
    procs = [subprocess.Popen(
        ["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"root@{h.address}",
         STEPS.format(repo=repo, sha=sha, port=PORT, address=h.address)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for h in hosts]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"plain ssh failed: {err}")
    return time.perf_counter() - started


def run_ansible(hosts: list[SandboxHost], key: Path, repo: str, sha: str,
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


def show(value: float | None, width: int) -> str:
    return f"{value:>{width - 1}.2f}s" if value is not None else f"{'n/a':>{width}}"


def ratio(value: float | None, base: float, width: int) -> str:
    return f"{value / base:>{width - 1}.1f}x" if value is not None else f"{'n/a':>{width}}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the hosts are sshd processes on port 22 of 127.x addresses")
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
    all_hosts = [SandboxHost(work / "hosts" / f"127.0.77.{i}", f"127.0.77.{i}")
                 for i in range(1, max(args.sizes) + 1)]
    for host in all_hosts:
        host.start(authorized_keys=key.with_suffix(".pub").read_text())
    methods = ("ssh", "deploy", "ansible", "ansible+pipe")
    runs: dict[int, dict[str, list[tuple[float, float, float]]]] = {n: {m: [] for m in methods}
                                                              for n in args.sizes}
    peak_mb = 0.0
    try:
        for n in args.sizes:
            hosts = all_hosts[:n]
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
    finally:
        reset(all_hosts)
        for host in all_hosts:
            host.stop()

    def median(n: int, method: str, index: int = 0) -> float | None:
        got = [r[index] for r in runs[n][method]]
        return statistics.median(got) if got else None

    print()
    print(f"medians of {args.repeat} runs, methods interleaved; first deploys to N loopback sshd"
          f" hosts on this {os.cpu_count()}-core machine (client and hosts share its cores)")
    print(f"{'N':>3}  {'plain ssh':>10}  {'deploy':>8}  {'ansible':>8}  {'ansible+pipe':>12}"
          f"  {'deploy/ssh':>10}  {'ansible/deploy':>14}  {'ansible+pipe/deploy':>19}")
    for n in args.sizes:
        ssh, dep = median(n, "ssh"), median(n, "deploy")
        ans, pipe = median(n, "ansible"), median(n, "ansible+pipe")
        assert ssh is not None and dep is not None
        print(f"{n:>3}  {show(ssh, 10)}  {show(dep, 8)}  {show(ans, 8)}  {show(pipe, 12)}"
              f"  {dep / ssh:>9.2f}x  {ratio(ans, dep, 14)}  {ratio(pipe, dep, 19)}")
    for index, what in ((1, "machine CPU per run (client + hosts)"),
                        (2, "client CPU per run (the tool and its ssh processes)")):
        print(f"{what}, medians:")
        for n in args.sizes:
            print(f"  N={n:<3} " + "  ".join(f"{m} {median(n, m, index):.2f}s" for m in methods
                                              if median(n, m, index) is not None))
    print(f"peak RSS of the deploy client (largest run): {peak_mb:.0f} MB")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
