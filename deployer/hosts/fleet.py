"""A stack's hosts, phase by phase: the roles of one phase in parallel (bounded), in batches
when the phase says so; one failing host does not stop the others of its batch, and the
summary lists every host with changed / unchanged / failed / skipped and why."""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from deployer import validate
from deployer.config import EnvConfig, Settings
from deployer.errors import ConfigError, DeployerError, HostError, Interrupted
from deployer.hosts import commands as cmd
from deployer.hosts import provision
from deployer.hosts import release as rel
from deployer.hosts.address import Host, gateway_for, parse_host_list
from deployer.logs import RunLog
from deployer.results import (
    CHANGED,
    FAILED,
    OK,
    SKIPPED,
    UNCHANGED,
    FleetResult,
    HostResult,
    Progress,
    StepResult,
)
from deployer.stacks import Phase, Stack

if TYPE_CHECKING:  # the SSH libraries load when a host is reached, not for validation
    from deployer.hosts.connection import Remote

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
    markers: tuple[str, ...] = ()  # "NAME: first line", or "NAME: missing"


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


def with_gateway(view: Stack, env: EnvConfig, outputs: Mapping[str, object]) -> Stack:
    """The role's view with its jump host resolved: from the env file (gateway_variable) or
    from the Terraform output that names it (gateway_output: a jump server the stack makes)."""
    spec = view.hosts
    if spec is None:
        return view
    if spec.gateway_output:
        text = str(outputs.get(spec.gateway_output) or "")
        if not text:
            raise ConfigError(f"stack {view.name}: the Terraform output {spec.gateway_output!r}"
                              f" (the jump host of role {view.role}) is empty; apply the stack"
                              f" first (deploy {view.name} {env.name} apply)")
    else:
        text = env.values.get(spec.gateway_variable, "") if spec.gateway_variable else ""
    return dataclasses.replace(view, hosts=dataclasses.replace(spec, gateway=text))


def first_hops(targets: list[tuple[Stack, list[Host]]]) -> list[str]:
    """The addresses this machine itself connects to: each role's jump host when it has one,
    else its hosts."""
    found: list[str] = []
    for view, hosts in targets:
        gateway = view.hosts.gateway if view.hosts else ""
        if gateway:
            assert view.hosts is not None
            jump = gateway_for(gateway, default_user=view.hosts.user, where=f"role {view.role}")
            found += [jump.address] if jump else []
        else:
            found += [h.address for h in hosts]
    return found


def remote_for(stack: Stack, env: EnvConfig, settings: Settings, host: Host, log: RunLog,
               accept_new: bool) -> Remote:
    assert stack.hosts is not None
    spec = stack.hosts
    where = (f"output {spec.gateway_output}" if spec.gateway_output
             else f"{env.path}: {spec.gateway_variable}")
    gateway = gateway_for(spec.gateway or env.values.get(spec.gateway_variable, ""),
                          default_user=spec.user, where=where)
    from deployer.hosts.connection import Remote

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


def role_hosts(stack: Stack, env: EnvConfig, outputs: Mapping[str, object], *,
               login: str = "deploy") -> list[tuple[Stack, list[Host]]]:
    """Every role (as a one-role view of the stack) with its hosts, in phase order. A stack with
    [users] logs in as its deploy user, or with login="bootstrap" as the bootstrap user (the
    login a bare server has: pre-flight checks, and creating the deploy user)."""
    found = [(with_gateway(view, env, outputs), resolve_hosts(view, env, outputs))
             for view in stack.views()]
    if stack.users is None:
        return found
    spec = stack.users
    user = env.values[spec.bootstrap_user_variable if login == "bootstrap" else spec.deploy_user_variable]
    return [(view, [dataclasses.replace(h, user=user) for h in hosts]) for view, hosts in found]


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
        remote = remote_for(view, env, settings, host, log, accept_new_host_keys)
        said: list[str] = []

        def say(text: str) -> None:
            said.append(f"{time.strftime('%H:%M:%S')} {text}")
            progress(text)

        try:
            result = _deploy_one(remote, view, env, settings, outputs or {}, say, cancel, pin,
                                 lead=host == roles[view.role][1][0])
            if stack.deploy_log:
                said.append(f"{time.strftime('%H:%M:%S')} [{host}] {result.status}: {result.reason}")
                _write_deploy_log(remote, stack.deploy_log, said)
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


