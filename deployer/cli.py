"""The `deploy` command. Only this module imports click; each command is a few lines that call
into the core, and every DeployerError becomes a one-line message and an exit code here."""

from __future__ import annotations

import atexit
import functools
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from deployer import __version__, report
from deployer.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_LOCK_HELD,
    DeployerError,
    Interrupted,
)

EXIT_CODES = f"""\b
Exit codes:
  0    ok
  {EXIT_FAILED}    an operation failed (engine, AWS, a host or its health check)
  {EXIT_BAD_INPUT}    bad input: env file, stack file, arguments; nothing was started
  {EXIT_LOCK_HELD}    a lock is held by someone else (Terraform state or a host's deploy lock)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); the engine was stopped cleanly"""


class DeployGroup(click.Group):
    """`deploy STACK ENV [ACTION]` beside named subcommands: an unknown first word is a stack."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            return "stack", self.commands["stack"], args
        return super().resolve_command(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write("Usage: deploy STACK ENV [plan|apply|destroy] [OPTIONS]\n"
                        "       deploy COMMAND [ARGS]... [OPTIONS]\n")


class StackCommand(click.Command):
    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write("Usage: deploy STACK ENV [plan|apply|destroy] [OPTIONS]\n")


def common(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options every command takes, wherever they are typed on the line."""
    fn = click.option("-C", "--project-dir", type=click.Path(file_okay=False, path_type=Path),
                      envvar="DEPLOYER_PROJECT_DIR",
                      help="The project (default: the nearest directory with deployments/stacks/).")(fn)
    fn = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(fn)
    fn = click.option("-v", "--verbose", is_flag=True, help="Show the engine's full output.")(fn)
    fn = click.option("-y", "--yes", is_flag=True,
                      help="Non-interactive: answer yes to confirmations (CI).")(fn)
    return fn


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The one place errors become messages and exit codes."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("as_json"):
            return _run(*args, **kwargs)
        # `deploy STACK ENV [ACTION]` is the hidden command "stack"; its data names all three.
        with report.json_envelope(click.get_current_context().command_path.split(" ", 1)[-1]):
            return _run(*args, **kwargs)

    def _run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Interrupted as exc:
            report.error(str(exc))
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            report.error("interrupted")
            sys.exit(EXIT_INTERRUPTED)
        except DeployerError as exc:
            report.error(str(exc))
            sys.exit(exc.exit_code)
        except Exception as exc:  # noqa: BLE001  # the last resort: one line, never a traceback
            path = _write_crash_report(exc)
            report.error(f"unexpected {type(exc).__name__}: this is a bug in deployer, not in your"
                         f" input; the stack trace is in {path}")
            sys.exit(EXIT_FAILED)

    return wrapper


def _write_crash_report(exc: BaseException) -> str:
    """Where the code failed, without the exception's message or any value (they may hold a
    secret): frames and the exception's type only, in a file only the operator can read."""
    import tempfile
    import time
    import traceback

    frames = "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__)))
    fd, path = tempfile.mkstemp(prefix=f"deployer-crash-{time.strftime('%Y%m%d-%H%M%S')}-",
                                suffix=".log")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(f"deploy {' '.join(sys.argv[1:2])}: unexpected {type(exc).__name__}\n{frames}")
    return path


def _project(project_dir: Path | None) -> Path:
    from deployer.pipeline import find_project

    return (project_dir or find_project(Path.cwd())).resolve()


def _settings(project_dir: Path | None):
    from deployer.config import load_settings

    return load_settings(_project(project_dir))


def _asker(yes: bool) -> Callable[[str], str] | None:
    """Ask a person for a value a stack keeps (a domain, an e-mail); None when nobody is there
    (--yes, or no terminal): the value must then be in the env file."""
    if yes or not sys.stdin.isatty():
        return None
    return lambda name: click.prompt(f"{name} (asked once; kept in deployments/secrets-ENV)",
                                     default="", show_default=False)


def _confirmer(yes: bool) -> Callable[[str, str], bool]:
    """Ask the operator to type `expected`; refuse in a non-interactive run without --yes."""

    def confirm(prompt: str, expected: str) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            from deployer.errors import ConfigError

            raise ConfigError(f"{prompt.split('. Type')[0].split('? Type')[0]}: confirmation"
                              " needed, but this run is not interactive; pass --yes to go on")
        return click.prompt(prompt, default="", show_default=False).strip() == expected

    return confirm


