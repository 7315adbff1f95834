"""Fan-out benchmark: `deploy edge` to N loopback hosts, against the same work done by plain
`ssh` (one connection per host: the floor) and by `ansible-playbook -f N`, in one run.

    python benchmarks/fanout.py [--sizes 1 10 50] [--repeat 3]

Each run is a first deploy (fresh app roots): clone the app at a commit, write the edge env file,
run edge_server/install.sh, start the edge server, check /health over HTTP on the host, switch
`current`. Hosts are real OpenSSH sshd processes on 127.0.x.y:22 (root needed). Prints medians,
ratios to the plain-ssh floor, and the deploy client's peak RSS. Needs ansible-core for the
Ansible column (pip install ansible-core); without it that column says so.
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


def timed(argv: list[str], **kwargs) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    return time.perf_counter() - started, done


def run_deploy(project: Path, env: dict[str, str]) -> float:
    took, done = timed([DEPLOY, "edge", "bench", "--accept-new-host-keys", "--parallel", "64"],
                       cwd=project, env=env)
    if done.returncode != 0:
        raise SystemExit(f"deploy failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return took


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
                work: Path) -> float | None:
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
           "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3"}
    took, done = timed([playbook_bin, "-f", str(len(hosts)), "-i", str(inventory), str(playbook)],
                       env=env)
    if done.returncode != 0:
        raise SystemExit(f"ansible failed:\n{done.stdout[-2000:]}")
    return took


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
    medians: dict[int, dict[str, float]] = {n: {} for n in args.sizes}
    peak_mb = 0.0
    try:
        # Ansible runs last, so the peak RSS taken before it is the deploy client's (and ssh's).
        for method in ("ssh", "deploy", "ansible"):
            for n in args.sizes:
                hosts = all_hosts[:n]
                (project / "deployments" / "env-bench").write_text(
                    "edge_hosts=" + " ".join(f"root@{h.address}" for h in hosts) + "\n"
                    f"git_repo={repo}\ngit_ref=main\nfrp_token=bench-token-1234\n"
                    f"edge_api_url=http://localhost/api\nedge_port={PORT}\n")
                runs = []
                for _ in range(args.repeat):
                    reset(hosts)
                    if method == "ssh":
                        runs.append(run_ssh(hosts, key, repo, sha))
                    elif method == "deploy":
                        runs.append(run_deploy(project, env))
                    else:
                        took = run_ansible(hosts, key, repo, sha, work)
                        if took is None:
                            break
                        runs.append(took)
                if runs:
                    medians[n][method] = statistics.median(runs)
                    print(f"N={n:<3} {method:<8} median {medians[n][method]:6.2f}s"
                          f"  runs {' '.join(f'{r:.2f}' for r in runs)}", flush=True)
            if method == "deploy":
                peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    finally:
        for host in all_hosts:
            host.stop()
    print()
    print(f"medians of {args.repeat} runs; first deploys to N loopback sshd hosts")
    print(f"{'N':>3}  {'plain ssh':>10}  {'deploy':>8}  {'ansible':>8}  {'deploy/ssh':>10}"
          f"  {'ansible/deploy':>14}")
    for n, med in medians.items():
        ansible = med.get("ansible")
        ratio = f"{ansible / med['deploy']:.1f}x" if ansible else "n/a (no ansible)"
        shown = f"{ansible:.2f}s" if ansible else "n/a"
        print(f"{n:>3}  {med['ssh']:>9.2f}s  {med['deploy']:>7.2f}s  {shown:>8}"
              f"  {med['deploy'] / med['ssh']:>9.2f}x  {ratio:>14}")
    print(f"peak RSS of the deploy client (largest child before Ansible ran): {peak_mb:.0f} MB")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
