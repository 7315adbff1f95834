"""A stack's hosts, phase by phase: the roles of one phase in parallel (bounded), in batches
when the phase says so; one failing host does not stop the others of its batch, and the
summary lists every host with changed / unchanged / failed / skipped and why."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

from deployer import validate
from deployer.config import EnvConfig, Settings
from deployer.errors import ConfigError, DeployerError, HostError, Interrupted
from deployer.hosts import commands as cmd
from deployer.hosts import release as rel
from deployer.hosts.address import parse_host_list
from deployer.hosts.connection import Host, Remote, gateway_for
from deployer.logs import RunLog
from deployer.results import CHANGED, FAILED, SKIPPED, UNCHANGED, FleetResult, HostResult, Progress
from deployer.stacks import Phase, Stack

T = TypeVar("T")
H = TypeVar("H")  # what a pool works on: a host, or a (role view, host) pair


@dataclass(frozen=True)
class HostStatus:
    host: str
    current: str = ""
    fingerprint: str = ""
    lock: str = ""
    audit: tuple[str, ...] = ()
    error: str = ""


def resolve_hosts(stack: Stack, env: EnvConfig, outputs: Mapping[str, object]) -> list[Host]:
    """The stack's hosts: from a Terraform output, or from a list in the env file."""
    spec = stack.hosts
    if spec is None:
        raise ConfigError(f"stack {stack.name} declares no [hosts] ({stack.path})")
    if spec.source == "terraform":
        value = outputs.get(spec.output)
        user = str(outputs.get(spec.user_output) or spec.user) if spec.user_output else spec.user
        addresses = value if isinstance(value, list) else [value] if value else []
        if not addresses:
            raise ConfigError(f"stack {stack.name}: the Terraform output {spec.output!r} is empty;"
                              f" apply the stack first (deploy {stack.name} {env.name} apply)")
        return [Host(user, str(a), spec.port) for a in addresses]
    hosts, problems = parse_host_list(env.values.get(spec.variable, ""), default_user=spec.user,
                                      default_port=spec.port)
    if problems:
        raise ConfigError([f"{env.path}: {spec.variable}: {p}" for p in problems])
    return hosts


def _remote(stack: Stack, env: EnvConfig, settings: Settings, host: Host, log: RunLog,
            accept_new: bool) -> Remote:
    assert stack.hosts is not None
    gateway = gateway_for(env.values.get(stack.hosts.gateway_variable, ""),
                          default_user=stack.hosts.user,
                          where=f"{env.path}: {stack.hosts.gateway_variable}")
    return Remote(host, known_hosts=settings.work_dir / "known_hosts" / env.name,
                  key_file=settings.ssh_key, accept_new=accept_new, log=log, gateway=gateway)


def _map(hosts: list[H], parallel: int, work: Callable[[H], T],
         failed: Callable[[H, DeployerError], T], cancel: rel.Cancel | None = None,
         ) -> tuple[T, ...]:
    """Run `work` per host on a bounded pool; an error on one host is that host's result.
    Ctrl-C sets `cancel`: hosts not started are skipped, running ones stop at their next step
    (their locks released, `current` untouched), then Interrupted is raised."""

    def guarded(host: H) -> T:
        try:
            return work(host)
        except DeployerError as exc:
            return failed(host, exc)

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(hosts)))) as pool:
        futures = [pool.submit(guarded, host) for host in hosts]
        try:
            return tuple(f.result() for f in futures)
        except KeyboardInterrupt:
            if cancel is not None:
                cancel.event.set()
            for future in futures:
                future.cancel()
            wait(futures)
            raise Interrupted("interrupted: hosts stopped at their next step; their deploy locks"
                              " were released and `current` was left where it was") from None


def _each(hosts: list[Host], parallel: int, work: Callable[[Host], HostResult],
          progress: Progress, cancel: rel.Cancel | None = None) -> FleetResult:
    def failed(host: Host, exc: DeployerError) -> HostResult:
        progress(f"[{host}] FAILED: {exc}")
        return HostResult(str(host), FAILED, str(exc))

    return FleetResult(_map(hosts, parallel, work, failed, cancel))


def role_hosts(stack: Stack, env: EnvConfig, outputs: Mapping[str, object],
               ) -> list[tuple[Stack, list[Host]]]:
    """Every role (as a one-role view of the stack) with its hosts, in phase order."""
    return [(view, resolve_hosts(view, env, outputs)) for view in stack.views()]


