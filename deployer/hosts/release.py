"""One host's deploy, as probe → act → report.

    wait for the ready marker → probe (the ref's commit, current release, fingerprint, lock)
    → unchanged? stop → lock → new release dir (clone at the sha, or a copy of current for a
    config-only change) → upload changed files (0600 for secrets) → install script → service
    → health checks → switch `current` atomically → prune old releases → audit line → unlock

Each arrow is not a round trip: steps that need no answer in between share one command (the
probe resolves the ref; lock, listing and staging go together; so do the final switch, prune,
audit and unlock), and an http:// health check travels through the SSH connection itself, so
a poll starts no process on the host. A fleet of small hosts spends its time in the app, not
in the tool.

A failed health check leaves `current` where it was and restarts the previous release, so it
keeps serving. Config-only changes make a new release too (a copy of current with the changed
files), so `deploy rollback` can go back to the previous configuration.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import shlex
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployer import templates
from deployer.config import EnvConfig, Settings
from deployer.errors import HostError, Interrupted
from deployer.hosts import commands as cmd
from deployer.hosts.address import Host
from deployer.lock import is_stale
from deployer.results import (
    CHANGED,
    FAILED,
    PLANNED,
    REPAIRED,
    UNCHANGED,
    HostResult,
    Progress,
    StepResult,
)
from deployer.stacks import HealthCheck, Stack

if TYPE_CHECKING:  # the SSH libraries load when a host is reached, not for validation
    from deployer.hosts.connection import Remote, Result

SHA = re.compile(r"^[0-9a-f]{40}$")
READY_POLL = 2.0


class Cancel:
    """Set by the fleet on Ctrl-C; each host stops at its next step boundary, before `current`
    moves, and releases its lock on the way out."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def check(self, host: Host) -> None:
        if self.event.is_set():
            raise Interrupted(f"{host}: interrupted before the release was made current")


NEVER = Cancel()


