"""One stack run: the engine phase (init → plan → apply), then the host phase (SSH installs).

    config/stacks → pipeline → engine / hosts → results → (CLI) report
"""

from __future__ import annotations

import dataclasses
import importlib
import ipaddress
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from deployer import engine as engines
from deployer import generated, templates
from deployer.config import EnvConfig, Settings, env_name_problem, load_env, load_settings
from deployer.errors import ConfigError
from deployer.logs import RunLog
from deployer.results import (
    FAILED,
    OK,
    EngineResult,
    FleetResult,
    PlanSummary,
    Progress,
    RunResult,
    StepResult,
)
from deployer.secrets import MASK, Masker
from deployer.stacks import Stack, load_stack

ACTIONS = ("plan", "apply", "destroy")
# Asks the operator to type `expected` to go on; returns False when they decline.
Confirm = Callable[[str, str], bool]


@dataclass(frozen=True)
class Options:
    verbose: bool = False
    hosts_only: bool = False  # skip the engine; hosts come from the current outputs
    no_hosts: bool = False  # skip the host phase
    accept_new_host_keys: bool = False
    parallel: int | None = None
    skip_doctor: bool = False  # an apply of a stack with [doctor] runs the pre-flight checks first


@dataclass(frozen=True)
class Rendered:
    """What `deploy render` shows: the backend file and the engine's variables (secrets masked)."""

    backend_file: str
    backend: str
    state_key: str
    exports: dict[str, str]


def find_project(start: Path) -> Path:
    """The nearest directory at or above `start` that has `deployments/stacks/`."""
    for candidate in (start, *start.parents):
        if (candidate / "deployments" / "stacks").is_dir():
            return candidate
    raise ConfigError(
        f"not inside a deployer project: no deployments/stacks/ in {start} or above"
        " (run from the project, or pass -C DIR)"
    )


def load(settings: Settings, stack_name: str, env_name: str) -> tuple[Stack, EnvConfig]:
    """The stack and its environment, checked as far as anything can be before a run: the
    files, every value that reaches a host, the hosts themselves, and every template rendered
    for every host (with placeholders for what only an apply will tell). All problems at once."""
    stack = load_stack(settings.project, stack_name)
    env = load_env(settings.project, env_name, stack)
    problems = check_before_run(settings.project, settings.aws_endpoint_url, stack,
                                generated.placeholders(stack, env, settings.project))
    if problems:
        raise ConfigError(problems)
    return stack, env


def load_inputs(project: Path, stack_name: str, env_name: str) -> tuple[Settings, Stack, EnvConfig]:
    """Operator settings, stack and environment, with the problems of all three in one error."""
    problems: list[str] = []
    settings = stack = None
    for step in ("settings", "stack"):
        try:
            if step == "settings":
                settings = load_settings(project)
            else:
                stack = load_stack(project, stack_name)
        except ConfigError as exc:
            problems += exc.problems
    if stack is None and (bad := env_name_problem(env_name)):
        problems.append(bad)
    if stack is not None:
        try:
            env = load_env(project, env_name, stack)
        except ConfigError as exc:
            problems += exc.problems
        else:  # with broken settings too: every problem in one run
            endpoint_url = settings.aws_endpoint_url if settings is not None else ""
            try:
                checked = generated.placeholders(stack, env, project)
            except ConfigError as exc:
                problems += exc.problems
            else:
                problems += check_before_run(project, endpoint_url, stack, checked)
    if problems:
        raise ConfigError(problems)
    assert settings is not None and stack is not None
    return settings, stack, env


def check_before_run(project: Path, aws_endpoint_url: str, stack: Stack, env: EnvConfig) -> list[str]:
    """Hosts named in the env file, and the apps' templates and health checks for each of them,
    role by role."""
    problems: list[str] = []
    outputs = placeholder_outputs(project, stack)
    for view in stack.views():
        for problem in _check_role(project, aws_endpoint_url, view, env, outputs):
            if problem not in problems:
                problems.append(problem)
    return problems


