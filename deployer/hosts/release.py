"""One host's deploy, as probe → plan → run → report.

The probe (one round trip) finds the current release, fingerprint, manifest and lock; the
planner (`planner.plan_host`, pure) turns that and what the host should have into named steps:

    lock → new release dir (clone at the sha, or a copy of current for a config-only change)
    → upload changed files (0600 for secrets) → lifecycle steps and the install script → checks
    → switch `current` and restart or reload the services → checks → prune → audit → unlock

and `_Run` executes them. Each arrow is not a round trip: steps that need no answer in between
share one command (`trips`: lock, listing and staging go together; so do the switch and the
services; so do prune, audit and unlock), and an http:// health check travels through the SSH
connection itself, so a poll starts no process on the host. A fleet of small hosts spends its
time in the app, not in the tool.

A failed step or check leaves `current` where it was (or switches it back) and restarts the
previous release, so it keeps serving (`planner.failure_tail`). Config-only changes make a new
release too (a copy of current with the changed files), so `deploy rollback` can go back to the
previous configuration.
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
from deployer.hosts import planner
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
from deployer.stacks import STEP_POINTS, HealthCheck, ServiceSpec, Stack, Step

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
    the release's own service units (name → content), summarised by a fingerprint."""

    sha: str
    files: dict[str, tuple[bytes, bool]]
    units: dict[str, bytes]
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
    services = stack.app.services
    units = {s.name: templates.render_file(project / s.template, ctx).encode()
             for s in services if s.template}
    summary = {
        "sha": sha, "install": stack.app.install,
        "files": sorted((p, hashlib.sha256(c).hexdigest(), s) for p, (c, s) in files.items()),
        "unit": hashlib.sha256(b"".join(units.values())).hexdigest(),
        "shared": list(stack.app.shared_paths),
    }
    if len(services) > 1 or any(s.on_change != "restart" or not s.template for s in services):
        summary["services"] = [[s.name, s.on_change, bool(s.template)] for s in services]
    digest = hashlib.sha256(json.dumps(summary, sort_keys=True).encode())
    return Rendered(sha, files, units, digest.hexdigest()[:16])


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


def start_services(remote: Remote, stack: Stack, root: str, release: str, progress: Progress, *,
                   systemd: bool | None = None, units: Mapping[str, str] | None = None,
                   first: str = "") -> str:
    """Install the release's units and restart or reload every service, in one round trip; say
    how. `systemd` and `units` (name → content) save a round trip each when the caller knows
    them already; `first` is a command to run before, in the same round trip (switching
    `current`). A host without systemd runs each unit with `fallback = "nohup"` under nohup."""
    app = stack.app
    assert app is not None and app.services
    paths = {s.name: f"{release}/{cmd.META_DIR}/{s.name}.service" for s in app.services if s.template}
    changes = [(s.on_change, s.name) for s in app.services]
    said = ", ".join(f"{s.name} {s.on_change}ed" for s in app.services)
    if systemd is None:
        systemd = remote.run(cmd.has_systemd(), timeout=30).ok
    if systemd:
        install = [(path, name) for name, path in paths.items()]
        done = remote.run(cmd.then(first, cmd.service_units(install, changes)), timeout=120,
                          what=f"systemctl ({', '.join(f'{c} {n}' for c, n in changes)})")
        if not done.ok:
            raise ServiceFailed(remote.host, ", ".join(n for _, n in changes),
                                f"systemctl, exit {done.code}: {remote.log.masker.mask(done.last_line)}")
        progress(f"[{remote.host}] systemd: {said}")
        return f"systemd: {said}"
    # Every service's command line first: a unit the fallback cannot run stops the host before
    # anything runs (before `first` switches current), not halfway through the services.
    launches = [_nohup_launch(remote, stack, service, release, paths, units) for service in app.services]
    started = []
    for service, (workdir, argv, env_files) in zip(app.services, launches, strict=True):
        done = remote.run(cmd.then(first, cmd.nohup_service(root, service.name, workdir, argv, env_files)),
                          timeout=60, what=f"start {service.name} (nohup)")
        if not done.ok:
            raise ServiceFailed(remote.host, service.name,
                                f"nohup, exit {done.code}: {remote.log.masker.mask(done.last_line)}")
        first = ""
        progress(f"[{remote.host}] no systemd on this host: started {service.name} under nohup"
                 " (the stack's fallback supervisor), not as a systemd service")
        started.append(service.name)
    return f"{', '.join(started)} started under nohup (host has no systemd)"