@click.group(cls=DeployGroup, epilog=EXIT_CODES,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="deploy")
def main() -> None:
    """Terraform + SSH deployments from one command.

    \b
    deploy bootstrap-state            once per AWS account: state bucket + lock table
    deploy shared ENV apply           the network, security group, Elastic IPs, role
    deploy dashboard ENV apply        the dashboard host, then the app over SSH
    deploy edge ENV                   the edge fleet over SSH (hosts from the env file)
    deploy graph STACK ENV            phases, roles and hosts as a Mermaid flowchart
    deploy doctor STACK ENV           pre-flight: this machine and every host ready?

    ENV names deployments/env-ENV. The action is `plan` by default for stacks with a
    Terraform root and `apply` for hosts-only stacks.
    """


@main.command("stack", cls=StackCommand, hidden=True, epilog=EXIT_CODES)
@click.argument("stack")
@click.argument("env")
@click.argument("action", required=False, type=click.Choice(["plan", "apply", "destroy"]))
@click.option("--hosts-only", is_flag=True, help="Skip the engine; deploy to the current hosts.")
@click.option("--no-hosts", is_flag=True, help="Run the engine only; skip the SSH phase.")
@click.option("--accept-new-host-keys", is_flag=True,
              help="Trust hosts seen for the first time (OpenSSH accept-new). Changed keys are"
                   " always refused.")
@click.option("--parallel", type=click.IntRange(1, 256), help="Hosts deployed at once.")
@click.option("--skip-doctor", is_flag=True,
              help="Apply without the pre-flight checks of the stack's [doctor] table first"
                   " (`deploy doctor STACK ENV` runs them alone).")
@common
@handle_errors
def stack(stack: str, env: str, action: str | None, hosts_only: bool, no_hosts: bool,
          accept_new_host_keys: bool, parallel: int | None, skip_doctor: bool,
          project_dir: Path | None, as_json: bool, verbose: bool, yes: bool) -> None:
    """Plan, apply or destroy STACK in ENV, then install the app on its hosts."""
    from deployer import pipeline

    settings, spec, env_cfg = pipeline.load_inputs(_project(project_dir), stack, env)
    options = pipeline.Options(verbose=verbose, hosts_only=hosts_only, no_hosts=no_hosts,
                               accept_new_host_keys=accept_new_host_keys, parallel=parallel,
                               skip_doctor=skip_doctor)
    result = pipeline.run_stack(settings, spec, env_cfg, action or pipeline.default_action(spec),
                                options, progress=report.progress, confirm=_confirmer(yes),
                                ask=_asker(yes))
    report.run_result(result, as_json=as_json)
    _exit_for(result)


def _exit_for(result: Any) -> None:
    fleet = getattr(result, "fleet", result)
    if fleet is not None and fleet.locked:
        sys.exit(EXIT_LOCK_HELD)
    if (fleet is not None and fleet.failed) or not getattr(result, "ok", True):
        sys.exit(EXIT_FAILED)