def _deploy_one(remote: Remote, view: Stack, env: EnvConfig, settings: Settings,
                outputs: Mapping[str, object], say: Progress, cancel: rel.Cancel, pin: rel.Pin, *,
                lead: bool) -> HostResult:
    """One host of a role: its provisioning (when the role has one), then its app's release."""
    role = view.role_of(view.role) if view.role else None
    done: list = []
    if role is not None and role.provision is not None:
        remote.open()
        ctx = provisioning_context(view, env, remote.host, outputs)
        wanted = provision.render(role.provision, settings.project, ctx, remote.host.user)
        done = provision.ensure_provisioned(remote, wanted)
        for step in done:
            if step.status == CHANGED:
                say(f"[{remote.host}] {step.name}: {step.reason}")
        cancel.check(remote.host)
    changed = [s for s in done if s.status == CHANGED]
    summary = (f"provisioned: {len(changed)} of {len(done)} item(s) changed" if changed
               else f"provisioning: all {len(done)} item(s) already present" if done else "")
    if view.app is None:
        return HostResult(str(remote.host), CHANGED if changed else UNCHANGED, summary,
                          steps=tuple(done))
    result = rel.deploy_host(remote, view, env, settings, outputs=outputs, progress=say,
                             cancel=cancel, pin=pin, lead=lead)
    if not done:
        return result
    status = CHANGED if changed and result.status == UNCHANGED else result.status
    return dataclasses.replace(result, status=status, reason=f"{summary}; {result.reason}",
                               steps=(*done, *result.steps))


def provisioning_context(view: Stack, env: EnvConfig, host: Host,
                         outputs: Mapping[str, object]) -> dict[str, object]:
    """What provisioning templates see: the release templates' context, plus `deploy_user`
    (the login)."""
    return {**rel.context(view, env, host, outputs), "deploy_user": host.user}


def _write_deploy_log(remote: Remote, directory: str, lines: list[str]) -> None:
    """The host keeps its own record of this deploy: `<directory>/deployment-<UTC>.log`, the
    run's lines for it (masked like every line deployer writes)."""
    name = f"deployment-{time.strftime('%Y%m%d_%H%M%S', time.gmtime())}.log"
    text = remote.log.masker.mask("\n".join(lines) + "\n").encode()
    try:
        sudo = provision.sudo_for(remote)
        remote.run(cmd.dir_command(directory, "0750", remote.host.user, sudo), timeout=30,
                   check=True, what="deploy log directory")
        tmp = f"{remote.home}/.deploy-log-upload"
        remote.put([(tmp, text, 0o600)])
        remote.run(cmd.install_file_command(tmp, f"{directory}/{name}", "0640", remote.host.user,
                                            sudo), timeout=30, check=True, what="deploy log")
    except HostError as exc:  # the deploy itself is done: its record failing is said, not fatal
        remote.log.write(f"[{remote.host}] could not write the deployment log: {exc}")


def prepare_users(stack: Stack, env: EnvConfig, settings: Settings, *, log: RunLog,
                  progress: Progress, public_key: str, accept_new_host_keys: bool = False,
                  ) -> tuple[HostResult, ...]:
    """Existing servers, through their bootstrap login: the deploy user with sudo and the
    operator's key on every host; then, per `trust`, a key made on each `from` host, authorized
    on the `to` hosts, and SSH between them tried without a password."""
    assert stack.users is not None
    spec = stack.users
    user = env.values[spec.deploy_user_variable]
    boot = role_hosts(stack, env, {}, login="bootstrap")
    targets = [(view, h) for view, hosts in boot for h in hosts]
    width = sum(v.hosts.parallel for v, _ in boot if v.hosts)

    def one(target: tuple[Stack, Host]) -> HostResult:
        view, host = target
        remote = remote_for(view, env, settings, host, log, accept_new_host_keys)
        try:
            remote.open()
            steps = provision.ensure_user(remote, user, public_key)
        finally:
            remote.close()
        changed = [s.reason for s in steps if s.status == CHANGED]
        reason = (f"deploy user {user}: {'; '.join(changed)}" if changed
                  else f"deploy user {user} exists, with sudo and the operator's key")
        progress(f"[{host}] {reason}")
        return HostResult(str(host), CHANGED if changed else UNCHANGED, reason, steps=tuple(steps))

    def failed(target: tuple[Stack, Host], exc: DeployerError) -> HostResult:
        progress(f"[{target[1]}] FAILED: {exc}")
        return HostResult(str(target[1]), FAILED, str(exc))

    progress(f"users: deploy user {user} on {len(targets)} host(s), through the bootstrap login")
    results = list(_map(targets, width, one, failed))
    if any(r.status == FAILED for r in results) or not spec.trust:
        return tuple(results)
    deploy_hosts = dict((v.role, (v, hs)) for v, hs in role_hosts(stack, env, {}))
    for source, target, variable in spec.trust:
        address = env.values[variable]
        for host in deploy_hosts[source][1]:
            view = deploy_hosts[source][0]
            remote = remote_for(view, env, settings, host, log, accept_new_host_keys)
            try:
                remote.open()
                key, made = provision.host_key(remote, user)
                steps = [made]
                for other in deploy_hosts[target][1]:
                    far = remote_for(deploy_hosts[target][0], env, settings, other, log,
                                  accept_new_host_keys)
                    try:
                        far.open()
                        added = provision.ensure_user(far, user, key)[-1]
                    finally:
                        far.close()
                    steps.append(StepResult(f"trust {source}→{target}", added.status,
                                            f"{host.address}'s key on {other.address}:"
                                            f" {'added' if added.status == CHANGED else 'present'}"))
                steps.append(provision.check_trust(remote, address, target))
            except DeployerError as exc:
                progress(f"[{host}] FAILED: {exc}")
                results.append(HostResult(str(host), FAILED, f"trust {source}→{target}: {exc}"))
                continue
            finally:
                remote.close()
            changed = any(s.status == CHANGED for s in steps)
            reason = f"SSH {source}→{target} ({address}) works without a password" + (
                ": key made and authorized" if changed else "")
            progress(f"[{host}] {reason}")
            results.append(HostResult(str(host), CHANGED if changed else UNCHANGED, reason,
                                      steps=tuple(steps)))
    return tuple(results)


