"""The sandbox cloud: `deploy sandbox up | down | status | env`.

- A moto AWS endpoint on a loopback port (background, pid file, log file).
- The AWS provider 3.39.0 unpacked into an offline filesystem mirror.
- A `sandbox` AWS profile with dummy credentials (moto accepts any; AWS rejects these).
- Instances are machines (deployer/sandbox/machines.py: Debian, systemd as PID 1, a network
  namespace of its own on its VPC's private LAN): a watcher (`python -m
  deployer.sandbox.instances`) boots one for every running EC2 instance at its private IP from
  moto, with its VPC's prefix length; the machines of one VPC reach each other, those of
  another VPC do not, and this machine reaches none of them (an `unreachable` route for every
  VPC CIDR with machines). One with an Elastic IP (moto hands out 127.x.y.z addresses) is
  reachable there on port 22 and on the ports its security groups open, the others only through
  such a machine (`ssh -J`). `ec2-user` logs in with the instance key pair's key, and
  `user_data` runs once at first boot.
- Load balancers (elbv2) are loopback forwards, kept by the same watcher
  (deployer/sandbox/balancers.py): each listener of a balancer listens on the balancer's own
  address in 127.0.12.0/24 (DEPLOYER_SANDBOX_BALANCER_ADDRESSES moves it) and passes TCP through
  to the running registered targets, in turn. No TLS is terminated and no Cognito login runs:
  the targets serve what they serve. `load_balancer_address(work_dir, dns_name)` turns moto's
  DNS name of a balancer (which resolves nowhere) into that address.
- A few edge hosts: more machines, on 127.0.10.x, for the edge stack.
- CHOM's two existing servers (no Terraform): machines `chom-observability` and `chom-app` on
  127.0.11.1 and .2 (private 10.20.251.1 and .2), where root logs in with the operator key, as on
  a bare server reached first through a bootstrap login.
Everything lives under `.deployer/sandbox/`; `down` stops every process it ever started (by pid,
then by a command line naming that directory), every load balancer's forward and every machine,
with the mounts, namespaces, bridges, routes and cgroups made for them, and leaves files alone
(host keys and machine disks survive, so known_hosts stays valid across down/up).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from deployer import process
from deployer.errors import ConfigError, DeployerError
from deployer.process import is_alive, stop_pid
from deployer.results import CHANGED, UNCHANGED, StepResult
from deployer.sandbox import balancers, endpoint
from deployer.sandbox.provider import ensure_provider_mirror
from deployer.secrets import Masker

PROFILE = "sandbox"
REGION = "us-east-1"
EDGE_ADDRESSES = ("127.0.10.1", "127.0.10.2", "127.0.10.3")
# The machines' private LAN: terraform/shared's VPC (vpc_cidr), so moto's private IPs (from its
# subnet, 10.20.1.0/24) are machine addresses. Edge hosts take 10.20.250.x, outside that subnet.
CIDR = "10.20.0.0/16"
EDGE_PRIVATE_NET = "10.20.250."
LOGIN_USER = "ec2-user"  # what the machines let in, as an Amazon Linux AMI does
# CHOM's existing servers, in this order: observability (Prometheus, Grafana), then the app.
CHOM_ROLES = ("observability", "app")
CHOM_ADDRESSES = ("127.0.11.1", "127.0.11.2")
CHOM_PRIVATE_IPS = ("10.20.251.1", "10.20.251.2")  # outside moto's subnet and the edge hosts'
CHOM_LOGIN_USER = "root"  # bare servers: the first login is root's, as a provider hands them out
CHOM_PORTS = (22, 80, 3000, 9090)  # ssh, the app, Grafana, Prometheus
# What the command lines of the sandbox's own services contain (a reused pid is not ours).
ENDPOINT_MARKER = "deployer.sandbox.endpoint"
WATCHER_MARKER = "deployer.sandbox.instances"


def edge_addresses(environ: dict[str, str]) -> tuple[str, ...]:
    """The demo's edge hosts; DEPLOYER_SANDBOX_EDGE_ADDRESSES moves them (two sandboxes at once)."""
    raw = environ.get("DEPLOYER_SANDBOX_EDGE_ADDRESSES", "")
    return tuple(raw.split()) if raw.strip() else EDGE_ADDRESSES