@main.command("doctor", epilog=EXIT_CODES)
@click.argument("stack")
@click.argument("env")
@click.option("--accept-new-host-keys", is_flag=True, help="Trust hosts seen for the first time.")
@common
@handle_errors
def doctor(stack: str, env: str, accept_new_host_keys: bool, project_dir: Path | None,
           as_json: bool, verbose: bool, yes: bool) -> None:
    """Pre-flight: is this machine, and every host of STACK in ENV, ready for a deploy? Changes
    nothing; exit 1 when a check fails. An apply runs the same checks first (--skip-doctor).

    \b
    Here:       each tool of [doctor] tools on PATH (default: ssh, git); git --version runs;
                the SSH key (DEPLOYER_SSH_KEY) and the env file readable by you alone (600).
    Each host, logged in as the bootstrap user ([users]), all hosts at once, one round trip:
      reachable over SSH
      sudo      sudo -n true works (or the login is root)
      os        ID and VERSION_ID of /etc/os-release are one of [doctor] os, e.g. "debian 12"
      disk      free space on disk_path (default /) is at least min_free_mb (default 1024)
      command   each of [doctor] commands is installed
      clock     within max_clock_skew seconds (default 5) of this machine's clock
      reach     each [[doctor.reach]] of the host's role: a TCP connection to the address in
                the env variable to_variable, on port, within 3 seconds
    """
    from deployer import pipeline
    from deployer.doctor import run

    settings, spec, env_cfg = pipeline.load_inputs(_project(project_dir), stack, env)
    masker = env_cfg.masker(settings)
    with pipeline.open_log(settings, spec, env_cfg, "doctor", masker) as log:
        report.progress(f"log: {log.path}")
        outputs = pipeline.host_targets(settings, spec, env_cfg, masker=masker, log=log,
                                        progress=report.progress)[1] if spec.roles else {}
        result = run(settings, spec, env_cfg, log=log, progress=report.progress, outputs=outputs,
                     accept_new_host_keys=accept_new_host_keys)
    report.doctor(result, as_json=as_json)
    if not result.ok:
        sys.exit(EXIT_FAILED)


@main.command("render", epilog=EXIT_CODES)
@click.argument("stack")
@click.argument("env")
@common
@handle_errors
def render(stack: str, env: str, project_dir: Path | None, as_json: bool, verbose: bool,
           yes: bool) -> None:
    """Write the backend config of STACK in ENV and show what the engine would get (secrets
    masked). Runs nothing."""
    from dataclasses import asdict

    from deployer import pipeline

    settings, spec, env_cfg = pipeline.load_inputs(_project(project_dir), stack, env)
    rendered = pipeline.render(settings, spec, env_cfg)
    if as_json:
        report.emit_json(asdict(rendered))
        return
    report.line(f"backend config: {rendered.backend_file} (state key {rendered.state_key})")
    report.line(rendered.backend.rstrip())
    report.mapping("environment for the engine:", rendered.exports, as_json=False)


@main.command("bootstrap-state", epilog=EXIT_CODES)
@click.option("--check", is_flag=True, help="Only report; exit 1 when anything is missing or differs.")
@common
@handle_errors
def bootstrap_state(check: bool, project_dir: Path | None, as_json: bool, verbose: bool,
                    yes: bool) -> None:
    """Create (or repair) the state bucket and lock table for this AWS account. Never deletes
    them. Names: ${AWS_PROFILE}-chronos-terraform-state-storage / -locks."""
    from deployer import state
    from deployer.results import MISSING, UNCHANGED

    settings = _settings(project_dir)
    title = f"state: s3://{settings.state_bucket} + dynamodb:{settings.lock_table} ({settings.aws_region})"
    found = state.check(settings)
    differs = [s for s in found if s.status != UNCHANGED]
    if check:
        report.steps(found, as_json=as_json, title=title)
        sys.exit(EXIT_FAILED if differs else 0)
    # Creating what is missing is what the command is for; changing what exists needs a yes.
    drifted = tuple(s for s in differs if s.status != MISSING)
    repair = True
    if drifted:
        if not as_json:
            report.steps(drifted, as_json=False, title="drift found:")
        repair = _confirmer(yes)("Repair the settings above? Type 'yes'", "yes")
    results = state.bootstrap(settings, repair=repair, progress=report.progress)
    state.write_backend_configs(settings)
    report.steps(results, as_json=as_json, title=title)
    if any(s.status == state.DRIFTED for s in results):
        sys.exit(EXIT_FAILED)  # the operator declined the repair: the drift is still there