def verify_services(stack: Stack, env: EnvConfig, settings: Settings, *, log: RunLog,
                    accept_new_host_keys: bool = False,
                    outputs: Mapping[str, object] | None = None) -> tuple[StepResult, ...]:
    """The end of an apply: per host, each unit its role lists in `services` is active (one
    round trip per host)."""
    checks: list[StepResult] = []
    for view, hosts in role_hosts(stack, env, outputs or {}):
        units = view.role_of(view.role).services if view.role else ()
        for host in hosts if units else []:
            remote = remote_for(view, env, settings, host, log, accept_new_host_keys)
            try:
                remote.open()
                states = remote.run(cmd.unit_states(list(units)), timeout=60,
                                    what="services").stdout.split()
            except DeployerError as exc:
                checks.append(StepResult(f"services on {host}", FAILED, str(exc)))
                continue
            finally:
                remote.close()
            states += ["unknown"] * (len(units) - len(states))
            down = [f"{u} {s}" for u, s in zip(units, states[:len(units)], strict=True)
                    if s != "active"]
            checks.append(StepResult(f"services on {host}", FAILED if down else OK,
                                     f"not active: {', '.join(down)}" if down
                                     else f"{len(units)} active: {', '.join(units)}"))
    return tuple(checks)


def preview(stack: Stack, env: EnvConfig, settings: Settings, *, log: RunLog, progress: Progress,
            outputs: Mapping[str, object], accept_new_host_keys: bool = False) -> FleetResult:
    """`plan`'s host phase: what a deploy would do on every host, found read-only. A host that
    cannot be reached is reported skipped with why; it fails nothing."""
    pin = rel.Pin()
    targets = [(view, h) for view, hosts in role_hosts(stack, env, outputs) for h in hosts]

    def one(target: tuple[Stack, Host]) -> HostResult:
        view, host = target
        if view.app is None:
            return HostResult(str(host), SKIPPED, "provisioning only: checked item by item at apply")
        remote = remote_for(view, env, settings, host, log, accept_new_host_keys)
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
        remote = remote_for(stack, env, settings, host, log, accept_new_host_keys)
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
        remote = remote_for(stack, env, settings, host, log, accept_new_host_keys)
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
        if stack.app is None:
            return HostStatus(str(host), audit=("provisioning only: this role has no releases",))
        remote = remote_for(stack, env, settings, host, log, accept_new_host_keys)
        try:
            remote.open()
            root, state = rel.probe(remote, stack)
            audit = remote.run(cmd.audit_tail(root), timeout=30).stdout.strip().splitlines()
            markers = ()
            if stack.app.markers:
                said = remote.run(cmd.read_markers(list(stack.app.markers)), timeout=30).stdout
                markers = tuple(remote.log.masker.mask(line) for line in said.splitlines())
            return HostStatus(str(host), state.get("current", "").removeprefix("releases/"),
                              state.get("fingerprint", ""), state.get("lock", "").strip(),
                              tuple(audit), markers=markers)
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
        remote = remote_for(stack, env, settings, host, log, False)
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