def edge_machine(address: str) -> str:
    """The machine name of the edge host on `address`.

    >>> edge_machine("127.0.10.1")
    'edge-127-0-10-1'
    """
    return "edge-" + address.replace(".", "-")


def chom_addresses(environ: dict[str, str]) -> tuple[str, str]:
    """CHOM's two servers (observability, app); DEPLOYER_SANDBOX_CHOM_ADDRESSES="A B" moves them.

    >>> chom_addresses({"DEPLOYER_SANDBOX_CHOM_ADDRESSES": "127.0.31.1 127.0.31.2"})
    ('127.0.31.1', '127.0.31.2')
    """
    raw = environ.get("DEPLOYER_SANDBOX_CHOM_ADDRESSES", "")
    if not raw.strip():
        return CHOM_ADDRESSES
    found = raw.split()
    if len(found) != len(CHOM_ROLES):
        raise ConfigError(f"DEPLOYER_SANDBOX_CHOM_ADDRESSES names {len(found)} addresses, not"
                          f" {len(CHOM_ROLES)} ({' and '.join(CHOM_ROLES)}): {raw!r}")
    return found[0], found[1]


def chom_machine(role: str) -> str:
    """The machine name of CHOM's `role` server (one of CHOM_ROLES).

    >>> chom_machine("observability")
    'chom-observability'
    """
    if role not in CHOM_ROLES:
        raise ValueError(f"CHOM's servers are {', '.join(CHOM_ROLES)}, not {role!r}")
    return f"chom-{role}"


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def env_file(self) -> Path:
        return self.root / "sandbox.env"

    @property
    def key(self) -> Path:
        return self.root / "ssh" / "id_ed25519"

    @property
    def hosts(self) -> Path:
        return self.root / "hosts"

    @property
    def app_origin(self) -> Path:
        return self.root / "app.git"


def paths(work_dir: Path) -> Paths:
    return Paths(work_dir / "sandbox")


def machines_of(p: Paths, image: Path | None = None, environ: dict[str, str] | None = None):
    """The sandbox's machines (the instances', the edge hosts' and CHOM's), in its own
    directory."""
    from deployer.sandbox.machines import Machines

    return Machines(p.root, image=image, cidr=CIDR, environ=environ)


def balancers_of(p: Paths, environ: dict[str, str] | None = None):
    """The sandbox's load balancer forwards (the watcher's), in its own directory."""
    return balancers.Balancers(p.root, environ=environ)


def load_balancer_address(work_dir: Path, dns_name: str, timeout: float = 30.0) -> str:
    """The loopback address the sandbox forwards the load balancer named `dns_name` on (moto's
    DNS name, a Terraform output, which resolves nowhere). The watcher forwards a balancer within
    a second or two of its listener's creation: this waits up to `timeout` for it.

        load_balancer_address(work_dir, "cso-1.us-east-1.elb.amazonaws.com")  # '127.0.12.93'
    """
    fleet = balancers_of(paths(work_dir))
    deadline = time.monotonic() + timeout
    while True:
        address = fleet.address_of(dns_name)
        if address or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if not address:
        raise ConfigError(f"the sandbox forwards no load balancer named {dns_name}"
                          f" (after {timeout:.0f}s); is it up, with a listener?"
                          " `deploy sandbox status` lists the forwarded ones")
    return address


def _read_state(p: Paths) -> dict:
    try:
        return json.loads(p.state.read_text())
    except (OSError, ValueError):
        return {}


def _write_state(p: Paths, state: dict) -> None:
    p.root.mkdir(parents=True, exist_ok=True)
    tmp = p.state.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(p.state)


