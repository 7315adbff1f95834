"""Load balancers become loopback forwards; the instance watcher keeps them, as it keeps machines.

Every pass the watcher (deployer/sandbox/instances.py) reads from the endpoint every elbv2 load
balancer, its listeners, the target groups of their forward action and those groups' registered
targets with their health (`listeners()`), and `Balancers.reconcile()` keeps one forwarder
(`python -m deployer.sandbox.forwarder --balance`, deployer/sandbox/forwarder.py) per listener:

- Address: one per load balancer, on loopback, stable: derived from its ARN inside the balancers'
  network (BALANCER_NETWORK, 127.0.12.0/24, beside the edge hosts' 127.0.10.x and CHOM's
  127.0.11.x; DEPLOYER_SANDBOX_BALANCER_ADDRESSES=<CIDR in 127.0.0.0/8> moves it), the next
  free one when another balancer or an Elastic IP holds it, and kept in `balancers.json` for as
  long as the balancer lives. moto draws Elastic IPs from the whole of 127.0.0.0/8
  (moto.ec2.utils.random_ip), so no loopback range is outside moto's: like the edge hosts' and
  CHOM's fixed addresses, a balancer's shares a one-in-millions chance with each later Elastic
  IP, and a forward whose address and port already answer is not started (reported failed).
- Port: the listener's. Targets: the registered ones moto does not report `unused` (a stopped
  instance) or `draining`, whose instance runs (an `instance` target by its id, an `ip` target
  by its address inside the balancer's VPC), at the port they were registered with (the group's
  by default). Each connection goes to the next target in turn (round robin), dialled from
  inside the target's machine's own network namespace; one that does not answer at once (its
  machine stopped, or nothing listens) is skipped for the next.
- TCP passes through: the emulated balancer does not terminate TLS (an HTTPS listener's
  certificate is not used; what serves on the target speaks TLS itself) and runs no
  authenticate-cognito / authenticate-oidc action, so there is no Cognito login in front of the
  targets. Only the listener's default forward action is followed; listener rules are not.
- moto's DNS name for a balancer (NAME-1.REGION.elb.amazonaws.com) resolves nowhere:
  `address_of(dns_name)` (cloud.load_balancer_address) turns it into the loopback address.

`balancers.json` (beside machines.json) records every forward before its process starts:
{"balancers": {ARN: {"name", "dns_name", "address", "listeners": {PORT: {"pid", "protocol",
"targets_file", "targets": [{"instance", "address", "port", "netns"}]}}}}}; `stop_all()` stops
exactly those processes (and any balancing forwarder naming this directory).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from deployer import process
from deployer.errors import ConfigError, DeployerError
from deployer.process import is_alive, stop_pid
from deployer.results import CHANGED, FAILED, UNCHANGED, StepResult

BALANCER_NETWORK = "127.0.12.0/24"
NETWORK_VARIABLE = "DEPLOYER_SANDBOX_BALANCER_ADDRESSES"
FORWARDER_MODULE = "deployer.sandbox.forwarder"
NOT_ROUTED = ("unused", "draining")  # what an ALB sends no new connection to


class BalancerError(DeployerError):
    """A load balancer's forward could not be started."""


class Addressed(Protocol):
    """What listeners() needs of a running instance (instances.Instance is one)."""

    private_ip: str
    vpc: str


@dataclass(frozen=True)
class Target:
    instance: str
    private_ip: str
    port: int


@dataclass(frozen=True)
class Listener:
    balancer: str  # the load balancer's ARN
    name: str
    dns_name: str
    port: int
    protocol: str
    targets: tuple[Target, ...] = ()


RESOLVE_FILE = "resolve"  # HOST:PORT:ADDRESS a line, for DEPLOYER_RESOLVE_FILE


def balancer_network(environ: Mapping[str, str]) -> ipaddress.IPv4Network:
    """Where the balancers' addresses live; DEPLOYER_SANDBOX_BALANCER_ADDRESSES moves it.

    >>> balancer_network({})
    IPv4Network('127.0.12.0/24')
    >>> balancer_network({"DEPLOYER_SANDBOX_BALANCER_ADDRESSES": "127.0.31.0/28"})
    IPv4Network('127.0.31.0/28')
    """
    raw = environ.get(NETWORK_VARIABLE, "").strip() or BALANCER_NETWORK
    try:
        network = ipaddress.ip_network(raw)
    except ValueError as exc:
        raise ConfigError(f"{NETWORK_VARIABLE} is a network such as {BALANCER_NETWORK}, not {raw!r}"
                          ) from exc
    if not isinstance(network, ipaddress.IPv4Network) or not network.subnet_of(
            ipaddress.ip_network("127.0.0.0/8")) or network.prefixlen > 30:
        raise ConfigError(f"{NETWORK_VARIABLE} must be a loopback network (inside 127.0.0.0/8,"
                          f" /30 or larger), not {raw}")
    return network