class _Tally:
    """Progress of a long phase: hosts done, failed and waiting, said as each host ends."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.lock = threading.Lock()
        self.name, self.total, self.done, self.failed = "", 0, 0, 0

    def start(self, name: str, total: int) -> None:
        self.name, self.total, self.done, self.failed = name, total, 0, 0

    def add(self, result: HostResult) -> None:
        with self.lock:
            self.done += 1
            self.failed += result.status == FAILED
            said = (f"phase {self.name}: {self.done}/{self.total} hosts done, {self.failed} failed,"
                    f" {self.total - self.done} waiting")
        if self.total > 1:
            self.progress(said)


def batch_sizes(count: int, phase: Phase) -> list[int]:
    """How a phase's `count` hosts go: the canary hosts alone first, then batches of `batch`
    hosts (a number, or a percentage of `count`, at least one), or all the rest at once.

    >>> batch_sizes(6, Phase("p", (), batch="2"))
    [2, 2, 2]
    >>> batch_sizes(10, Phase("p", (), batch="25%", canary=1))
    [1, 3, 3, 3]
    >>> batch_sizes(3, Phase("p", ()))
    [3]
    """
    sizes, left = [], count
    if phase.canary and left:
        sizes.append(min(phase.canary, left))
        left -= sizes[-1]
    if phase.batch.endswith("%"):
        size = max(1, math.ceil(count * int(phase.batch[:-1]) / 100))
    else:
        size = int(phase.batch) if phase.batch else left
    while left > 0:
        sizes.append(min(size, left))
        left -= sizes[-1]
    return sizes


def deploy(stack: Stack, env: EnvConfig, settings: Settings, *, log: RunLog, progress: Progress,
           accept_new_host_keys: bool = False, parallel: int | None = None,
           outputs: Mapping[str, object] | None = None) -> FleetResult:
    """Deploy every role, phase by phase (see release.deploy_host for one host's steps). A phase
    starts when the one before it stayed within its max_fail_percentage; a canary that fails,
    or a batch that takes the failures over it, stops the run, and every host not started is
    reported skipped. One commit and one release name for the whole run."""
    cancel, pin = rel.Cancel(), rel.Pin()
    roles = dict((view.role, (view, hosts)) for view, hosts in role_hosts(stack, env, outputs or {}))
    results: list[HostResult] = []
    stopped = ""
    tally = _Tally(progress)

    def one(target: tuple[Stack, Host]) -> HostResult:
        view, host = target
        cancel.check(host)
        remote = _remote(view, env, settings, host, log, accept_new_host_keys)
        try:
            result = rel.deploy_host(remote, view, env, settings, outputs=outputs or {},
                                     progress=progress, cancel=cancel, pin=pin,
                                     lead=host == roles[view.role][1][0])
        finally:
            remote.close()
        progress(f"[{host}] {result.status}: {result.reason}")
        tally.add(result)
        return result

    def failed(target: tuple[Stack, Host], exc: DeployerError) -> HostResult:
        progress(f"[{target[1]}] FAILED: {exc}")
        return HostResult(str(target[1]), FAILED, str(exc))

    for phase in stack.phases:
        targets = [(roles[r][0], h) for r in phase.roles for h in roles[r][1]]
        if stopped:
            results += [HostResult(str(h), SKIPPED, stopped) for _, h in targets]
            continue
        width = parallel or sum(roles[r][0].hosts.parallel for r in phase.roles)  # type: ignore[union-attr]
        tally.start(phase.name, len(targets))
        progress(f"phase {phase.name}: {', '.join(phase.roles)} on {len(targets)} host(s),"
                 f" {min(width, len(targets))} at a time")
        done, fails = 0, 0
        for number, size in enumerate(batch_sizes(len(targets), phase)):
            batch = targets[done:done + size]
            got = _map(batch, width, one, failed, cancel)
            results += got
            done += size
            fails += sum(r.status == FAILED for r in got)
            canary = number == 0 and phase.canary > 0
            over = fails * 100 > phase.max_fail_percentage * len(targets)
            if (canary and fails) or over:
                stopped = (f"not started: phase {phase.name} stopped after {fails} of"
                           f" {len(targets)} host(s) failed"
                           + (" (the canary)" if canary and fails else
                              f" (over its max_fail_percentage {phase.max_fail_percentage:g})"))
                progress(stopped.replace("not started: ", ""))
                results += [HostResult(str(h), SKIPPED, stopped) for _, h in targets[done:]]
                break
        if len(stack.phases) > 1 and not stopped:
            progress(f"phase {phase.name}: done")
    return FleetResult(tuple(results))


def preview(stack: Stack, env: EnvConfig, settings: Settings, *, log: RunLog, progress: Progress,
            outputs: Mapping[str, object], accept_new_host_keys: bool = False) -> FleetResult:
    """`plan`'s host phase: what a deploy would do on every host, found read-only. A host that
    cannot be reached is reported skipped with why; it fails nothing."""
    pin = rel.Pin()
    targets = [(view, h) for view, hosts in role_hosts(stack, env, outputs) for h in hosts]

    def one(target: tuple[Stack, Host]) -> HostResult:
        view, host = target
        remote = _remote(view, env, settings, host, log, accept_new_host_keys)
        try:
            return rel.preview_host(remote, view, env, settings, outputs=outputs, pin=pin)
        finally:
            remote.close()

    def unknown(target: tuple[Stack, Host], exc: DeployerError) -> HostResult:
        return HostResult(str(target[1]), SKIPPED, f"not previewed: {exc}")

    width = sum(v.hosts.parallel for v in stack.views() if v.hosts)
    return FleetResult(_map(targets, width, one, unknown))


def rollback(stack: Stack, env: EnvConfig, settings: Settings, hosts: list[Host], *,
             to: str | None, log: RunLog, progress: Progress,
             accept_new_host_keys: bool = False, outputs: Mapping[str, object] | None = None,
             ) -> FleetResult:
    """Switch every host back to the previous healthy release (or `to`): see
    release.rollback_host. A `to` that is not a release name stops before any host is contacted
    (ConfigError); one a host does not have stops that host under its lock, changing nothing."""
    app = stack.app
    assert app is not None and stack.hosts is not None
    check_release_name(to)

    def one(host: Host) -> HostResult:
        remote = _remote(stack, env, settings, host, log, accept_new_host_keys)
        try:
            result = rel.rollback_host(remote, stack, env, to=to, outputs=outputs or {},
                                       progress=progress)
        finally:
            remote.close()
        progress(f"[{host}] {result.status}: {result.reason}")
        return result

    return _each(hosts, stack.hosts.parallel, one, progress)


def unlock(stack: Stack, env: EnvConfig, settings: Settings, hosts: list[Host], *, log: RunLog,
           progress: Progress, confirm: Callable[[str, str], bool], parallel: int,
           accept_new_host_keys: bool = False) -> FleetResult:
    """Remove the deploy lock on each host after showing its holder: for a run that died where
    this machine cannot tell (a CI runner killed mid-deploy). Only the lock that was shown is
    removed; one that changed hands meanwhile is left alone."""

    def one(host: Host) -> HostResult:
        remote = _remote(stack, env, settings, host, log, accept_new_host_keys)
        try:
            remote.open()
            root, state = rel.probe(remote, stack)
            holder = state.get("lock", "").strip()
            if not holder:
                return HostResult(str(host), UNCHANGED, "no deploy lock")
            if not confirm(f"{host}: remove the deploy lock held by {holder}? Type 'yes'", "yes"):
                return HostResult(str(host), SKIPPED, f"kept the deploy lock held by {holder}")
            done = remote.run(cmd.break_lock(root, holder), timeout=30, what="unlock")
            if done.code == cmd.LOCK_MOVED:
                return HostResult(str(host), FAILED, "the lock changed hands meanwhile; left alone")
            if not done.ok:
                raise HostError(f"{host}: removing the lock failed: {log.masker.mask(done.last_line)}")
            remote.run(cmd.audit(root, f"{rel.who()} unlock: removed the lock held by {holder}"),
                       timeout=30, what="audit")
            return HostResult(str(host), CHANGED, f"removed the deploy lock held by {holder}")
        finally:
            remote.close()

    return _each(hosts, parallel, one, progress)


def pick_hosts(hosts: list[Host], wanted: str | None) -> list[Host]:
    """`--host H`: the hosts named `user@address[:port]` or `address`; all without it."""
    if wanted is None:
        return hosts
    found = [h for h in hosts if wanted in (str(h), h.address)]
    if not found:
        raise ConfigError(f"--host {wanted!r} is not a host of this stack"
                          f" ({', '.join(map(str, hosts))})")
    return found


def check_release_name(name: str | None) -> None:
    """`deploy rollback --to NAME`: NAME must be a release name before any host is contacted."""
    if name is not None and (problem := validate.release_name(name)):
        raise ConfigError(f"--to {name!r}: {problem}")


def status(stack: Stack, env: EnvConfig, settings: Settings, hosts: list[Host], *,
           log: RunLog, progress: Progress, accept_new_host_keys: bool = False,
           ) -> tuple[HostStatus, ...]:
    assert stack.hosts is not None

    def one(host: Host) -> HostStatus:
        remote = _remote(stack, env, settings, host, log, accept_new_host_keys)
        try:
            remote.open()
            root, state = rel.probe(remote, stack)
            audit = remote.run(cmd.audit_tail(root), timeout=30).stdout.strip().splitlines()
            return HostStatus(str(host), state.get("current", "").removeprefix("releases/"),
                              state.get("fingerprint", ""), state.get("lock", "").strip(),
                              tuple(audit))
        finally:
            remote.close()

    return _map(hosts, stack.hosts.parallel, one,
                lambda host, exc: HostStatus(str(host), error=str(exc)))


def logs(stack: Stack, env: EnvConfig, settings: Settings, hosts: list[Host], *,
         log: RunLog, progress: Progress, lines: int = 200) -> FleetResult:
    """Run the stack's log command on every host, its output streamed line by line."""
    app = stack.app
    assert app is not None and stack.hosts is not None
    if not app.log_command:
        raise ConfigError(f"stack {stack.name} declares no app.log_command ({stack.path})")

    def one(host: Host) -> HostResult:
        remote = _remote(stack, env, settings, host, log, False)
        try:
            remote.open()
            root = rel.app_root(stack, remote)
            done = remote.run(cmd.log_command(root, lines, app.log_command), timeout=120,
                              on_line=lambda line: progress(f"[{host}] {line}"))
            status = "unchanged" if done.ok else FAILED
            return HostResult(str(host), status, f"log command exit {done.code}")
        finally:
            remote.close()

    return _each(hosts, stack.hosts.parallel, one, progress)