def environment(work_dir: Path) -> dict[str, str]:
    """The settings a shell (or deploy) needs to talk to the running sandbox."""
    p = paths(work_dir)
    state = _read_state(p)
    if not state.get("endpoint"):
        raise ConfigError("the sandbox is not up; run `deploy sandbox up` (or `make demo`)")
    return {
        "AWS_ENDPOINT_URL": state["endpoint"]["url"],
        "DEPLOYER_PROVIDER_MIRROR": str(work_dir / "plugins"),
        "DEPLOYER_SSH_KEY": str(p.key),
        # The emulated load balancers' DNS names, as curl --resolve entries (kept by the watcher).
        "DEPLOYER_RESOLVE_FILE": str(p.root / balancers.RESOLVE_FILE),
        **endpoint.write_profile(p.root / "aws", PROFILE, REGION, Path(state["endpoint"]["ca_bundle"])),
    }


def check_prerequisites() -> None:
    from deployer.sandbox import machines

    problems = []
    if os.geteuid() != 0:
        problems.append(
            "the sandbox needs root: its hosts are machines (systemd-nspawn, network namespaces,"
            " overlay mounts) reached on port 22 of 127.x addresses (run as root, e.g. in a VM)")
    needs = {"ssh-keygen": "openssh-client", "git": "git", "systemd-nspawn": "systemd-container",
             "ip": "iproute2", "mount": "mount"}
    if not any(machines.IMAGE_CACHE.glob(f"{machines.image_name()}/{machines.IMAGE_MARKER}")):
        needs["mmdebstrap"] = "mmdebstrap"  # only to build the base image, once
    for tool, package in needs.items():
        if not shutil.which(tool):
            problems.append(f"{tool} is missing: apt-get install {package}")
    if problems:
        raise ConfigError(problems)