class Pin:
    """The commit a fleet deploys: the first host to resolve the ref fixes it for all of them,
    so a push during the deploy cannot leave hosts on different commits. Hosts that start after
    it is fixed skip `git ls-remote` altogether."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sha = ""
        self.name = ""

    def fix(self, sha: str) -> str:
        """`sha` if nothing is fixed yet, else what was (the caller compares)."""
        with self._lock:
            self.sha = self.sha or sha
            return self.sha

    def release(self, sha: str) -> str:
        """The new release's name, the same on every host of the run, so that
        `deploy rollback --to NAME` means one release across the fleet."""
        with self._lock:
            self.name = self.name or release_name(sha, time.time())
            return self.name


@dataclass(frozen=True)
class Rendered:
    """What a host should have: the commit, the rendered files (path → content, secret) and
    the service unit, summarised by a fingerprint."""

    sha: str
    files: dict[str, tuple[bytes, bool]]
    unit: bytes
    fingerprint: str

    @property
    def manifest(self) -> dict[str, Any]:
        """Hashes only: what is on the host can be compared without reading secrets back."""
        return {"sha": self.sha, "fingerprint": self.fingerprint,
                "files": {p: hashlib.sha256(c).hexdigest() for p, (c, _) in self.files.items()}}


def context(stack: Stack, env: EnvConfig, host: Host, outputs: Mapping[str, object]) -> dict[str, Any]:
    """What templates see: every env-file value by its own name, plus the host and the run (and
    the app's root, where releases/, shared/ and current live)."""
    ctx = {**env.values, "host": {"user": host.user, "address": host.address, "port": host.port},
           "env_name": env.name, "stack_name": stack.name, "outputs": dict(outputs)}
    if stack.app is not None:
        ctx["app_root"] = stack.app.root
    return ctx


def render(stack: Stack, env: EnvConfig, project: Path, host: Host, sha: str,
           outputs: Mapping[str, object]) -> Rendered:
    assert stack.app is not None
    ctx = context(stack, env, host, outputs)
    files = {f.path: (templates.render_file(project / f.template, ctx, f.format).encode(), f.secret)
             for f in stack.app.files}
    unit = b""
    if stack.app.service is not None:
        unit = templates.render_file(project / stack.app.service.template, ctx).encode()
    digest = hashlib.sha256()
    digest.update(json.dumps({
        "sha": sha, "install": stack.app.install,
        "files": sorted((p, hashlib.sha256(c).hexdigest(), s) for p, (c, s) in files.items()),
        "unit": hashlib.sha256(unit).hexdigest(), "shared": list(stack.app.shared_paths),
    }, sort_keys=True).encode())
    return Rendered(sha, files, unit, digest.hexdigest()[:16])


def release_name(sha: str, now: float) -> str:
    """`<UTC time to the millisecond>-<short sha>`: names sort by age whoever deploys from
    whichever time zone, and two deploys within one second do not collide.

    >>> release_name("0123456789abcdef", 1795000000.25)
    '20261118110640250-0123456'
    """
    seconds, millis = divmod(round(now * 1000), 1000)
    return f"{time.strftime('%Y%m%d%H%M%S', time.gmtime(seconds))}{millis:03d}-{sha[:7]}"


def parse_kv(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def who() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()} pid={os.getpid()}"


def step_env(stack: Stack, env: EnvConfig, host: Host, root: str, release: str, sha: str,
             ) -> dict[str, str]:
    """What every script and step on a host learns of the run (never a secret: it is on the
    command line).

    >>> sorted(step_env(Stack("s", Path("s.toml"), role="web"), EnvConfig("qa", Path("e"), {},
    ...     frozenset()), Host("u", "h"), "/app", "r1", "abc"))
    ['DEPLOY_APP_ROOT', 'DEPLOY_ENV', 'DEPLOY_HOST', 'DEPLOY_RELEASE', 'DEPLOY_ROLE', 'DEPLOY_SHA']
    """
    return {"DEPLOY_RELEASE": release, "DEPLOY_APP_ROOT": root, "DEPLOY_ENV": env.name,
            "DEPLOY_SHA": sha, "DEPLOY_ROLE": stack.role or stack.name, "DEPLOY_HOST": host.address}


def app_root(stack: Stack, remote: Remote) -> str:
    assert stack.app is not None
    root = stack.app.root
    return root if root.startswith("/") else f"{remote.home}/{root}"


def probe(remote: Remote, stack: Stack, refs: str = "", ready_marker: str = "",
          ) -> tuple[str, dict[str, str]]:
    """The host's app root and what is there: current release, fingerprint, manifest, lock
    holder, whether systemd runs and `ready_marker` exists (`ready=yes`), and what `refs` (a
    `cmd.resolve_ref`) finds, in one round trip, which also learns the remote $HOME."""
    assert stack.app is not None
    state = parse_kv(remote.run(cmd.probe(stack.app.root, refs, ready_marker), timeout=90,
                                check=True, what="probe").stdout)
    remote.remember_home(state.get("home", ""))
    return app_root(stack, remote), state


def wait_ready(remote: Remote, marker: str, timeout: float, progress: Progress) -> None:
    deadline = time.monotonic() + timeout
    said = 0.0
    while not remote.run(cmd.ready_check(marker), timeout=30, what="ready check").ok:
        now = time.monotonic()
        if now > deadline:
            raise HostError(f"{remote.host}: not ready after {timeout:.0f}s (no ~/{marker}; is"
                            " the instance still booting? see its console output)")
        if now - said > 10:
            progress(f"[{remote.host}] waiting for ~/{marker} (host still booting)")
            said = now
        time.sleep(READY_POLL)


def refs_command(repo: str, ref: str) -> str:
    """What the probe runs to learn the commit `ref` names; nothing when it is a full sha."""
    return "" if SHA.match(ref) else cmd.resolve_ref(repo, ref)


def resolve_sha(host: Host, repo: str, ref: str, state: Mapping[str, str]) -> str:
    """The commit `ref` names, from what the probe's `git ls-remote` printed (`refs_exit`,
    and `refs`: its lines joined by `;`)."""
    if SHA.match(ref):
        return ref
    lines = [ln.split() for ln in state.get("refs", "").split(";") if ln.strip()]
    if state.get("refs_exit") != "0":
        tail = [" ".join(ln) for ln in lines if ln][-1:] or ["no output"]
        raise HostError(f"{host}: git ls-remote {repo} failed (exit {state.get('refs_exit', '?')}):"
                        f" {tail[0]}")
    found = [(sha, name) for sha, name, *_ in (ln + [""] for ln in lines) if SHA.match(sha)]
    shas = [sha for sha, name in found if name.endswith("^{}")] or [sha for sha, _ in found]
    if not shas:
        raise HostError(f"{host}: git ref {ref!r} is not in {repo}")
    return shas[0]


QUICK_ATTEMPTS = 3  # a host with nothing to deploy: is what runs healthy, or down?


def health(remote: Remote, checks: tuple[HealthCheck, ...], release: str, ctx: dict[str, Any],
           progress: Progress, *, quick: bool = False) -> str | None:
    """Run every check with retries until its deadline; the first that fails, or None.
    `quick`: at most QUICK_ATTEMPTS tries each (a running service answers at once)."""
    for check in checks:
        target = (templates.render_string(check.url, ctx, name=f"health {check.name}") if check.url
                  else cmd.health_command(release, check.command))
        deadline = time.monotonic() + check.deadline
        attempts = min(check.retries, QUICK_ATTEMPTS) if quick else check.retries
        for attempt in range(1, attempts + 1):
            if _check_once(remote, check, target, progress):
                progress(f"[{remote.host}] health check '{check.name}' passed")
                break
            if attempt == attempts or time.monotonic() + check.interval > deadline:
                return check.name
            time.sleep(check.interval)
    return None


def _check_once(remote: Remote, check: HealthCheck, target: str, progress: Progress) -> bool:
    """One try of a check, made on the host. An http:// URL is fetched through the SSH
    connection (the host's sshd connects; no process is started there); https://, or a host
    whose sshd refuses forwarding, runs curl (or python3) on the host instead."""
    from deployer.hosts.connection import ForwardingRefused

    if not check.url:
        return remote.run(target, timeout=30, what=f"health check {check.name}").ok
    if target.startswith("http://") and remote.forwarding:
        try:
            status = remote.http_status(target, timeout=5)
            return status is not None and status < 400
        except ForwardingRefused:
            remote.forwarding = False
            progress(f"[{remote.host}] sshd here refuses TCP forwarding: URL checks run curl"
                     " on the host instead")
    return remote.run(cmd.health_url(target), timeout=30, what=f"health check {check.name}").ok


def start_service(remote: Remote, stack: Stack, root: str, release: str, progress: Progress, *,
                  systemd: bool | None = None, unit: str | None = None, first: str = "") -> str:
    """Install and (re)start the stack's service; say how. `systemd` and `unit` save a round
    trip each when the caller knows them already; `first` is a command to run before, in the
    same round trip (switching `current`)."""
    app = stack.app
    assert app is not None and app.service is not None
    service = app.service
    unit_path = f"{release}/{cmd.META_DIR}/{service.name}.service"
    if systemd is None:
        systemd = remote.run(cmd.has_systemd(), timeout=30).ok
    if systemd:
        remote.run(cmd.then(first, cmd.install_unit(unit_path, service.name)), timeout=120,
                   check=True, what=f"systemctl restart {service.name}")
        return f"systemd unit {service.name} restarted"
    if service.fallback != "nohup":
        raise HostError(
            f"{remote.host}: no running systemd (/run/systemd/system is missing), so"
            f" {service.name}.service cannot be started; the unit is at {unit_path}. Declare"
            f" app.service.fallback = \"nohup\" in {stack.path} to run it without systemd")
    if unit is None:
        unit = remote.run(cmd.read_file(unit_path), timeout=30, check=True).stdout
    fields = _unit_fields(unit)
    if "ExecStart" not in fields:
        raise HostError(f"{remote.host}: {service.name}.service has no ExecStart")
    argv = exec_argv(fields["ExecStart"], remote.home)
    if isinstance(argv, str):
        raise HostError(f"{remote.host}: {service.name}.service: ExecStart {argv}, which the"
                        " nohup fallback cannot run")
    workdir = fields.get("WorkingDirectory", release).replace("%h", remote.home)
    env_files = [f.lstrip("-").replace("%h", remote.home)
                 for f in fields.get("EnvironmentFile", "").split()]
    remote.run(cmd.then(first, cmd.nohup_service(root, service.name, workdir, argv, env_files)),
               timeout=60, check=True, what=f"start {service.name} (nohup)")
    progress(f"[{remote.host}] no systemd on this host: started {service.name} under nohup"
             " (the stack's fallback supervisor), not as a systemd service")
    return f"{service.name} started under nohup (host has no systemd)"


def exec_argv(exec_start: str, home: str) -> list[str] | str:
    """A unit's ExecStart as argv, split as systemd splits it (quotes, no shell), `%h` being
    the home directory; or why it cannot be run without systemd (a `$VAR` systemd would
    expand, a `;` separating several commands, a prefix such as `-` or `@`, bad quoting).

    >>> exec_argv("/usr/bin/env python3 'my app.py'", "/root")
    ['/usr/bin/env', 'python3', 'my app.py']
    """
    try:
        argv = [word.replace("%h", home) for word in shlex.split(exec_start)]
    except ValueError as exc:
        return f"cannot be split ({exc})"
    if not argv:
        return "is empty"
    if argv[0] and argv[0][0] in "-@:+!":
        return f"starts with the systemd prefix {argv[0][:1]!r}"
    if any("$" in word for word in argv):
        return "uses $VARIABLE expansion"
    if ";" in argv:
        return "runs several commands (';')"
    return argv


def _unit_fields(unit: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in unit.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            fields[key.strip()] = value.strip()
    return fields


def deploy_host(remote: Remote, stack: Stack, env: EnvConfig, settings: Settings, *,
                outputs: Mapping[str, object], progress: Progress,
                cancel: Cancel = NEVER, pin: Pin | None = None, lead: bool = True) -> HostResult:
    """Make one host match the env file; see the module docstring for the steps. Round trips:
    probe, lock+stage, uploads (SFTP), install, switch+service, health, finish, plus one per
    lifecycle step the app declares. `lead`: this host runs the app's `once` steps."""
    app, hosts = stack.app, stack.hosts
    assert app is not None and hosts is not None
    host = remote.host
    say = lambda text: progress(f"[{host}] {text}")  # noqa: E731
    remote.open()
    repo, ref = env.values[app.repo_variable], env.values[app.ref_variable]
    pin = pin or Pin()
    pinned = pin.sha
    refs = "" if pinned else refs_command(repo, ref)
    root, state = probe(remote, stack, refs, hosts.ready_marker)
    if hosts.ready_marker and state.get("ready") != "yes":  # still booting: wait, then look again
        wait_ready(remote, hosts.ready_marker, hosts.ready_timeout, progress)
        root, state = probe(remote, stack, refs)
    resolved = pinned or resolve_sha(host, repo, ref, state)
    sha = pin.fix(resolved)
    if sha != resolved:
        say(f"{ref} now names {resolved[:7]} here, but the fleet deploys {sha[:7]}: staying with it")
    wanted = render(stack, env, settings.project, host, sha, outputs)
    if state.get("fingerprint") == wanted.fingerprint:
        return _check_unchanged(remote, stack, env, root, state, wanted, outputs, progress)
    name = pin.release(sha)
    release = f"{root}/releases/{name}"
    previous = state.get("current", "")
    plan = _plan_release(root, release, previous, state.get("manifest", ""), wanted, stack, repo)
    say(plan.says)
    info = lock_info(stack, env, "deploying", f"{ref} {sha[:7]}")
    begin = take_lock(remote, root, cmd.begin_release(root, info, plan.stage), say)
    if begin.code == cmd.LOCK_HELD:
        return lock_held(remote, stack, env, begin.stdout)
    locked = True
    steps: list[StepResult] = []
    try:
        if begin.code == cmd.STAGE_FAILED:
            raise HostError(f"{host}: {plan.what} failed: {remote.log.masker.mask(begin.last_line)}")
        steps.append(StepResult("release", CHANGED, release))
        for path in plan.upload:
            content, secret = wanted.files[path]
            remote.put(content, f"{release}/{path}", mode=0o600 if secret else 0o644)
        if plan.upload:
            steps.append(StepResult("files", CHANGED, ", ".join(plan.upload)))
        remote.put(json.dumps(wanted.manifest, indent=1).encode(),
                   f"{release}/{cmd.META_DIR}/manifest.json", mode=0o644)
        if app.service is not None:
            remote.put(wanted.unit, f"{release}/{cmd.META_DIR}/{app.service.name}.service",
                       mode=0o644)
        cancel.check(host)
        context_env = step_env(stack, env, remote.host, root, name, sha)
        ctx = context(stack, env, host, outputs)

        def fail(what: str) -> HostResult:
            """A step or check failed: audit, on_failure steps, the previous release back."""
            _audit(remote, root, ref, sha, wanted.fingerprint, f"failed: {what}")
            _steps(remote, stack, settings, "on_failure", release,
                   {**context_env, "DEPLOY_FAILED": what}, lead, say, steps, check=False)
            restored = _restore(remote, stack, env, root, previous, say)
            return HostResult(str(host), FAILED, f"{what} failed on {host}; release {name} not"
                              f" made current; {restored}", name, wanted.fingerprint, tuple(steps))

        if failed_step := _steps(remote, stack, settings, "before_deploy", release, context_env,
                                 lead, say, steps, stop=cancel.event):
            return fail(failed_step)
        say(f"running {app.install}")
        script = remote.run(cmd.run_script(release, app.install, context_env),
                            on_line=lambda line: say(f"  {line}"), what=app.install,
                            stop=cancel.event)
        if cancel.event.is_set():  # Ctrl-C stopped the install, which may have stopped the old
            _restore(remote, stack, env, root, previous, say)  # release: bring that back
            cancel.check(host)
        if not script.ok:
            return fail(f"{app.install} (exit {script.code})")
        steps.append(StepResult("install", CHANGED, f"ran {app.install}"))
        for point in ("build", "migrate"):
            if failed_step := _steps(remote, stack, settings, point, release, context_env, lead,
                                     say, steps, stop=cancel.event):
                return fail(failed_step)
        if cancel.event.is_set():
            _restore(remote, stack, env, root, previous, say)
            cancel.check(host)
        # The steps make the release ready (caches, permissions), then the checks test it.
        if failed_step := _steps(remote, stack, settings, "before_switch", release, context_env,
                                 lead, say, steps, stop=cancel.event):
            return fail(failed_step)
        if failed := health(remote, _checks(app, "before_switch"), release, ctx, progress):
            return fail(f"health check '{failed}' (before the switch)")
        if app.service is not None:
            # The unit runs from `current`: switch first, and switch back if the checks fail.
            steps.append(StepResult("service", CHANGED, start_service(
                remote, stack, root, release, progress, systemd=state.get("systemd") == "yes",
                unit=wanted.unit.decode(), first=cmd.switch_current(root, name))))
        elif app.steps_at("after_switch") or _checks(app, "after_switch"):
            remote.run(cmd.switch_current(root, name), timeout=30, check=True, what="switch current")
            steps.append(StepResult("current", CHANGED, f"switched to {name}"))
        if failed_step := _steps(remote, stack, settings, "after_switch", release, context_env,
                                 lead, say, steps, stop=cancel.event):
            return fail(failed_step)
        failed = health(remote, _checks(app, "", "after_switch"), release, ctx, progress)
        if failed is None and cancel.event.is_set():
            _restore(remote, stack, env, root, previous, say)
            cancel.check(host)
        if failed is not None:
            return fail(f"health check '{failed}'")
        doomed = releases_to_prune(f"{begin.stdout}\n{name} ok", app.keep_releases, name)
        finish = cmd.finish_release(root, release, name, wanted.fingerprint, doomed,
                                    _audit_line(ref, sha, wanted.fingerprint, "ok"))
        done = remote.run(finish, timeout=120, what="switch current")
        locked = False  # the finish released it, whatever else it did
        if not done.ok:
            raise HostError(f"{host}: switching current to {name} failed:"
                            f" {remote.log.masker.mask(done.last_line)}")
        steps.append(StepResult("current", CHANGED, f"now {name}"))
        what = (f"config only: {', '.join(plan.changed)}" if plan.changed is not None
                else f"new commit {sha[:7]}")
        return HostResult(str(host), CHANGED, f"{what}; reran {app.install}", name,
                          wanted.fingerprint, tuple(steps))
    finally:
        if locked:
            try:
                remote.run(cmd.release_lock(root), timeout=30, what="unlock")
            except HostError:
                pass  # the connection is gone; the next run sees the holder is dead and breaks it


def planned_steps(app: Any, change: str) -> list[str]:
    """The steps a deploy runs on a host, by name, for a `change` of "commit" (a clone),
    "config" (a copy of current with new files) or "none" (only the health checks).

    >>> from deployer.stacks import AppSpec
    >>> planned_steps(AppSpec("r", "f", "app"), "config")
    ['lock', 'copy', 'upload', 'install:install.sh', 'switch', 'prune', 'audit', 'unlock']
    """
    if change == "none":
        return ["health"] if app.health else []
    steps = ["lock", "copy" if change == "config" else "fetch"]
    steps += ["link_shared"] if app.shared_paths or app.shared_files else []
    steps += ["upload"]
    named = lambda point: [f"{point}:{s.name}" + (" (once)" if s.once else "")  # noqa: E731
                           for s in app.steps_at(point)]
    steps += named("before_deploy") + [f"install:{app.install}"] + named("build") + named("migrate")
    steps += named("before_switch")
    steps += ["health:before_switch"] if _checks(app, "before_switch") else []
    steps += ["switch"]
    steps += [f"restart:{app.service.name}"] if app.service is not None else []
    steps += named("after_switch")
    steps += ["health:after_switch"] if _checks(app, "", "after_switch") else []
    return steps + ["prune", "audit", "unlock"]


def preview_host(remote: Remote, stack: Stack, env: EnvConfig, settings: Settings, *,
                 outputs: Mapping[str, object], pin: Pin) -> HostResult:
    """What a deploy would do on this host, found read-only (one probe): the current release
    and commit, the target commit, the names of the files that would change (never their
    values), and the steps that would run."""
    app = stack.app
    assert app is not None
    remote.open()
    repo, ref = env.values[app.repo_variable], env.values[app.ref_variable]
    root, state = probe(remote, stack, "" if pin.sha else refs_command(repo, ref))
    sha = pin.fix(pin.sha or resolve_sha(remote.host, repo, ref, state))
    wanted = render(stack, env, settings.project, remote.host, sha, outputs)
    current = state.get("current", "").removeprefix("releases/")
    try:
        manifest = json.loads(state.get("manifest") or "{}")
    except ValueError:
        manifest = {}
    was = str(manifest.get("sha", ""))[:7] or "?"
    if state.get("fingerprint") == wanted.fingerprint:
        change, what = "none", "unchanged"
    else:
        change = "config" if manifest.get("sha") == sha else "commit"
        now = manifest.get("files", {}) if change == "config" else {}
        files = sorted(p for p, h in wanted.manifest["files"].items() if now.get(p) != h)
        what = (f"{'config only' if change == 'config' else 'new commit'};"
                f" files: {', '.join(files) or 'none'}")
    steps = planned_steps(app, change)
    reason = (f"{current or 'no release'} ({was if current else '-'}) -> {sha[:7]}; {what};"
              f" steps: {', '.join(steps) or 'none'}")
    return HostResult(str(remote.host), UNCHANGED if change == "none" else PLANNED, reason,
                      current, wanted.fingerprint)


def _checks(app: Any, *points: str) -> tuple[HealthCheck, ...]:
    return tuple(c for c in app.health if c.at in points)


def _steps(remote: Remote, stack: Stack, settings: Settings, point: str, release: str,
           env: dict[str, str], lead: bool, say: Callable[[str], None], done: list[StepResult],
           *, check: bool = True, stop: threading.Event | None = None) -> str:
    """Run the app's steps at `point`, in order; the first that fails (by name), or "". A `once`
    step runs on the lead host of the role only; a `local` one on this machine, in the project."""
    from deployer import process
    from deployer.errors import DeployerError

    app = stack.app
    assert app is not None
    for step in app.steps_at(point):
        if step.once and not lead:
            done.append(StepResult(step.name, UNCHANGED, "once: runs on the role's first host"))
            continue
        say(f"{point}: {step.name}{' (local)' if step.local else ''}")
        if step.local:
            try:
                process.run(["sh", "-c", step.run], env={**settings.environ, **env},
                            masker=remote.log.masker, cwd=settings.project, log=remote.log,
                            on_line=lambda line: say(f"  {line}"))
                ok = True
            except DeployerError:
                ok = False
        else:
            ok = remote.run(cmd.run_step(release, step.run, env), what=step.name,
                            on_line=lambda line: say(f"  {line}"), stop=stop).ok
        done.append(StepResult(step.name, CHANGED if ok else FAILED, f"{point} step"))
        if not ok and check:
            return f"{point} step '{step.name}'"
    return ""


def take_lock(remote: Remote, root: str, command: str, say: Callable[[str], None]) -> Result:
    """Run `command` (it starts with `cmd.acquire_lock`). A lock left by a process of this
    machine that no longer runs is broken, atomically, and the command tried once more."""
    begin = remote.run(command, timeout=600, what="lock")
    if begin.code == cmd.LOCK_HELD and is_stale(begin.stdout):
        say(f"breaking a stale deploy lock ({begin.stdout.strip()}): that process is gone")
        remote.run(cmd.break_lock(root, begin.stdout), timeout=30, what="break stale lock")
        begin = remote.run(command, timeout=600, what="lock")
    if begin.code not in (0, cmd.LOCK_HELD, cmd.STAGE_FAILED):
        raise HostError(f"{remote.host}: could not take the deploy lock:"
                        f" {remote.log.masker.mask(begin.last_line)}")
    return begin


def lock_held(remote: Remote, stack: Stack, env: EnvConfig, holder: str) -> HostResult:
    return HostResult(str(remote.host), FAILED,
                      f"deploy lock held by {holder.strip()}; if that run is gone:"
                      f" deploy unlock {stack.name} {env.name} --host {remote.host}", locked=True)


def _check_unchanged(remote: Remote, stack: Stack, env: EnvConfig, root: str, state: dict[str, str],
                     wanted: Rendered, outputs: Mapping[str, object], progress: Progress,
                     ) -> HostResult:
    """Nothing to deploy: still check that what runs is healthy (through the SSH connection,
    cheap), and restart the current release when it is not."""
    app = stack.app
    assert app is not None
    host = remote.host
    current = state.get("current", "").removeprefix("releases/")
    ctx = context(stack, env, host, outputs)
    failed = health(remote, app.health, f"{root}/releases/{current}", ctx, progress, quick=True)
    if failed is None:
        return HostResult(str(host), UNCHANGED, f"release {current} already current",
                          current, wanted.fingerprint)
    say = lambda text: progress(f"[{host}] {text}")  # noqa: E731
    say(f"release {current} is current but its health check '{failed}' fails: restarting it")
    begin = take_lock(remote, root, cmd.acquire_lock(root, lock_info(stack, env, "repairing",
                                                                       current)), say)
    if begin.code == cmd.LOCK_HELD:
        return lock_held(remote, stack, env, begin.stdout)
    try:
        restarted = _restart(remote, stack, env, root, current, systemd=state.get("systemd") == "yes")
        still = health(remote, app.health, f"{root}/releases/{current}", ctx, progress)
    finally:
        remote.run(cmd.release_lock(root), timeout=30, what="unlock")
    if still is not None:
        return HostResult(str(host), FAILED, f"release {current} is current but unhealthy:"
                          f" health check '{still}' still fails after a restart ({restarted})",
                          current, wanted.fingerprint)
    _audit(remote, root, "-", "-", wanted.fingerprint, f"repaired: restarted {current}")
    return HostResult(str(host), REPAIRED, f"release {current} was down (health check"
                      f" '{failed}'); restarted, healthy again", current, wanted.fingerprint)


def lock_info(stack: Stack, env: EnvConfig, doing: str, what: str) -> str:
    """Who holds a lock, since when, doing what: the text a held lock shows the next run."""
    return f"{who()} since {time.strftime('%Y-%m-%dT%H:%M:%S%z')} {doing} {stack.name}/{env.name} {what}"


def _restart(remote: Remote, stack: Stack, env: EnvConfig, root: str, name: str, *,
             systemd: bool | None = None, switch: bool = False) -> str:
    """(Switch `current` to release `name`, then) rerun its install script and (re)start the
    service, which runs from `current`. Returns how the service was started."""
    app = stack.app
    assert app is not None
    release = f"{root}/releases/{name}"
    first = cmd.switch_current(root, name) if switch else ""
    script = remote.run(cmd.then(first, cmd.run_script(release, app.install, step_env(
        stack, env, remote.host, root, name, name.rsplit("-", 1)[-1]))), what=f"restart {name}")
    if not script.ok:
        raise HostError(f"{remote.host}: {app.install} of {name} failed (exit {script.code})")
    if app.service is None:
        return f"reran {app.install}"
    return start_service(remote, stack, root, release, lambda _line: None, systemd=systemd)


def rollback_host(remote: Remote, stack: Stack, env: EnvConfig, *, to: str | None,
                  outputs: Mapping[str, object], progress: Progress) -> HostResult:
    """Switch the host back to the previous healthy release (or `to`): take the deploy lock,
    switch `current`, restart (the service runs from `current`), then the health checks; when
    they fail, switch back to the release it left and restart that. Failed releases are never
    chosen."""
    app = stack.app
    assert app is not None
    host = remote.host
    say = lambda text: progress(f"[{host}] {text}")  # noqa: E731
    remote.open()
    root, state = probe(remote, stack)
    current = state.get("current", "").removeprefix("releases/")
    info = lock_info(stack, env, "rolling back", to or "to the previous release")
    begin = take_lock(remote, root, cmd.begin_release(root, info, []), say)
    if begin.code == cmd.LOCK_HELD:
        return lock_held(remote, stack, env, begin.stdout)
    try:
        releases = dict(ln.split() for ln in begin.stdout.splitlines() if len(ln.split()) == 2)
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
            return HostResult(str(host), UNCHANGED, f"{target} is already current", target)
        systemd = state.get("systemd") == "yes"
        say(f"switching current {current} -> {target}")
        how = _restart(remote, stack, env, root, target, systemd=systemd, switch=True)
        failed = health(remote, app.health, f"{root}/releases/{target}",
                        context(stack, env, host, outputs), progress)
        if failed is not None:
            back = (_restart(remote, stack, env, root, current, systemd=systemd, switch=True)
                    if current else "nothing to go back to")
            _audit(remote, root, "-", "-", "-", f"failed: rollback {current} -> {target}:"
                   f" health check {failed}")
            raise HostError(f"{host}: health check '{failed}' failed for {target}; switched back"
                            f" to {current or 'nothing'} ({back})")
        _audit(remote, root, "-", "-", "-", f"ok: rollback {current} -> {target}")
        say(f"rolled back {current} -> {target} ({how})")
        return HostResult(str(host), CHANGED, f"rolled back from {current}", target,
                          steps=(StepResult("current", CHANGED, target),))
    finally:
        remote.run(cmd.release_lock(root), timeout=30, what="unlock")


@dataclass(frozen=True)
class ReleasePlan:
    """How the new release directory is built: `stage` commands (run under the lock), the files
    to upload after, and for a config-only change the changed paths (None for a new commit)."""

    stage: list[str]
    upload: list[str]
    changed: list[str] | None
    what: str
    says: str


def _plan_release(root: str, release: str, previous: str, manifest_json: str, wanted: Rendered,
                  stack: Stack, repo: str) -> ReleasePlan:
    """A config-only change (the current release has the same commit) copies current and
    uploads what changed; a new commit is cloned and gets every file."""
    app = stack.app
    assert app is not None
    try:
        manifest = json.loads(manifest_json) if previous and manifest_json.strip() else {}
    except ValueError:
        manifest = {}  # unreadable: treat as a new commit, which rebuilds everything
    new_hashes = wanted.manifest["files"]
    if manifest.get("sha") == wanted.sha:
        changed = sorted(p for p, h in new_hashes.items() if manifest.get("files", {}).get(p) != h)
        stage, upload, what = [cmd.copy_release(f"{root}/{previous}", release)], changed, "copy release"
        says = f"same commit {wanted.sha[:7]}; config changed: {', '.join(changed) or 'service unit'}"
        result: list[str] | None = changed
    else:
        stage, upload = [cmd.fetch_release(repo, wanted.sha, release)], sorted(wanted.files)
        what = "git clone"
        says, result = f"fetching {wanted.sha[:7]} into {release}", None
    if app.shared_paths or app.shared_files:
        stage.append(cmd.link_shared(root, release, app.shared_paths, app.shared_files))
    stage.append(cmd.make_dirs([os.path.dirname(f"{release}/{p}") for p in upload]
                               + [f"{release}/{cmd.META_DIR}"]))
    return ReleasePlan(stage, upload, result, what, says)


def _restore(remote: Remote, stack: Stack, env: EnvConfig, root: str, previous: str, say: Any,
             ) -> str:
    """After a failed release: `current` back on the previous release, restarted so it keeps
    serving."""
    app = stack.app
    assert app is not None
    if not previous:
        return "there was no previous release to keep serving"
    name = previous.removeprefix("releases/")
    try:
        # current may have moved (a service app, or after_switch steps and checks): put it back
        how = _restart(remote, stack, env, root, name, switch=True)
        state = "restarted"
    except HostError as exc:
        how, state = str(exc), "restart FAILED"
    say(f"rolled back: current stays {previous} ({state}: {how})")
    return f"current stays {name} ({state})"


def releases_to_prune(listing: str, keep: int, current: str) -> list[str]:
    """From `list_releases` output: every failed release and all but the `keep` newest healthy
    ones, never `current`."""
    rows = [ln.split() for ln in listing.splitlines() if len(ln.split()) == 2]
    ok = [n for n, s in rows if s == "ok"]
    failed = [n for n, s in rows if s != "ok" and n != current]
    return [n for n in ok[:-keep] if n != current] + failed if len(ok) > keep else failed


def _audit_line(ref: str, sha: str, fingerprint: str, result: str) -> str:
    return (f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {who()} ref={ref} sha={sha}"
            f" fingerprint={fingerprint} result={result}")


def _audit(remote: Remote, root: str, ref: str, sha: str, fingerprint: str, result: str) -> None:
    remote.run(cmd.audit(root, _audit_line(ref, sha, fingerprint, result)), timeout=30, what="audit")