def _nohup_launch(remote: Remote, stack: Stack, service: ServiceSpec, release: str,
                  paths: Mapping[str, str], units: Mapping[str, str] | None,
                  ) -> tuple[str, list[str], list[str]]:
    """What the nohup fallback runs for `service`: working directory, argv and env files, read
    from its unit; or a HostError saying why it cannot run without systemd."""
    if service.fallback != "nohup":
        raise HostError(
            f"{remote.host}: no running systemd (/run/systemd/system is missing), so"
            f" {service.name}.service cannot be {service.on_change}ed. Declare fallback ="
            f" \"nohup\" for it in {stack.path} to run the release's own unit without systemd")
    unit = (units or {}).get(service.name)
    if unit is None:
        unit = remote.run(cmd.read_file(paths[service.name]), timeout=30, check=True).stdout
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
    return workdir, argv, env_files


class ServiceFailed(HostError):
    """A service did not start or reload: the command ran and failed (`detail` says how)."""

    def __init__(self, host: Host, names: str, detail: str) -> None:
        super().__init__(f"{host}: start of {names} failed ({detail})")
        self.names, self.detail = names, detail


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
    """Make one host match the env file: probe, plan (`planner.plan_host`), run the plan. Round
    trips: probe, lock+stage, uploads (SFTP), install, switch+services, health, finish, plus one
    per lifecycle step the app declares. `lead`: this host runs the app's `once` steps."""
    app, hosts = stack.app, stack.hosts
    assert app is not None and hosts is not None
    host = remote.host
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
        progress(f"[{host}] {ref} now names {resolved[:7]} here, but the fleet deploys {sha[:7]}:"
                 " staying with it")
    wanted = render(stack, env, settings.project, host, sha, outputs)
    found, manifest = found_on_host(state)
    plan = planner.plan_host(app, found, fingerprint=wanted.fingerprint, sha=sha, lead=lead)
    if plan.change == planner.NONE:
        return _check_unchanged(remote, stack, env, root, state, wanted, outputs, progress, plan)
    run = _Run(remote, stack, env, settings, progress=progress, cancel=cancel, root=root,
               name=pin.release(sha), wanted=wanted, found=found, manifest=manifest, outputs=outputs,
               ref=ref, repo=repo, systemd=state.get("systemd") == "yes")
    return run.execute(plan)


def found_on_host(state: Mapping[str, str]) -> tuple[planner.Found, dict[str, Any]]:
    """The planner's view of what `probe` found, and the current release's manifest."""
    current = state.get("current", "").removeprefix("releases/")
    try:
        manifest = json.loads(state.get("manifest") or "{}") if current else {}
    except ValueError:
        manifest = {}  # unreadable: treated as another commit, which rebuilds everything
    manifest = manifest if isinstance(manifest, dict) else {}
    lock = state.get("lock", "").strip()
    return planner.Found(current, state.get("fingerprint", "") if current else "",
                         str(manifest.get("sha", "")), lock, bool(lock) and is_stale(lock)), manifest