def _check_role(project: Path, aws_endpoint_url: str, stack: Stack, env: EnvConfig,
                outputs: dict[str, object]) -> list[str]:
    assert stack.hosts is not None
    from deployer.hosts import fleet, provision, release
    from deployer.hosts.address import Host, parse_host, parse_host_list

    problems: list[str] = []
    if stack.hosts.source == "env":
        hosts, _ = parse_host_list(env.values.get(stack.hosts.variable, ""),
                                   default_user=stack.hosts.user, default_port=stack.hosts.port)
    else:  # known after apply: a stand-in that renders like one
        hosts = [Host(stack.hosts.user, "host.invalid", stack.hosts.port)]
    gateway_text = env.values.get(stack.hosts.gateway_variable, "") if stack.hosts.gateway_variable else ""
    named = [h.address for h in hosts if stack.hosts.source == "env"]
    if gateway_text:  # the hosts behind it are reached from the jump host, never from here
        named = [parse_host(gateway_text, default_user=stack.hosts.user).address]
    if named:
        try:
            check_sandbox_hosts(aws_endpoint_url, named, stack)
        except ConfigError as exc:
            problems += [f"{env.path}: {p}" for p in exc.problems]
    role = stack.role_of(stack.role) if stack.role else None
    if stack.users is not None and stack.users.deploy_user_variable in env.values:
        hosts = [dataclasses.replace(h, user=env.values[stack.users.deploy_user_variable])
                 for h in hosts]
    for host in hosts[:1] if stack.hosts.source == "terraform" else hosts:
        try:
            if role is not None and role.provision is not None:
                provision.render(role.provision, project,
                                 fleet.provisioning_context(stack, env, host, outputs), host.user)
            if stack.app is None:
                continue
            release.render(stack, env, project, host, "0" * 40, outputs)
            ctx = release.context(stack, env, host, outputs)
            for check in stack.app.health:
                if check.url:
                    problems += _url_problems(
                        templates.render_string(check.url, ctx, name=f"{stack.path}: health {check.name!r}"),
                        f"{stack.path}: health {check.name!r} for {host}")
        except ConfigError as exc:
            problems += [p for p in exc.problems if p not in problems]
    return problems


def _url_problems(url: str, where: str) -> list[str]:
    parts = urllib.parse.urlsplit(url)
    try:
        parts.port  # noqa: B018  # raises for a port that is not a number from 0 to 65535
    except ValueError:
        return [f"{where}: {url!r} has a port that is not a number from 1 to 65535"]
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [f"{where}: {url!r} is not an http:// or https:// URL with a host"]
    return []


def placeholder_outputs(project: Path, stack: Stack) -> dict[str, object]:
    """The stack's Terraform outputs by name, each standing in as `<output NAME>`: templates
    that use them render before the apply that gives them values, and a misspelt one fails."""
    if stack.terraform is None:
        return {}
    root = project / stack.terraform.root
    names = set()
    for tf in sorted(root.glob("*.tf")) if root.is_dir() else []:
        names.update(re.findall(r'^output\s+"([A-Za-z0-9_-]+)"', tf.read_text(encoding="utf-8"), re.M))
    return {name: f"<output {name}>" for name in sorted(names)}


def default_action(stack: Stack) -> str:
    """`plan` for stacks with Terraform; hosts-only stacks (edge) deploy by default."""
    return "plan" if stack.terraform else "apply"


def tf_vars(settings: Settings, env: EnvConfig) -> dict[str, str]:
    """Driver variables, overridden by the env file's TF_VAR_* entries."""
    return {**engines.driver_variables(settings, env.name), **env.tf_vars}


def render(settings: Settings, stack: Stack, env: EnvConfig) -> Rendered:
    """Write the backend config file and describe the engine's variables; runs nothing."""
    backend_file = engines.backend_path(settings, env.name)
    text = engines.render_backend(settings)
    _write_if_changed(backend_file, text)
    masker = env.masker(settings)
    exports = {}
    for name, value in sorted(tf_vars(settings, env).items()):
        secret = name in env.secret_names or f"TF_VAR_{name}" in env.secret_names
        exports[f"TF_VAR_{name}"] = MASK if secret and value else masker.mask(value)
    return Rendered(str(backend_file), text, engines.state_key(stack.name, env.name), exports)