def up(work_dir: Path, environ: dict[str, str]) -> tuple[StepResult, ...]:
    """Bring the sandbox up; idempotent (what already runs is reported unchanged)."""
    from deployer.sandbox import machines, sshd

    check_prerequisites()
    p = paths(work_dir)
    p.root.mkdir(parents=True, exist_ok=True)
    state = _read_state(p)
    results = []

    ep = state.get("endpoint")
    if ep and is_alive(ep["pid"], ENDPOINT_MARKER):
        # The recorded endpoint holds the cloud: never start a second one beside it, however
        # slowly it answers. A busy machine answers late; a second endpoint would be empty.
        if not endpoint.wait_until_up(ep["url"], Path(ep["ca_bundle"]), deadline=endpoint.PATIENCE_SECONDS,
                                      alive=lambda: is_alive(ep["pid"], ENDPOINT_MARKER)):
            raise SandboxError(
                f"the sandbox AWS endpoint (pid {ep['pid']}, {ep['url']}) is running but did not"
                f" answer within {endpoint.PATIENCE_SECONDS:.0f}s; see {p.root / 'endpoint.log'}."
                " It was left alone: wait and retry, or `deploy sandbox down` (the sandbox's cloud"
                " is lost with it)")
        results.append(StepResult("aws endpoint", UNCHANGED, f"running at {ep['url']}"))
    else:
        started = endpoint.start(p.root / "endpoint.log")
        ep = state["endpoint"] = {"url": started.url, "pid": started.pid,
                                  "ca_bundle": str(started.ca_bundle)}
        _write_state(p, state)
        results.append(StepResult("aws endpoint", CHANGED, f"started moto at {started.url}"))

    mirror = work_dir / "plugins"
    had_mirror = (mirror / "registry.terraform.io").exists()
    ensure_provider_mirror(mirror)
    results.append(StepResult("aws provider", UNCHANGED if had_mirror else CHANGED,
                              f"3.39.0 in the offline mirror {mirror}"))

    if p.key.exists():
        results.append(StepResult("operator key", UNCHANGED, str(p.key)))
    else:
        p.key.parent.mkdir(parents=True, exist_ok=True)
        process.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deployer-sandbox",
                     "-f", str(p.key)], env=environ, masker=Masker())
        results.append(StepResult("operator key", CHANGED, f"generated {p.key}"))
    public_key = p.key.with_suffix(".pub").read_text().strip()

    image = machines.ensure_base_image(environ=environ)
    results.append(image.result)
    results.append(machines.ensure_inotify_instances())
    p.app_origin.mkdir(parents=True, exist_ok=True)  # bound into every machine: it must exist
    for host_dir in sorted(p.hosts.glob("*")) if p.hosts.is_dir() else []:
        sshd.SandboxHost(host_dir, host_dir.name).stop()  # an emulated host of an older sandbox
    fleet = machines_of(p, image.path, environ)
    # (what, machine, private IP, public address, login user, ports, the variable that moves it)
    hosts = [("edge host", edge_machine(address), f"{EDGE_PRIVATE_NET}{index}", address,
              LOGIN_USER, (), "DEPLOYER_SANDBOX_EDGE_ADDRESSES moves the demo's edge hosts")
             for index, address in enumerate(edge_addresses(environ), start=1)]
    hosts += [(f"chom {role} server", chom_machine(role), private_ip, address, CHOM_LOGIN_USER,
               CHOM_PORTS, "DEPLOYER_SANDBOX_CHOM_ADDRESSES moves CHOM's servers")
              for role, private_ip, address in zip(CHOM_ROLES, CHOM_PRIVATE_IPS,
                                                   chom_addresses(environ), strict=True)]
    booted = []
    for what, name, private_ip, address, login_user, ports, moves in hosts:
        try:
            started = fleet.start(name, private_ip, address, authorized_keys=public_key,
                                  login_user=login_user, ports=ports, binds=[p.app_origin],
                                  wait=False)
        except machines.MachineError as exc:
            raise SandboxError(f"{what} {address}: {exc}; {moves}") from exc
        if started.status == CHANGED:
            booted.append(name)
        results.append(StepResult(f"{what} {address}", started.status,
                                  f"machine {name}, private {private_ip}: {started.reason}"))
    for name in booted:  # they boot together; wait for them all once
        fleet.wait_until_ready(name)

    watcher = state.get("watcher")
    balancer_network = str(balancers.balancer_network(environ))
    if (watcher and is_alive(watcher["pid"], WATCHER_MARKER) and watcher.get("endpoint_pid") == ep["pid"]
            and watcher.get("image") == str(image.path) and watcher.get("balancers") == balancer_network):
        results.append(StepResult("instance emulation", UNCHANGED, f"watcher pid {watcher['pid']}"))
    else:
        if watcher:  # it watches an endpoint that is gone: it must not outlive it
            stop_pid(watcher["pid"], WATCHER_MARKER)
        proc = process.start_background(
            [sys.executable, "-m", WATCHER_MARKER, str(p.root), ep["url"], ep["ca_bundle"],
             str(ep["pid"]), str(image.path), balancer_network],
            env={**environ, **endpoint.SANDBOX_CREDENTIALS}, log_path=p.root / "instances.log")
        state["watcher"] = {"pid": proc.pid, "endpoint_pid": ep["pid"], "image": str(image.path),
                            "balancers": balancer_network}
        _write_state(p, state)
        results.append(StepResult("instance emulation", CHANGED,
                                  "watching EC2 instances: each running one becomes a machine;"
                                  f" load balancers forwarded on {balancer_network}"))
    results.extend(_instance_machines(fleet))

    env = environment(work_dir)
    p.env_file.write_text("".join(f"export {k}={v}\n" for k, v in env.items()))
    return tuple(results)