def trips(steps: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The plan's steps as round trips: the lock and the staging of the release directory go
    together (their outcomes are told apart by exit code), so do the switch and the services'
    restarts, and prune, audit and unlock; every other step is its own trip.

    >>> trips(("lock", "fetch", "upload", "install:i.sh", "switch", "restart:a", "prune", "audit", "unlock"))
    [('lock', 'fetch'), ('upload',), ('install:i.sh',), ('switch', 'restart:a'), ('prune', 'audit', 'unlock')]
    """
    joins = {"lock": ("fetch", "copy", "link_shared"), "switch": ("restart", "reload"),
             "prune": ("audit", "unlock")}
    out: list[tuple[str, ...]] = []
    for step in steps:
        kind = step.split(":", 1)[0]
        if out and kind in joins.get(out[-1][0].split(":", 1)[0], ()):
            out[-1] = (*out[-1], step)
        else:
            out.append((step,))
    return out


CANCELLED = "cancelled"  # a step handler's answer when Ctrl-C stopped the step


class _Run:
    """One execution of a host plan: each round trip (`trips`) by the handler of its first
    step, in order. A handler returns None when its steps succeeded, CANCELLED, or what failed;
    a failure or Ctrl-C runs the plan's failure tail (`planner.failure_tail`). An exception (a
    lost connection) runs nothing more over that connection but the unlock."""

    def __init__(self, remote: Remote, stack: Stack, env: EnvConfig, settings: Settings, *,
                 progress: Progress, cancel: Cancel, root: str, name: str, wanted: Rendered,
                 found: planner.Found, manifest: dict[str, Any], outputs: Mapping[str, object],
                 ref: str, repo: str, systemd: bool) -> None:
        assert stack.app is not None
        self.remote, self.stack, self.env, self.settings, self.app = remote, stack, env, settings, stack.app
        self.progress, self.cancel, self.root, self.name = progress, cancel, root, name
        self.wanted, self.found, self.outputs, self.ref, self.repo = wanted, found, outputs, ref, repo
        self.systemd, self.manifest = systemd, manifest
        self.host = remote.host
        self.release = f"{root}/releases/{name}"
        self.context_env = step_env(stack, env, remote.host, root, name, wanted.sha)
        self.ctx = context(stack, env, remote.host, outputs)
        self.locked = False
        self.listing = ""  # the releases, as `list_releases` printed them under the lock
        self.upload: list[str] = []
        self.done: list[StepResult] = []
        self.ran: list[str] = []  # the plan's steps as they run, for the run log

    def say(self, text: str) -> None:
        self.progress(f"[{self.host}] {text}")

    def execute(self, plan: planner.HostPlan) -> HostResult:
        self.plan = plan
        ran = ""
        handlers: dict[str, Callable[[tuple[str, ...]], str | HostResult | None]] = {
            "break_lock": self._break_lock, "lock": self._lock, "upload": self._upload,
            "install": self._install, "health": self._health, "switch": self._switch,
            "prune": self._finish, **{point: self._step for point in STEP_POINTS}}
        try:
            for trip in trips(plan.steps):
                if self.cancel.event.is_set():
                    return self._fail(ran, "", cancelled=True)
                outcome = handlers[trip[0].split(":", 1)[0]](trip)
                if isinstance(outcome, HostResult):
                    self.ran.append(trip[0])
                    return outcome
                self.ran.extend(trip)
                ran = trip[-1]
                if outcome is not None:
                    return self._fail(ran, outcome, cancelled=outcome == CANCELLED)
            what = (f"config only: {', '.join(self.upload)}" if plan.change == planner.CONFIG
                    else f"new commit {self.wanted.sha[:7]}")
            return HostResult(str(self.host), CHANGED, f"{what}; reran {self.app.install}", self.name,
                              self.wanted.fingerprint, tuple(self.done))
        finally:
            if self.locked:
                try:
                    self.remote.run(cmd.release_lock(self.root), timeout=30, what="unlock")
                except HostError:
                    pass  # the connection is gone; the next run sees the holder is dead and breaks it
            self.remote.log.write(f"[{self.host}] steps run: {', '.join(self.ran)}")

    def _fail(self, step: str, what: str, *, cancelled: bool) -> HostResult:
        """The failure tail of `step`, then the result (or, cancelled, Interrupted)."""
        if not step:  # Ctrl-C before anything ran
            self.cancel.check(self.host)
        restored = (f"current stays {self.found.current}" if self.found.current
                    else "there was no previous release to keep serving")
        for tail in planner.failure_tail(self.app, self.plan, step, cancelled=cancelled):
            self.ran.append(tail)
            kind, _, arg = tail.partition(":")
            if kind == "audit":
                _audit(self.remote, self.root, self.ref, self.wanted.sha, self.wanted.fingerprint,
                       "cancelled" if cancelled else f"failed: {what}")
            elif kind == "on_failure":
                self._run_step(self._spec("on_failure", arg), {**self.context_env, "DEPLOY_FAILED": what},
                               check=False)
            elif kind == "restore":
                restored = _restore(self.remote, self.stack, self.env, self.root, self.found.current,
                                    self.say, self.ctx, self.progress)
            elif kind == "unlock":
                self.remote.run(cmd.release_lock(self.root), timeout=30, what="unlock")
                self.locked = False
        if cancelled:
            self.cancel.check(self.host)
        if step in ("fetch", "copy", "link_shared"):
            raise HostError(f"{self.host}: {what}")
        return HostResult(str(self.host), FAILED, f"{what} failed on {self.host}; release {self.name}"
                          f" not made current; {restored}", self.name, self.wanted.fingerprint,
                          tuple(self.done))

    def _break_lock(self, trip: tuple[str, ...]) -> None:
        self.say(f"breaking a stale deploy lock ({self.found.lock}): that process is gone")
        self.remote.run(cmd.break_lock(self.root, self.found.lock), timeout=30, what="break stale lock")
        return None

    def _lock(self, trip: tuple[str, ...]) -> str | HostResult | None:
        """Lock, list the releases, build the release directory (a clone or a copy of current,
        the shared paths linked in), in one round trip."""
        app, release, previous = self.app, self.release, f"{self.root}/releases/{self.found.current}"
        stage = []
        if "copy" in trip:
            self.upload = sorted(p for p, h in self.wanted.manifest["files"].items()
                                 if self.manifest.get("files", {}).get(p) != h)
            stage.append(cmd.copy_release(previous, release))
            self.say(f"same commit {self.wanted.sha[:7]}; config changed:"
                     f" {', '.join(self.upload) or 'service unit'}")
        else:
            self.upload = sorted(self.wanted.files)
            stage.append(cmd.fetch_release(self.repo, self.wanted.sha, release))
            self.say(f"fetching {self.wanted.sha[:7]} into {release}")
        if "link_shared" in trip:
            stage.append(cmd.link_shared(self.root, release, app.shared_paths, app.shared_files))
        stage.append(cmd.make_dirs([os.path.dirname(f"{release}/{p}") for p in self.upload]
                                   + [f"{release}/{cmd.META_DIR}"]))
        info = lock_info(self.stack, self.env, "deploying", f"{self.ref} {self.wanted.sha[:7]}")
        begin = take_lock(self.remote, self.root, cmd.begin_release(self.root, info, stage), self.say)
        if begin.code == cmd.LOCK_HELD:
            return lock_held(self.remote, self.stack, self.env, begin.stdout)
        self.locked = True
        self.listing = begin.stdout
        if begin.code == cmd.STAGE_FAILED:
            return (f"{'copy release' if 'copy' in trip else 'git clone'} failed:"
                    f" {self.remote.log.masker.mask(begin.last_line)}")
        self.done.append(StepResult("release", CHANGED, release))
        return None

    def _upload(self, trip: tuple[str, ...]) -> None:
        files = []
        for path in self.upload:
            content, secret = self.wanted.files[path]
            files.append((f"{self.release}/{path}", content, 0o600 if secret else 0o644))
        files.append((f"{self.release}/{cmd.META_DIR}/manifest.json",
                      json.dumps(self.wanted.manifest, indent=1).encode(), 0o644))
        files += [(f"{self.release}/{cmd.META_DIR}/{unit_name}.service", unit, 0o644)
                  for unit_name, unit in self.wanted.units.items()]
        self.remote.put(files)
        if self.upload:
            self.done.append(StepResult("files", CHANGED, ", ".join(self.upload)))
        return None

    def _install(self, trip: tuple[str, ...]) -> str | None:
        install = self.app.install
        self.say(f"running {install}")
        script = self.remote.run(cmd.run_script(self.release, install, self.context_env),
                                 on_line=lambda line: self.say(f"  {line}"), what=install,
                                 stop=self.cancel.event)
        if self.cancel.event.is_set():  # Ctrl-C stopped the install (and maybe the old release)
            return CANCELLED
        if not script.ok:
            return f"{install} (exit {script.code})"
        self.done.append(StepResult("install", CHANGED, f"ran {install}"))
        return None

    def _spec(self, point: str, name: str) -> Step:
        return next(s for s in self.app.steps_at(point) if s.name == name)

    def _step(self, trip: tuple[str, ...]) -> str | None:
        point, _, name = trip[0].partition(":")
        ok = self._run_step(self._spec(point, name), self.context_env)
        if self.cancel.event.is_set():
            return CANCELLED
        return None if ok else f"{point} step '{name}'"

    def _run_step(self, step: Step, env: dict[str, str], *, check: bool = True) -> bool:
        """One of the app's steps: on the host in the release, or (`local`) here in the project."""
        from deployer import process
        from deployer.errors import DeployerError

        self.say(f"{step.at}: {step.name}{' (local)' if step.local else ''}")
        if step.local:
            try:
                process.run(["sh", "-c", step.run], env={**self.settings.environ, **env},
                            masker=self.remote.log.masker, cwd=self.settings.project,
                            log=self.remote.log, on_line=lambda line: self.say(f"  {line}"))
                ok = True
            except DeployerError:
                ok = False
        else:
            ok = self.remote.run(cmd.run_step(self.release, step.run, env), what=step.name,
                                 on_line=lambda line: self.say(f"  {line}"),
                                 stop=None if not check else self.cancel.event).ok
        self.done.append(StepResult(step.name, CHANGED if ok else FAILED, f"{step.at} step"))
        return ok

    def _health(self, trip: tuple[str, ...]) -> str | None:
        failed = health(self.remote, planner.checks_of(self.app, trip[0]), self.release, self.ctx,
                        self.progress)
        if failed is not None:
            return f"health check '{failed}'" + (" (before the switch)" if trip[0] == "health:before_switch"
                                                 else "")
        return CANCELLED if self.cancel.event.is_set() else None

    def _switch(self, trip: tuple[str, ...]) -> str | None:
        """`current` to the new release, and the services restarted or reloaded, in one round
        trip (the units run from `current`; a failure after this switches back). Right before
        the finish, the finish switches instead (one round trip fewer)."""
        switch = cmd.switch_current(self.root, self.name)
        if len(trip) > 1:
            try:
                how = start_services(self.remote, self.stack, self.root, self.release, self.progress,
                                     systemd=self.systemd, first=switch,
                                     units={n: u.decode() for n, u in self.wanted.units.items()})
            except ServiceFailed as exc:  # current has moved: the failure tail's restore moves it back
                return f"start of {exc.names} ({exc.detail})"
            self.done.append(StepResult("service", CHANGED, how))
        elif self.plan.steps[self.plan.steps.index("switch") + 1] != "prune":
            self.remote.run(switch, timeout=30, check=True, what="switch current")
            self.done.append(StepResult("current", CHANGED, f"switched to {self.name}"))
        return None

    def _finish(self, trip: tuple[str, ...]) -> None:
        """Mark the release healthy, make it current, prune, audit, unlock: one round trip."""
        doomed = releases_to_prune(f"{self.listing}\n{self.name} ok", self.app.keep_releases, self.name)
        fingerprint = self.wanted.fingerprint
        finish = cmd.finish_release(self.root, self.release, self.name, fingerprint, doomed,
                                    _audit_line(self.ref, self.wanted.sha, fingerprint, "ok"))
        done = self.remote.run(finish, timeout=120, what="switch current")
        self.locked = False  # the finish released it, whatever else it did
        if not done.ok:
            raise HostError(f"{self.host}: switching current to {self.name} failed:"
                            f" {self.remote.log.masker.mask(done.last_line)}")
        self.done.append(StepResult("current", CHANGED, f"now {self.name}"))
        return None


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
    found, manifest = found_on_host(state)
    plan = planner.plan_host(app, found, fingerprint=wanted.fingerprint, sha=sha)
    current, change = found.current, plan.change
    if change == planner.NONE:
        what = "unchanged"
    else:
        now = manifest.get("files", {}) if change == planner.CONFIG else {}
        files = sorted(p for p, h in wanted.manifest["files"].items() if now.get(p) != h)
        what = (f"{'config only' if change == planner.CONFIG else 'new commit'};"
                f" files: {', '.join(files) or 'none'}")
    once = {f"{s.at}:{s.name}" for s in app.steps if s.once}
    steps = [f"{step} (once)" if step in once else step for step in plan.steps]
    was = (found.sha[:7] or "?") if current else "-"
    reason = (f"{current or 'no release'} ({was}) -> {sha[:7]}; {what};"
              f" steps: {', '.join(steps) or 'none'}")
    return HostResult(str(remote.host), UNCHANGED if change == planner.NONE else PLANNED, reason,
                      current, wanted.fingerprint)


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
                     plan: planner.HostPlan) -> HostResult:
    """Nothing to deploy: still check that what runs is healthy (through the SSH connection,
    cheap), and when it is not, the plan's repair: restart the current release."""
    app = stack.app
    assert app is not None
    host = remote.host
    current = state.get("current", "").removeprefix("releases/")
    ctx = context(stack, env, host, outputs)
    failed = health(remote, app.health, f"{root}/releases/{current}", ctx, progress, quick=True)
    remote.log.write(f"[{host}] steps run: {', '.join(plan.steps + (plan.repair if failed else ()))}")
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
        _audit(remote, root, "-", "-", wanted.fingerprint, f"repaired: restarted {current}"
               if still is None else f"failed: restarted {current}, health check {still} still fails")
    finally:
        remote.run(cmd.release_lock(root), timeout=30, what="unlock")
    if still is not None:
        return HostResult(str(host), FAILED, f"release {current} is current but unhealthy:"
                          f" health check '{still}' still fails after a restart ({restarted})",
                          current, wanted.fingerprint)
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
    if not app.services:
        return f"reran {app.install}"
    return start_services(remote, stack, root, release, lambda _line: None, systemd=systemd)


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
    ran = ["lock"]
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
        # The plan's switch, install and services are one round trip, then the checks.
        plan = planner.plan_rollback(app, current)
        how = _restart(remote, stack, env, root, target, systemd=systemd, switch=True)
        failed = health(remote, app.health, f"{root}/releases/{target}",
                        context(stack, env, host, outputs), progress) if app.health else None
        ran = [s for s in plan.steps if s not in ("audit", "unlock")]
        if failed is not None:
            tail = planner.failure_tail(app, plan, "health")
            back = (_restart(remote, stack, env, root, current, systemd=systemd, switch=True)
                    if "restore" in tail else "nothing to go back to")
            _audit(remote, root, "-", "-", "-", f"failed: rollback {current} -> {target}:"
                   f" health check {failed}")
            ran += tail
            raise HostError(f"{host}: health check '{failed}' failed for {target}; switched back"
                            f" to {current or 'nothing'} ({back})")
        _audit(remote, root, "-", "-", "-", f"ok: rollback {current} -> {target}")
        ran = list(plan.steps)
        say(f"rolled back {current} -> {target} ({how})")
        return HostResult(str(host), CHANGED, f"rolled back from {current}", target,
                          steps=(StepResult("current", CHANGED, target),))
    finally:
        remote.run(cmd.release_lock(root), timeout=30, what="unlock")
        remote.log.write(f"[{host}] steps run: {', '.join(ran + ['unlock'] * (ran[-1] != 'unlock'))}")


def _restore(remote: Remote, stack: Stack, env: EnvConfig, root: str, previous: str, say: Any,
             ctx: dict[str, Any], progress: Progress) -> str:
    """After a failed release: `current` back on the previous release, restarted, and its
    serving checks run (every check but the before_switch ones, which test a release not yet
    current), so the run ends only once it answers again, or says that it does not."""
    app = stack.app
    assert app is not None
    if not previous:
        return "there was no previous release to keep serving"
    name = previous.removeprefix("releases/")
    try:
        # current may have moved (a service app, or after_switch steps and checks): put it back
        how = _restart(remote, stack, env, root, name, switch=True)
    except HostError as exc:
        say(f"rolled back: current stays {previous} (restart FAILED: {exc})")
        return f"current stays {name} (restart FAILED)"
    serving = tuple(c for c in app.health if c.at != "before_switch")
    failed = health(remote, serving, f"{root}/releases/{name}", ctx, progress) if serving else None
    state = f"restarted, health check '{failed}' FAILS" if failed else "restarted"
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