def open_log(settings: Settings, stack: Stack, env: EnvConfig, action: str, masker: Masker) -> RunLog:
    return RunLog.create(settings.work_dir / "logs", f"{stack.name}-{env.name}-{action}", masker)


def workspace(settings: Settings, stack: Stack, env: EnvConfig, *, masker: Masker, log: RunLog,
              progress: Progress, verbose: bool) -> engines.Workspace:
    """The stack's Terraform root for this environment, initialised against its state."""
    assert stack.terraform is not None
    root = settings.project / stack.terraform.root
    if not root.is_dir():
        raise ConfigError(f"{stack.path}: terraform.root {stack.terraform.root!r} is not a directory")
    work = settings.work_dir
    data_dir = work / "tf" / f"{stack.name}-{env.name}-{settings.aws_profile}"
    cache = work / "plugin-cache"
    cli_config = work / "terraformrc"
    for d in (data_dir, cache):
        d.mkdir(parents=True, exist_ok=True)
    _write_if_changed(cli_config, engines.render_cli_config(cache, settings.provider_mirror))
    eng = engines.find_engine(settings)
    env_vars = engines.engine_env(settings.environ, tf_vars(settings, env), data_dir=data_dir,
                                  cli_config=cli_config, plugin_cache=cache)
    ws = engines.Workspace(eng, root, env_vars, masker=masker, log=log, on_line=progress,
                           verbose=verbose, name=f"{stack.name}/{env.name}")
    version = engines.cached_version(eng, work / "engine-versions.json", ws.version)
    ws.engine = engines.Engine(eng.kind, eng.argv, version)
    progress(f"engine: {ws.engine.label}")
    rendered = render(settings, stack, env)
    if not ws.init(Path(rendered.backend_file), rendered.state_key):
        progress("init: skipped (backend, modules and providers as at the last init)")
    return ws


def run_stack(
    settings: Settings, stack: Stack, env: EnvConfig, action: str, options: Options, *,
    progress: Progress, confirm: Confirm, ask: generated.Ask | None = None,
) -> RunResult:
    """`deploy STACK ENV ACTION`. Raises DeployerError subclasses; returns what happened.
    `ask` reads a value the stack asks for from a person (None: nobody is there)."""
    if action not in ACTIONS:
        raise ConfigError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    if action == "destroy" and env.is_protected and not confirm(
        f"Destroy stack {stack.name} in the protected environment {env.name!r}?"
        f" Type the environment name to confirm", env.name
    ):
        raise ConfigError(f"destroy of {stack.name}/{env.name} not confirmed; nothing was changed")
    if options.hosts_only and options.no_hosts:
        raise ConfigError("--hosts-only and --no-hosts exclude each other")
    if stack.terraform is None and action == "destroy":
        raise ConfigError(f"stack {stack.name} has no Terraform root ({stack.path}); nothing to destroy")
    started = time.monotonic()
    checks: list[StepResult] = []
    if stack.kept_names and action != "apply":
        env = generated.placeholders(stack, env, settings.project)
    masker = env.masker(settings)
    with open_log(settings, stack, env, action, masker) as log:
        progress(f"log: {log.path}")
        preflight = stack.doctor is not None and action == "apply" and not options.skip_doctor
        if preflight and stack.terraform is None:  # first of all: nothing is changed before it
            checks.append(_preflight(settings, stack, env, {}, options, log, progress))
            if checks[-1].status == FAILED:
                return RunResult(stack.name, env.name, action, None, None, str(log.path),
                                 checks=tuple(checks))
        if stack.kept_names and action == "apply":
            kept, step = generated.ensure(settings.project, stack, env, ask=ask)
            progress(f"secrets: {step.reason}")
            checks.append(step)
            env = generated.with_kept(stack, env, kept)
            masker.add(*env.secret_values)  # the log's own masker: from here on, they are ****
        engine_result: EngineResult | None = None
        outputs: dict[str, object] = {}
        made: Future[Any | None] | None = None
        if stack.terraform is not None:
            if _wants_hosts(stack, action, options):
                made = ahead(lambda: _host_phase_ahead(settings))
            ws = workspace(settings, stack, env, masker=masker, log=log, progress=progress,
                           verbose=options.verbose)
            if options.hosts_only:
                outputs = ws.outputs()
            else:
                engine_result = _engine_phase(ws, stack, env, action, progress, confirm)
                outputs = engine_result.outputs
        fleet_result = None
        notes: tuple[str, ...] = ()
        access: tuple[tuple[str, str], ...] = ()
        if preflight and stack.terraform is not None and _wants_hosts(stack, action, options):
            # hosts from Terraform outputs exist only now: checked before anything reaches them
            checks.append(_preflight(settings, stack, env, outputs, options, log, progress))
        stopped = any(c.name == "pre-flight" and c.status == FAILED for c in checks)
        if _wants_hosts(stack, action, options) and not stopped:
            fleet_result = _host_phase(settings, stack, env, outputs, options, masker, log, progress,
                                       made)
            if not fleet_result.failed and (stack.urls or any(r.services for r in stack.roles)):
                found, access = _verify(settings, stack, env, outputs, options, log, progress)
                checks += found
        elif stack.roles and action == "plan" and not options.no_hosts:
            fleet_result, notes = _preview(settings, stack, env, outputs, options, log, progress)
        return RunResult(stack.name, env.name, action, engine_result, fleet_result, str(log.path),
                         notes, tuple(checks), access,
                         round(time.monotonic() - started, 1) if checks else 0.0)