def down(work_dir: Path) -> tuple[StepResult, ...]:
    """Stop every process the sandbox ever started: the recorded ones by pid, every load
    balancer's forward, every machine (machines.stop_all: with its mounts, namespaces, bridges,
    routes and cgroups), then any other process whose command line names the sandbox's directory
    (an endpoint, watcher or forward of an earlier `up` whose record was lost). Files stay,
    machine disks too."""
    from deployer.sandbox import sshd

    p = paths(work_dir)
    state = _read_state(p)
    results = []
    watcher = state.pop("watcher", None)
    stray = [pid for pid in process.pids_naming(str(p.root)) if is_alive(pid, WATCHER_MARKER)]
    if watcher and stop_pid(watcher["pid"], WATCHER_MARKER):
        results.append(StepResult("instance emulation", CHANGED, "stopped"))
    for pid in stray:  # before the machines: a watcher left running would start them again
        if stop_pid(pid, WATCHER_MARKER):
            results.append(StepResult("instance emulation", CHANGED, f"stopped stray watcher {pid}"))
    results.extend(r for r in balancers_of(p).stop_all() if r.status != UNCHANGED)
    if (p.root / "machines.json").exists():
        results.extend(r for r in machines_of(p).stop_all() if r.status != UNCHANGED)
    for host_dir in sorted(p.hosts.glob("*")) if p.hosts.is_dir() else []:  # an older sandbox's
        host = sshd.SandboxHost(host_dir, host_dir.name)
        if host.stop():
            results.append(StepResult(f"host {host_dir.name}", CHANGED, "stopped sshd"))
    ep = state.pop("endpoint", None)
    if ep and stop_pid(ep["pid"], ENDPOINT_MARKER):
        results.append(StepResult("aws endpoint", CHANGED, f"stopped {ep['url']}"))
    for pid in process.pids_naming(str(p.root)):
        marker = next((m for m in (ENDPOINT_MARKER, WATCHER_MARKER, sshd.SSHD, balancers.FORWARDER_MODULE)
                       if is_alive(pid, m)), "")
        if marker and stop_pid(pid, marker):  # ours by its command line, not a user's `tail -f`
            results.append(StepResult("sandbox process", CHANGED, f"stopped stray {marker} {pid}"))
    _write_state(p, state)
    return tuple(results) or (StepResult("sandbox", UNCHANGED, "nothing was running"),)


def status(work_dir: Path) -> tuple[StepResult, ...]:
    """The endpoint, the watcher, every machine (name, addresses, state) and every load
    balancer's forward (name, loopback address:port -> targets)."""
    from deployer.sandbox import sshd

    p = paths(work_dir)
    state = _read_state(p)
    ep = state.get("endpoint")
    up_ = bool(ep) and is_alive(ep["pid"], ENDPOINT_MARKER) and endpoint.is_up(
        ep["url"], Path(ep["ca_bundle"]))
    results = [StepResult("aws endpoint", "running" if up_ else "stopped", ep["url"] if ep else "")]
    watcher = state.get("watcher")
    w_up = bool(watcher) and is_alive(watcher["pid"], WATCHER_MARKER)
    results.append(StepResult("instance emulation", "running" if w_up else "stopped", ""))
    results.extend(_machine_lines(machines_of(p)))
    results.extend(balancers_of(p).status())
    for host_dir in sorted(p.hosts.glob("*")) if p.hosts.is_dir() else []:  # an older sandbox's
        if sshd.SandboxHost(host_dir, host_dir.name).is_running():
            results.append(StepResult(f"sshd host {host_dir.name}", "running", "emulated (old)"))
    return tuple(results)


def _describe(machine) -> str:
    """`private 10.20.1.5, public 127.1.2.3 (22,8080); ssh ready`"""
    where = f"private {machine.private_ip}"
    if machine.public_address:
        where += f", public {machine.public_address}"
    else:
        where += ", no public address (ssh -J through a machine that has one)"
    return where + ("; ssh ready" if machine.ssh_ready else "")


def _machine_lines(fleet) -> list[StepResult]:
    """Every machine: name, addresses, state."""
    return [StepResult(f"machine {m.name}", m.status, _describe(m)) for m in fleet.status()]


def _instance_machines(fleet) -> list[StepResult]:
    """The instances' machines (the watcher's), as `up` lists them."""
    return [r for r in _machine_lines(fleet) if r.name.startswith("machine i-")]


class SandboxError(DeployerError):
    """The sandbox could not start."""