def balancer_address(arn: str, network: ipaddress.IPv4Network, taken: Iterable[str] = ()) -> str:
    """The balancer's address: a host address of `network` chosen by its ARN's hash, or the next
    one not `taken`.

    >>> net = ipaddress.ip_network("127.0.12.0/30")
    >>> first = balancer_address("arn:lb/a", net)
    >>> first in ("127.0.12.1", "127.0.12.2"), balancer_address("arn:lb/a", net) == first
    (True, True)
    >>> balancer_address("arn:lb/a", net, taken=[first]) != first
    True
    """
    hosts = list(network.hosts())
    busy = set(taken)
    start = int(hashlib.sha256(arn.encode()).hexdigest()[:8], 16) % len(hosts)
    for offset in range(len(hosts)):
        candidate = str(hosts[(start + offset) % len(hosts)])
        if candidate not in busy:
            return candidate
    raise BalancerError(f"every address of {network} is taken: no address for the load balancer"
                      f" {arn}; {NETWORK_VARIABLE} names a larger network")


def forward_target_groups(actions: Sequence[Mapping]) -> list[str]:
    """The target groups a listener's default actions forward to (authenticate-* actions before
    the forward are not emulated; a redirect or fixed response forwards nowhere).

    >>> forward_target_groups([{"Type": "authenticate-cognito", "Order": 1},
    ...                        {"Type": "forward", "Order": 2, "TargetGroupArn": "tg-1"}])
    ['tg-1']
    >>> forward_target_groups([{"Type": "forward", "ForwardConfig": {"TargetGroups": [
    ...     {"TargetGroupArn": "tg-1"}, {"TargetGroupArn": "tg-2"}]}}])
    ['tg-1', 'tg-2']
    """
    for action in sorted(actions, key=lambda a: a.get("Order", 0)):
        if action.get("Type") != "forward":
            continue
        groups = [g["TargetGroupArn"] for g in action.get("ForwardConfig", {}).get("TargetGroups", [])]
        if action.get("TargetGroupArn") and action["TargetGroupArn"] not in groups:
            groups.insert(0, action["TargetGroupArn"])
        return groups
    return []


def listeners(elbv2, instances: Mapping[str, Addressed]) -> list[Listener]:
    """Every listener of every load balancer at the endpoint, with the running targets its
    forward action reaches. `instances`: the running instances by id."""
    found = []
    balancers = [lb for page in elbv2.get_paginator("describe_load_balancers").paginate()
                 for lb in page["LoadBalancers"]]
    groups: dict[str, tuple[Target, ...]] = {}
    for lb in balancers:
        pages = elbv2.get_paginator("describe_listeners").paginate(LoadBalancerArn=lb["LoadBalancerArn"])
        for listener in (item for page in pages for item in page["Listeners"]):
            targets: list[Target] = []
            for group_arn in forward_target_groups(listener.get("DefaultActions", [])):
                if group_arn not in groups:
                    groups[group_arn] = _group_targets(elbv2, group_arn, lb.get("VpcId", ""), instances)
                targets += [t for t in groups[group_arn] if t not in targets]
            found.append(Listener(lb["LoadBalancerArn"], lb["LoadBalancerName"], lb["DNSName"],
                                  int(listener["Port"]), listener.get("Protocol", ""),
                                  tuple(targets)))
    return found


def _group_targets(elbv2, group_arn: str, vpc: str,
                   instances: Mapping[str, Addressed]) -> tuple[Target, ...]:
    group = elbv2.describe_target_groups(TargetGroupArns=[group_arn])["TargetGroups"][0]
    by_ip = {i.private_ip: iid for iid, i in instances.items() if not vpc or i.vpc == vpc}
    targets = []
    for health in elbv2.describe_target_health(TargetGroupArn=group_arn)["TargetHealthDescriptions"]:
        if health.get("TargetHealth", {}).get("State") in NOT_ROUTED:
            continue
        target_id = health["Target"]["Id"]
        iid = target_id if group.get("TargetType", "instance") == "instance" else by_ip.get(target_id)
        if iid not in instances:
            continue  # not running (or an address no instance has): nothing to dial
        port = int(health["Target"].get("Port") or group["Port"])
        targets.append(Target(iid, instances[iid].private_ip, port))
    return tuple(targets)