def _engine_phase(ws: engines.Workspace, stack: Stack, env: EnvConfig, action: str,
                  progress: Progress, confirm: Confirm) -> EngineResult:
    assert stack.terraform is not None
    try:
        return _plan_and_apply(ws, stack, env, action, progress, confirm)
    finally:
        ws.discard_plan()  # one plan file per run, never left for another to apply


def _plan_and_apply(ws: engines.Workspace, stack: Stack, env: EnvConfig, action: str,
                    progress: Progress, confirm: Confirm) -> EngineResult:
    assert stack.terraform is not None
    plan = ws.plan(destroy=action == "destroy")
    progress(f"plan: {describe_plan(plan)}")
    applied, reason = False, ""
    if action == "plan":
        reason = "plan only" if plan.has_changes else "no changes"
    elif not plan.has_changes:
        reason = "no infrastructure change; apply skipped"
        progress(reason)
    else:
        risky = plan.destructive(stack.terraform.call_out)
        if risky:
            listed = ", ".join(f"{c.address} ({c.action})" for c in risky)
            progress(f"WARNING: this plan will {'/'.join(sorted({c.action for c in risky}))}: {listed}")
            if action == "apply" and not confirm(
                f"The plan replaces or destroys {listed}. Type 'yes' to apply", "yes"
            ):
                raise ConfigError(f"apply of {stack.name}/{env.name} not confirmed; nothing was changed")
        ws.apply()
        applied, reason = True, "applied the saved plan"
    outputs = ws.outputs() if action != "destroy" else {}
    return EngineResult(ws.engine.label, action, plan, applied, reason, outputs)


def describe_plan(plan: PlanSummary) -> str:
    if not plan.has_changes:
        return "no changes"
    c = plan.counts
    parts = [f"{c['add']} to add, {c['change']} to change, {c['destroy']} to destroy"]
    for rtype, actions in plan.by_type().items():
        parts.append(f"{rtype}: " + ", ".join(f"{n} {a}" for a, n in actions.items()))
    if plan.outputs_changed and not plan.changes:
        parts.append("outputs only")
    return "; ".join(parts)


def _preview(settings: Settings, stack: Stack, env: EnvConfig, outputs: dict[str, object],
             options: Options, log: RunLog, progress: Progress,
             ) -> tuple[FleetResult | None, tuple[str, ...]]:
    """`plan` previews the hosts too: per host, the commit it would get, the names of the files
    that would change and the steps that would run (read-only; values are never shown)."""
    from deployer.hosts import fleet

    try:
        targets = fleet.role_hosts(stack, env, outputs)
    except ConfigError as exc:  # hosts from outputs an apply has not made yet
        return None, (f"hosts: {exc.problems[0]}",)
    hosts = [h for _, role in targets for h in role]
    check_sandbox_hosts(settings.aws_endpoint_url, fleet.first_hops(targets), stack)
    progress(f"previewing {len(hosts)} host(s) (read-only)")
    return fleet.preview(stack, env, settings, log=log, progress=progress, outputs=outputs,
                         accept_new_host_keys=options.accept_new_host_keys), ()