def _host_command(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--role", metavar="ROLE", help="Only this role's hosts (default: every role).")(fn)
    fn = click.option("--accept-new-host-keys", is_flag=True,
                      help="Trust hosts seen for the first time.")(fn)
    fn = click.argument("env")(fn)
    fn = click.argument("stack")(fn)
    return fn


def _targets(stack: str, env: str, project_dir: Path | None, action: str, role: str | None, *,
             hostless: bool = False):
    """Settings, stack and env (checked), the masker, the run log, and each role (a one-role
    view of the stack) with its hosts. `hostless`: a stack without hosts is no error (none)."""
    from deployer import pipeline

    settings, spec, env_cfg = pipeline.load_inputs(_project(project_dir), stack, env)
    if role is not None:
        spec.view(role)  # an unknown role is bad input, before the log or any connection
    masker = env_cfg.masker(settings)
    log = pipeline.open_log(settings, spec, env_cfg, action, masker)
    if hostless and not spec.roles and role is None:
        return settings, spec, env_cfg, log, [], {}
    targets, outputs = pipeline.host_targets(settings, spec, env_cfg, masker=masker, log=log,
                                             progress=report.progress, role=role)
    return settings, spec, env_cfg, log, targets, outputs


@main.command("rollback", epilog=EXIT_CODES)
@_host_command
@click.option("--to", "to", metavar="RELEASE", help="The release to switch to (default: the previous).")
@common
@handle_errors
def rollback(stack: str, env: str, accept_new_host_keys: bool, role: str | None, to: str | None,
             project_dir: Path | None, as_json: bool, verbose: bool, yes: bool) -> None:
    """Switch STACK's hosts in ENV back to the previous (or a named) release: lock, switch,
    restart, health checks; switched back when they fail."""
    from deployer import lock
    from deployer.hosts import fleet, release
    from deployer.results import FleetResult

    fleet.check_release_name(to)  # before the run log, the engine or any host
    settings, spec, env_cfg, log, targets, outputs = _targets(stack, env, project_dir, "rollback",
                                                               role)
    info = release.lock_info(spec, env_cfg, "rolling back", to or "to the previous release")
    with log, lock.held(settings, spec.name, env_cfg.name, info, report.progress):
        result = FleetResult(tuple(h for view, hosts in targets for h in fleet.rollback(
            view, env_cfg, settings, hosts, to=to, log=log, progress=report.progress,
            accept_new_host_keys=accept_new_host_keys, outputs=outputs).hosts))
    _print_fleet(result, as_json)
    _exit_for(result)


@main.command("unlock", epilog=EXIT_CODES)
@_host_command
@click.option("--host", "host", metavar="HOST", help="Only this host (user@address or address).")
@common
@handle_errors
def unlock(stack: str, env: str, accept_new_host_keys: bool, role: str | None, host: str | None,
           project_dir: Path | None, as_json: bool, verbose: bool, yes: bool) -> None:
    """Show who holds the locks of STACK in ENV: the run lock, the engine's lock on its state
    and the deploy lock on each host. Remove each after a yes: for a run that died where deploy
    cannot tell (a CI runner killed mid-deploy). A lock left by a dead process of this machine
    is broken by the next run. With --host or --role, only those hosts' deploy locks."""
    from deployer import lock, pipeline
    from deployer.hosts import fleet
    from deployer.results import FleetResult

    settings, spec, env_cfg, log, targets, _ = _targets(stack, env, project_dir, "unlock", role,
                                                         hostless=host is None)
    every = [h for _, hosts in targets for h in hosts]
    chosen = set(fleet.pick_hosts(every, host))
    say = report.progress if as_json else report.line  # --json: stdout is the envelope only
    with log:
        if host is None and role is None:
            cleared = lock.clear(settings, spec.name, env_cfg.name, _confirmer(yes), report.progress)
            say(f"run lock: {cleared}")
            if spec.terraform is not None:
                cleared = pipeline.clear_state_lock(
                    settings, spec, env_cfg, _confirmer(yes), masker=log.masker,
                    log=log, progress=report.progress)
                say(f"state lock: {cleared}")
        result = FleetResult(tuple(h for view, hosts in targets for h in fleet.unlock(
            view, env_cfg, settings, [h for h in hosts if h in chosen], log=log,
            progress=report.progress, confirm=_confirmer(yes),
            parallel=view.hosts.parallel if yes and view.hosts else 1,
            accept_new_host_keys=accept_new_host_keys).hosts))
    _print_fleet(result, as_json)
    _exit_for(result)


@main.command("status", epilog=EXIT_CODES)
@_host_command
@common
@handle_errors
def status(stack: str, env: str, accept_new_host_keys: bool, role: str | None,
           project_dir: Path | None, as_json: bool, verbose: bool, yes: bool) -> None:
    """Current release, fingerprint, lock and last audit lines of each host of STACK in ENV."""
    from dataclasses import asdict

    from deployer.hosts import fleet

    settings, spec, env_cfg, log, targets, _ = _targets(stack, env, project_dir, "status", role)
    with log:
        found = [s for view, hosts in targets for s in fleet.status(
            view, env_cfg, settings, hosts, log=log, progress=report.progress,
            accept_new_host_keys=accept_new_host_keys)]
    if as_json:
        report.emit_json([asdict(s) for s in found])
        return
    for s in found:
        report.mapping(str(s.host), {k: v for k, v in asdict(s).items() if k != "host"},
                       as_json=False)


@main.command("logs", epilog=EXIT_CODES)
@_host_command
@click.option("--lines", default=200, show_default=True, help="Lines per host.")
@common
@handle_errors
def logs(stack: str, env: str, accept_new_host_keys: bool, role: str | None, lines: int,
         project_dir: Path | None, as_json: bool, verbose: bool, yes: bool) -> None:
    """Show the app's logs (each role's log command) from each host of STACK in ENV."""
    from deployer.hosts import fleet
    from deployer.results import FleetResult

    settings, spec, env_cfg, log, targets, _ = _targets(stack, env, project_dir, "logs", role)
    with log:
        result = FleetResult(tuple(h for view, hosts in targets for h in fleet.logs(
            view, env_cfg, settings, hosts, log=log, progress=report.progress, lines=lines).hosts))
    _print_fleet(result, as_json)
    _exit_for(result)


@main.command("graph", epilog=EXIT_CODES)
@click.argument("stack")
@click.argument("env")
@common
@handle_errors
def graph(stack: str, env: str, project_dir: Path | None, as_json: bool, verbose: bool,
          yes: bool) -> None:
    """Print STACK's phases, roles and hosts in ENV as a Mermaid flowchart, for docs that never
    go stale. Hosts from Terraform outputs are those of the last apply (nothing is planned)."""
    from deployer import pipeline

    settings, spec, env_cfg = pipeline.load_inputs(_project(project_dir), stack, env)
    hosts = pipeline.graph_hosts(settings, spec, env_cfg, progress=report.progress)
    if as_json:
        report.emit_json({"phases": [{"name": p.name, "roles": {r: hosts[r] for r in p.roles}}
                                     for p in spec.phases]})
        return
    report.line(report.mermaid(spec, hosts))


@main.group("sandbox", epilog=EXIT_CODES)
def sandbox() -> None:
    """The local cloud: a moto AWS endpoint on 127.0.0.1 and small real Debian machines
    (systemd-nspawn, systemd as PID 1): one for every running EC2 instance (an Elastic IP is a
    127.x address, a private IP only answers through a jump host), the demo's edge hosts and
    CHOM's two servers. Needs root (namespaces, overlay mounts, port 22 of 127.x addresses).

    \b
    deploy sandbox up        start it (idempotent); writes .deployer/sandbox/sandbox.env
    deploy sandbox env       print the settings for a shell: eval "$(deploy sandbox env)"
    deploy sandbox status    what runs
    deploy sandbox down      stop every process it started; files stay
    deploy sandbox demo      up, then the whole main job on the demo environment
    deploy sandbox demo-chom up, then CHOM on the sandbox's two existing servers
    deploy sandbox demo-cso  up, then CSO (--topology single|ha) through its jump server
    """


@sandbox.command("up")
@common
@handle_errors
def sandbox_up(project_dir: Path | None, as_json: bool, verbose: bool, yes: bool) -> None:
    """Start the sandbox (what already runs is left alone)."""
    from deployer.sandbox import cloud

    settings = _settings(project_dir)
    steps = cloud.up(settings.work_dir, dict(settings.environ))
    report.steps(steps, as_json=as_json, title="sandbox up")
    if not as_json:
        report.line(f'settings: {cloud.paths(settings.work_dir).env_file} (eval "$(deploy sandbox env)")')


@sandbox.command("down")
@common
@handle_errors
def sandbox_down(project_dir: Path | None, as_json: bool, verbose: bool, yes: bool) -> None:
    """Stop every process the sandbox started. Env files, keys and logs stay."""
    from deployer.sandbox import cloud

    settings = _settings(project_dir)
    report.steps(cloud.down(settings.work_dir), as_json=as_json, title="sandbox down")


@sandbox.command("status")
@common
@handle_errors
def sandbox_status(project_dir: Path | None, as_json: bool, verbose: bool, yes: bool) -> None:
    """What the sandbox runs."""
    from deployer.sandbox import cloud

    settings = _settings(project_dir)
    report.steps(cloud.status(settings.work_dir), as_json=as_json, title="sandbox")


@sandbox.command("env")
@common
@handle_errors
def sandbox_env(project_dir: Path | None, as_json: bool, verbose: bool, yes: bool) -> None:
    """Print the settings a shell needs to use the sandbox: eval "$(deploy sandbox env)"."""
    from deployer.sandbox import cloud

    settings = _settings(project_dir)
    env = cloud.environment(settings.work_dir)
    if as_json:
        report.emit_json(env)
    else:
        for key, value in env.items():
            report.line(f"export {key}={value}")


@sandbox.command("demo")
@common
@handle_errors
def sandbox_demo(project_dir: Path | None, as_json: bool, verbose: bool, yes: bool) -> None:
    """Bring the sandbox up and run the main job on the demo environment: bootstrap-state,
    shared apply, dashboard apply, edge. A second run reports no changes."""
    from deployer import demo

    settings = _settings(project_dir)
    result = demo.run(settings.project, dict(settings.environ), report.progress)
    report.demo_result(result, as_json=as_json)
    if not result.ok:
        failed = result.runs[-1]
        sys.exit(EXIT_LOCK_HELD if failed.fleet and failed.fleet.locked else EXIT_FAILED)


@sandbox.command("demo-chom")
@common
@handle_errors
def sandbox_demo_chom(project_dir: Path | None, as_json: bool, verbose: bool, yes: bool) -> None:
    """Bring the sandbox up and run CHOM on its two existing servers: `deploy chom demo apply`
    (pre-flight, deploy user, secrets, provisioning, release, checks). It ends with the access
    URLs; a second run reports no changes."""
    from deployer import demo

    settings = _settings(project_dir)
    result = demo.run_chom(settings.project, dict(settings.environ), report.progress)
    report.demo_result(result, as_json=as_json)
    if not result.ok:
        failed = result.runs[-1]
        sys.exit(EXIT_LOCK_HELD if failed.fleet and failed.fleet.locked else EXIT_FAILED)


@sandbox.command("demo-cso")
@click.option("--topology", type=click.Choice(["single", "ha"]), default="single", show_default=True,
              help="The shape: one host per role, or two per role behind a load balancer.")
@common
@handle_errors
def sandbox_demo_cso(topology: str, project_dir: Path | None, as_json: bool, verbose: bool,
                     yes: bool) -> None:
    """Bring the sandbox up and run CSO: `deploy cso demo apply` with TF_VAR_topology set
    (infrastructure, then the roles through the jump server in phases, then the checks). It ends
    with the SSH commands and the Admin UI URL; a second run reports no changes."""
    from deployer import demo

    settings = _settings(project_dir)
    result = demo.run_cso(settings.project, dict(settings.environ), report.progress,
                          topology=topology)
    report.demo_result(result, as_json=as_json)
    if not result.ok:
        failed = result.runs[-1]
        sys.exit(EXIT_LOCK_HELD if failed.fleet and failed.fleet.locked else EXIT_FAILED)


def _print_fleet(result: Any, as_json: bool) -> None:
    from deployer.results import to_data

    if as_json:
        report.emit_json(to_data(result))
    else:
        report.fleet(result)


if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))


def entry() -> None:
    """The `deploy` console script: `main`, then an exit without the interpreter's teardown.

    Freeing every imported module's objects one by one (SSH, crypto, Jinja2, click) takes about
    0.1 s at the end of every run, a tenth of a one-host deploy, and the process is ending
    anyway. The exit handlers still run and the output is flushed first. A thread still at work
    (never a daemon one), or an exit with a message instead of a code, gets the normal exit.
    """
    try:
        main()
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code
        working = [t for t in threading.enumerate()
                   if t is not threading.main_thread() and t.is_alive() and not t.daemon]
        if not isinstance(code, int) or working:
            raise
        atexit._run_exitfuncs()  # what the normal exit runs first (logging's flush among them)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

