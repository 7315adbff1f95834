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
from deployer.results import CHANGED, FAILED, FleetResult, HostResult, Progress, StepResult
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
             accept_new_host_keys: bool = False) -> FleetResult:
    """Switch every host back to the previous healthy release (or `to`), restart and check it.
    A `to` that is not a release name stops before any host is contacted (ConfigError); one a
    host does not have stops that host before anything runs there but two read-only looks."""
    app = stack.app
    assert app is not None and stack.hosts is not None
    check_release_name(to)

    def one(host: Host) -> HostResult:
        remote = _remote(stack, env, settings, host, log, accept_new_host_keys)
        try:
            remote.open()
            root, state = rel.probe(remote, stack)
            current = state.get("current", "").removeprefix("releases/")
            listing = remote.run(cmd.list_releases(root), timeout=30, check=True).stdout
            releases = dict(ln.split() for ln in listing.splitlines() if len(ln.split()) == 2)
            healthy = [n for n, s in releases.items() if s == "ok"]
            if to is not None and to not in releases:
                raise HostError(f"{host}: release {to} does not exist in {root}/releases"
                                f" (releases there: {', '.join(releases) or 'none'})")
            if to is not None and to not in healthy:
                raise HostError(f"{host}: release {to} failed its health checks when it was"
                                f" deployed; healthy releases: {', '.join(healthy) or 'none'}")
            older = [n for n in healthy if n < current]
            target = to or (older[-1] if older else "")
            if not target:
                raise HostError(f"{host}: no healthy release before {current or 'nothing'}")
            if target == current:
                return HostResult(str(host), "unchanged", f"{target} is already current", target)
            release = f"{root}/releases/{target}"
            run = remote.run(cmd.run_script(release, app.install, {"DEPLOY_RELEASE": target,
                                                                  "DEPLOY_APP_ROOT": root}),
                             what=app.install, on_line=lambda line: progress(f"[{host}]   {line}"))
            if not run.ok:
                raise HostError(f"{host}: {app.install} of {target} failed (exit {run.code})")
            if app.service is not None:
                rel.start_service(remote, stack, root, release, progress)
            failed = rel.health(remote, app.health, release,
                                rel.context(stack, env, host, {}), progress)
            if failed:
                raise HostError(f"{host}: health check '{failed}' failed for {target}; current"
                                f" stays {current}")
            remote.run(cmd.switch_current(root, target), timeout=30, check=True)
            remote.run(cmd.audit(root, f"{rel.who()} rollback {current} -> {target} result=ok"),
                       timeout=30)
            progress(f"[{host}] rolled back {current} -> {target}")
            return HostResult(str(host), CHANGED, f"rolled back from {current}", target,
                              steps=(StepResult("current", CHANGED, target),))
        finally:
            remote.close()

    return _each(hosts, stack.hosts.parallel, one, progress)


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