def _preflight(settings: Settings, stack: Stack, env: EnvConfig, outputs: dict[str, object],
               options: Options, log: RunLog, progress: Progress) -> StepResult:
    """`deploy doctor` first, in every apply of a stack with [doctor]: one line for all of it."""
    from deployer import doctor

    found = doctor.run(settings, stack, env, log=log, progress=progress, outputs=outputs,
                       accept_new_host_keys=options.accept_new_host_keys)
    if found.ok:
        return StepResult("pre-flight", OK, f"{len(found.checks)} checks passed")
    failed = "; ".join(f"{c.where} {c.name}: {c.detail}" for c in found.failed)
    return StepResult("pre-flight", FAILED, f"{len(found.failed)} failed: {failed} (see `deploy"
                                            f" doctor {stack.name} {env.name}`; --skip-doctor skips it)")


def _verify(settings: Settings, stack: Stack, env: EnvConfig, outputs: dict[str, object],
            options: Options, log: RunLog, progress: Progress,
            ) -> tuple[list[StepResult], tuple[tuple[str, str], ...]]:
    """The end of an apply: every role's services active on every host, then every URL the
    stack lists answering from here; the access URLs to print."""
    from deployer.hosts import fleet

    progress("verifying: services on every host, then the URLs")
    checks = list(fleet.verify_services(stack, env, settings, log=log, outputs=outputs,
                                        accept_new_host_keys=options.accept_new_host_keys))
    access = []
    ctx = {**env.values, "env_name": env.name, "stack_name": stack.name, "outputs": dict(outputs)}
    for check in stack.urls:
        url = templates.render_string(check.url, ctx, name=f"{stack.path}: urls {check.name!r}")
        checks.append(_url_check(settings, check.name, url, log,
                                 env.values.get(check.ca_variable, "") if check.ca_variable else ""))
        if check.show:
            access.append((check.name, templates.render_string(check.show, ctx, name=check.name)))
    for c in checks:
        progress(f"check: {c.name}: {c.status} {c.reason}")
    return checks, tuple(access)


URL_PATIENCE = 30.0  # services just (re)started get this long to answer


def resolve_map(environ: Mapping[str, str]) -> dict[tuple[str, int], str]:
    """DEPLOYER_RESOLVE, curl's --resolve: `HOST:PORT:ADDRESS` entries, space-separated, and
    those of the file DEPLOYER_RESOLVE_FILE (one a line, read now: it may change while a run
    goes); a URL check of HOST:PORT connects to ADDRESS (a name that does not resolve from here,
    such as a load balancer's, reached another way).

    >>> resolve_map({"DEPLOYER_RESOLVE": "lb.example:8102:127.0.12.1"})
    {('lb.example', 8102): '127.0.12.1'}
    """
    found = {}
    text = environ.get("DEPLOYER_RESOLVE", "")
    path = environ.get("DEPLOYER_RESOLVE_FILE", "")
    if path and Path(path).is_file():
        text += " " + Path(path).read_text(encoding="utf-8")
    for entry in text.split():
        host, port, address = (entry.rsplit(":", 2) + ["", ""])[:3]
        if host and port.isdigit() and address:
            found[(host, int(port))] = address
    return found


