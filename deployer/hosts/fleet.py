"""All hosts of a stack, in parallel (bounded): one failing host does not stop the others, and
the summary lists every host with changed / unchanged / failed and why."""

from __future__ import annotations

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
from deployer.secrets import Masker
from deployer.stacks import Stack

T = TypeVar("T")


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


def _map(hosts: list[Host], parallel: int, work: Callable[[Host], T],
         failed: Callable[[Host, DeployerError], T], cancel: rel.Cancel | None = None,
         ) -> tuple[T, ...]:
    """Run `work` per host on a bounded pool; an error on one host is that host's result.
    Ctrl-C sets `cancel`: hosts not started are skipped, running ones stop at their next step
    (their locks released, `current` untouched), then Interrupted is raised."""

    def guarded(host: Host) -> T:
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


def deploy(stack: Stack, env: EnvConfig, settings: Settings, hosts: list[Host], *, masker: Masker,
           log: RunLog, progress: Progress, accept_new_host_keys: bool = False,
           parallel: int | None = None, outputs: Mapping[str, object] | None = None) -> FleetResult:
    """Deploy the app to every host; see release.deploy_host for one host's steps."""
    assert stack.hosts is not None
    progress(f"deploying {stack.name}/{env.name} to {len(hosts)} host(s),"
             f" {parallel or stack.hosts.parallel} at a time")

    cancel, pin = rel.Cancel(), rel.Pin()

    def one(host: Host) -> HostResult:
        cancel.check(host)
        remote = _remote(stack, env, settings, host, log, accept_new_host_keys)
        try:
            result = rel.deploy_host(remote, stack, env, settings, outputs=outputs or {},
                                     progress=progress, cancel=cancel, pin=pin)
        finally:
            remote.close()
        progress(f"[{host}] {result.status}: {result.reason}")
        return result

    return _each(hosts, parallel or stack.hosts.parallel, one, progress, cancel)


def rollback(stack: Stack, env: EnvConfig, settings: Settings, hosts: list[Host], *,
             to: str | None, masker: Masker, log: RunLog, progress: Progress,
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


def status(stack: Stack, env: EnvConfig, settings: Settings, hosts: list[Host], *, masker: Masker,
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


def logs(stack: Stack, env: EnvConfig, settings: Settings, hosts: list[Host], *, masker: Masker,
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