class Balancers:
    """The forwards of one sandbox directory; every method may run in a fresh process."""

    def __init__(self, directory: Path, *, network: ipaddress.IPv4Network | None = None,
                 netns_of: Callable[[str], Path] | None = None,
                 environ: Mapping[str, str] | None = None):
        self.directory = directory.resolve()
        self.network = network or ipaddress.ip_network(BALANCER_NETWORK)
        self.netns_of = netns_of
        self.environ = dict(environ if environ is not None else os.environ)

    @property
    def state_path(self) -> Path:
        return self.directory / "balancers.json"

    @property
    def forwards_dir(self) -> Path:
        return self.directory / "balancers"

    def targets_file(self, arn: str, name: str, port: int) -> Path:
        return self.forwards_dir / f"{name}-{hashlib.sha256(arn.encode()).hexdigest()[:8]}-{port}.json"

    # state

    @contextlib.contextmanager
    def _state(self) -> Iterator[dict]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / "balancers.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self._read()
                before = json.dumps(state, sort_keys=True)
                try:
                    yield state
                finally:
                    if json.dumps(state, sort_keys=True) != before:  # a quiet pass writes nothing
                        self._write(state)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict:
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            state = {}
        state.setdefault("balancers", {})
        return state

    def _write(self, state: dict) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.replace(self.state_path)
        # The balancers' DNS names do not resolve here: deploy's URL checks read this file
        # (DEPLOYER_RESOLVE_FILE, curl's --resolve entries) when they run.
        entries = sorted(f"{e['dns_name']}:{port}:{e['address']}" for e in state["balancers"].values()
                         for port in e.get("listeners", {}))
        tmp = self.resolve_path.with_suffix(".tmp")
        tmp.write_text("".join(f"{line}\n" for line in entries))
        tmp.replace(self.resolve_path)

    @property
    def resolve_path(self) -> Path:
        return self.directory / RESOLVE_FILE

    def recorded(self) -> dict[str, dict]:
        """balancers.json's balancers, unlocked: a snapshot to read."""
        return dict(self._read()["balancers"])

    def address_of(self, dns_name: str) -> str | None:
        """The loopback address of the balancer moto named `dns_name`; None if not forwarded.

        The DNS name is matched without case or a trailing dot, as DNS compares names."""
        wanted = dns_name.strip().rstrip(".").lower()
        for entry in self.recorded().values():
            if entry.get("dns_name", "").rstrip(".").lower() == wanted:
                return entry["address"]
        return None

    # reconcile

    def reconcile(self, wanted: Sequence[Listener], avoid: Iterable[str] = ()) -> list[StepResult]:
        """Make the forwards match `wanted` (listeners()): start a listener's forwarder, rewrite
        its targets, stop the forwards of listeners and balancers that are gone. A new balancer's
        address avoids the other balancers' and `avoid` (the Elastic IPs in use)."""
        by_balancer: dict[str, list[Listener]] = {}
        for listener in wanted:
            by_balancer.setdefault(listener.balancer, []).append(listener)
        if not by_balancer and not self.recorded():
            return []  # the common case, every second: no balancer, nothing to lock or write
        results = []
        with self._state() as state:
            balancers = state["balancers"]
            for arn in sorted(set(balancers) - set(by_balancer)):
                results += self._remove(state, arn, "load balancer deleted")
            for arn, its in sorted(by_balancer.items()):
                entry = balancers.get(arn)
                if entry is None:
                    taken = {e["address"] for e in balancers.values()} | set(avoid)
                    entry = balancers[arn] = {
                        "name": its[0].name, "dns_name": its[0].dns_name,
                        "address": balancer_address(arn, self.network, taken), "listeners": {}}
                    self._write(state)
                ports = {str(listener.port): listener for listener in its}
                for port in sorted(set(entry["listeners"]) - set(ports), key=int):
                    results.append(self._stop_listener(state, entry, port, "listener deleted"))
                for port in sorted(ports, key=int):
                    results.append(self._ensure_listener(state, arn, entry, ports[port]))
        return results

    def _ensure_listener(self, state: dict, arn: str, entry: dict, listener: Listener) -> StepResult:
        name = f"load balancer {entry['name']}"
        address, port = entry["address"], str(listener.port)
        record = entry["listeners"].setdefault(port, {})
        path = self.targets_file(arn, entry["name"], listener.port)
        targets = [{"instance": t.instance, "address": t.private_ip, "port": t.port,
                    "netns": str(self.netns_of(t.instance)) if self.netns_of else ""}
                   for t in listener.targets]
        changes = []
        if record.get("targets") != targets or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(targets, indent=2))
            tmp.replace(path)  # whole: the forwarder reads it for every connection
            changes.append(f"targets {_targets_text(targets)}")
        if (record.get("targets"), record.get("protocol")) != (targets, listener.protocol):
            record.update(targets=targets, targets_file=str(path), protocol=listener.protocol)
            self._write(state)  # recorded before a process uses it
        if not is_alive(record.get("pid", 0), str(path)):
            if _listens(address, listener.port):
                return StepResult(name, FAILED, f"{address}:{port} already answers, and not for this"
                                  f" sandbox; {NETWORK_VARIABLE} moves the balancers' addresses")
            try:
                record["pid"] = self._start_forwarder(address, listener.port, path)
            except BalancerError as exc:
                return StepResult(name, FAILED, str(exc))
            self._write(state)
            changes.insert(0, f"forwarding {address}:{port}")
        if not changes:
            return StepResult(name, UNCHANGED, f"{address}:{port} -> {_targets_text(targets)}")
        return StepResult(name, CHANGED, "; ".join(changes))

    def _start_forwarder(self, address: str, port: int, path: Path) -> int:
        log = path.with_suffix(".log")
        proc = process.start_background(
            [sys.executable, "-m", FORWARDER_MODULE, "--balance", address, str(port), str(path)],
            env=self.environ, log_path=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                last = log.read_text(errors="replace").splitlines()[-1:]
                raise BalancerError(f"the forwarder for {address}:{port} exited: {last}")
            if _listens(address, port):
                return proc.pid
            time.sleep(0.02)
        stop_pid(proc.pid, str(path))
        raise BalancerError(f"the forwarder for {address}:{port} did not listen within 10s")

    def _stop_listener(self, state: dict, entry: dict, port: str, why: str) -> StepResult:
        record = entry["listeners"].pop(port, {})
        stopped = bool(record.get("targets_file")) and stop_pid(record.get("pid", 0),
                                                                 record["targets_file"])
        if record.get("targets_file"):
            Path(record["targets_file"]).unlink(missing_ok=True)
        self._write(state)
        return StepResult(f"load balancer {entry['name']}", CHANGED if stopped else UNCHANGED,
                          f"{why}: {'stopped' if stopped else 'was not running'}"
                          f" {entry['address']}:{port}")

    def _remove(self, state: dict, arn: str, why: str) -> list[StepResult]:
        entry = state["balancers"][arn]
        results = [self._stop_listener(state, entry, port, why)
                   for port in sorted(entry["listeners"], key=int)]
        state["balancers"].pop(arn)
        self._write(state)
        return results

    def stop_all(self) -> tuple[StepResult, ...]:
        """Stop every forward: the recorded ones, then any balancing forwarder whose command line
        names this directory (one whose record was lost)."""
        results = []
        with self._state() as state:
            for arn in sorted(state["balancers"]):
                results += self._remove(state, arn, "sandbox down")
        for pid in process.pids_naming(str(self.forwards_dir)):
            if is_alive(pid, FORWARDER_MODULE) and stop_pid(pid, FORWARDER_MODULE):
                results.append(StepResult("load balancer", CHANGED, f"stopped stray forwarder {pid}"))
        return tuple(results)

    def status(self) -> list[StepResult]:
        """One line per listener: `load balancer NAME`, running or stopped, where it listens, the
        targets and the DNS name it stands for."""
        lines = []
        for _, entry in sorted(self.recorded().items(), key=lambda item: item[1]["name"]):
            for port, record in sorted(entry["listeners"].items(), key=lambda item: int(item[0])):
                running = bool(record.get("targets_file")) and is_alive(record.get("pid", 0),
                                                                        record["targets_file"])
                lines.append(StepResult(
                    f"load balancer {entry['name']}", "running" if running else "stopped",
                    f"{entry['address']}:{port} -> {_targets_text(record.get('targets', []))}"
                    f" ({record.get('protocol') or 'TCP'} passed through; {entry['dns_name']})"))
        return lines


def _targets_text(targets: Sequence[Mapping]) -> str:
    """`10.1.128.4:8102 (i-1), 10.1.192.4:8102 (i-2)`, or `no targets`."""
    return ", ".join(f"{t['address']}:{t['port']} ({t['instance']})" for t in targets) or "no targets"


def _listens(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False