def _url_check(settings: Settings, name: str, url: str, log: RunLog, ca: str = "") -> StepResult:
    """GET `url` from here until it answers 2xx or URL_PATIENCE passes."""
    import http.client
    import ssl

    parts = urllib.parse.urlsplit(url)
    host, secure = parts.hostname or "", parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    address = resolve_map(settings.environ).get((host, port), host)
    if _is_loopback(urllib.parse.urlsplit(settings.aws_endpoint_url).hostname or "") and \
            not _is_loopback(address):
        return StepResult(f"url {name}", FAILED, f"{url}: not on loopback while AWS_ENDPOINT_URL"
                                                 " is the sandbox; not fetched")
    context = None
    if secure:
        context = ssl.create_default_context(cadata=ca or None)
        if ca:  # pinned to the generated certificate: its chain is checked, its name is not
            context.check_hostname = False
    target = f"{parts.path or '/'}{'?' + parts.query if parts.query else ''}"
    deadline, why = time.monotonic() + URL_PATIENCE, ""
    while True:
        conn = (http.client.HTTPSConnection(address, port, timeout=5, context=context) if secure
                else http.client.HTTPConnection(address, port, timeout=5))
        try:
            conn.request("GET", target, headers={"Host": parts.netloc})
            status = conn.getresponse().status
            if 200 <= status < 300:
                log.write(f"url {name}: {url} -> {status}")
                pinned = " (TLS: the generated certificate)" if ca else ""
                return StepResult(f"url {name}", OK, f"{url} answered {status}{pinned}")
            why = f"HTTP {status}"
        except (OSError, http.client.HTTPException) as exc:
            why = str(exc) or type(exc).__name__
        finally:
            conn.close()
        if time.monotonic() > deadline:
            log.write(f"url {name}: {url} -> {why}")
            return StepResult(f"url {name}", FAILED, f"{url}: {why} (for {URL_PATIENCE:.0f} s)")
        time.sleep(1.0)


def operator_public_key(settings: Settings) -> str:
    """The public half of DEPLOYER_SSH_KEY: its .pub file, else derived by ssh-keygen."""
    from deployer import process

    pub = Path(f"{settings.ssh_key}.pub")
    if pub.is_file():
        return pub.read_text(encoding="utf-8").strip()
    return process.run(["ssh-keygen", "-y", "-f", settings.ssh_key], env=dict(settings.environ),
                       masker=Masker()).output.strip()


T = TypeVar("T")


def ahead(work: Callable[[], T]) -> Future[T]:
    """Start `work` in a thread, for the main thread to take its result (or its error) later:
    what the host phase needs is made while the engine runs (a subprocess: this process only
    waits for it)."""
    executor = ThreadPoolExecutor(1, thread_name_prefix="ahead")
    try:
        return executor.submit(work)
    finally:
        executor.shutdown(wait=False)


def _host_phase_ahead(settings: Settings) -> Any | None:
    """The SSH library (about 0.15 s to import) and the run lock's DynamoDB client (0.2 s),
    made while the engine plans. Only third-party modules, deployer.lock and deployer.hosts
    (which imports nothing of deployer's), none of which the main thread imports meanwhile: two
    threads importing into each other's half-made modules could deadlock."""
    importlib.import_module("deployer.hosts")  # first: it keeps paramiko from loading invoke
    importlib.import_module("paramiko")
    from deployer import lock

    return lock.table_client(settings)


def _wants_hosts(stack: Stack, action: str, options: Options) -> bool:
    return bool(stack.roles) and action == "apply" and not options.no_hosts


def _host_phase(settings: Settings, stack: Stack, env: EnvConfig, outputs: dict[str, object],
                options: Options, masker: Masker, log: RunLog, progress: Progress,
                made: Future[Any | None] | None = None) -> FleetResult:
    """`made`: _host_phase_ahead's run lock client, when the engine ran first."""
    # Fabric, paramiko and boto3 load only when a host phase runs.
    from deployer import lock
    from deployer.hosts import fleet, release

    targets = fleet.role_hosts(stack, env, outputs)
    hosts = [h for _, role in targets for h in role]
    check_sandbox_hosts(settings.aws_endpoint_url, fleet.first_hops(targets), stack)
    info = release.lock_info(stack, env, "deploying", f"to {len(hosts)} host(s)")
    with lock.held(settings, stack.name, env.name, info, progress, made) as where:
        if where:
            progress(f"run lock: {stack.name}/{env.name} held in {where}")
        before: tuple = ()
        if stack.users is not None:
            before = fleet.prepare_users(stack, env, settings, log=log, progress=progress,
                                         public_key=operator_public_key(settings),
                                         accept_new_host_keys=options.accept_new_host_keys)
            if any(r.status == FAILED for r in before):
                return FleetResult(before)
        deployed = fleet.deploy(stack, env, settings, log=log, progress=progress,
                                accept_new_host_keys=options.accept_new_host_keys,
                                parallel=options.parallel, outputs=outputs)
        return FleetResult((*before, *deployed.hosts))


def check_sandbox_hosts(aws_endpoint_url: str, addresses: list[str], stack: Stack) -> None:
    """Against a loopback AWS endpoint (the sandbox), every host must be on loopback too: an
    address such an endpoint hands out elsewhere is not a machine of ours to connect to."""
    if not _is_loopback(urllib.parse.urlsplit(aws_endpoint_url).hostname or ""):
        return
    outside = [a for a in addresses if not _is_loopback(a)]
    if outside:
        raise ConfigError(
            f"stack {stack.name}: AWS_ENDPOINT_URL is on loopback (the sandbox), but these hosts are"
            f" not: {', '.join(outside)}; refusing to connect outside 127.0.0.0/8")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def clear_state_lock(settings: Settings, stack: Stack, env: EnvConfig,
                     confirm: Callable[[str, str], bool], *, masker: Masker, log: RunLog,
                     progress: Progress) -> str:
    """`deploy unlock`: the engine's lock on the stack's state, shown, and after a yes released
    by the engine itself (`force-unlock` of exactly the ID shown: had the lock changed hands
    meanwhile, the engine refuses). What happened."""
    from deployer import lock

    if not lock.aws_configured(settings):
        return "no state lock (no AWS configured)"
    info = lock.state_lock(settings, engines.state_key(stack.name, env.name))
    if info is None:
        return "no state lock"
    holder = engines.describe_lock(info)
    if not confirm(f"{stack.name}/{env.name}: release the state lock held by {holder}? Type"
                   " 'yes'", "yes"):
        return f"kept the state lock held by {holder}"
    ws = workspace(settings, stack, env, masker=masker, log=log, progress=progress, verbose=False)
    ws.force_unlock(str(info.get("ID", "")))
    return f"released the state lock held by {holder}"


def host_targets(settings: Settings, stack: Stack, env: EnvConfig, *, masker: Masker,
                 log: RunLog, progress: Progress, role: str | None = None,
                 ) -> tuple[list[tuple[Stack, list]], dict[str, object]]:
    """Each role (or only `role`) as a one-role view, with its hosts as the last apply left
    them (Terraform outputs or the env file), and the outputs."""
    from deployer.hosts import fleet

    if not stack.roles:
        raise ConfigError(f"stack {stack.name} has no hosts ([hosts] and [app], or [roles.*], in"
                          f" {stack.path})")
    views = [stack.view(role)] if role is not None else list(stack.views())
    outputs: dict[str, object] = {}
    if any(v.hosts is not None and v.hosts.source == "terraform" for v in views):
        ws = workspace(settings, stack, env, masker=masker, log=log, progress=progress,
                       verbose=False)
        outputs = ws.outputs()
    wanted = {v.role for v in views}
    targets = [(view, hosts) for view, hosts in fleet.role_hosts(stack, env, outputs)
               if view.role in wanted]
    check_sandbox_hosts(settings.aws_endpoint_url, fleet.first_hops(targets), stack)
    return targets, outputs


def graph_hosts(settings: Settings, stack: Stack, env: EnvConfig, *, progress: Progress,
                ) -> dict[str, list[str]]:
    """Each role's hosts for `deploy graph`: from the env file, or from the Terraform outputs of
    the last apply (read, never planned); a role with none yet has an empty list."""
    from deployer.hosts import fleet

    outputs: dict[str, object] = {}
    views = stack.views()
    if stack.terraform is not None and any(v.hosts and v.hosts.source == "terraform" for v in views):
        masker = env.masker(settings)
        with open_log(settings, stack, env, "graph", masker) as log:
            outputs = workspace(settings, stack, env, masker=masker, log=log, progress=progress,
                                verbose=False).outputs()
    found: dict[str, list[str]] = {}
    for view in views:
        try:
            found[view.role] = [str(h) for h in fleet.resolve_hosts(view, env, outputs)]
        except ConfigError:  # not applied yet: the graph still shows the role
            found[view.role] = []
    return found


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)

