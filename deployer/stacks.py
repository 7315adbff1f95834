"""Stack files (`deployments/stacks/<name>.toml`) → frozen models.

A stack is one deployable thing, declared as data: its Terraform root (optional), the variables
it needs and which are secret, where its hosts come from, and what is installed on them. Adding
a stack is adding a TOML file; no Python changes.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployer.errors import ConfigError

STACKS_DIR = Path("deployments") / "stacks"
# A stack's name becomes a file name, a state key and a log name: nothing else may pass.
STACK_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


@dataclass(frozen=True)
class TerraformSpec:
    root: str  # directory relative to the project, e.g. "terraform/dashboard"
    # Resource types whose replacement or destruction is called out before apply.
    call_out: tuple[str, ...] = ()


@dataclass(frozen=True)
class Variables:
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    # Asked for once when interactive and missing from the env file (else required there), and
    # kept in deployments/secrets-ENV with the generated secrets: a domain, an e-mail.
    ask: tuple[str, ...] = ()


GENERATED_FORMATS = ("hex", "base64", "alnum", "laravel", "rsa-key", "x509")


@dataclass(frozen=True)
class Generated:
    """A secret deployer makes once into deployments/secrets-ENV and never regenerates:
    `hex`/`base64` of `length` random bytes, `alnum` of `length` characters, `laravel` the
    `base64:` key Laravel's APP_KEY is, `rsa-key` a 2048-bit RSA private key (PEM), `x509` a
    self-signed certificate (PEM) for `subject`, signed by the generated key named `key`."""

    name: str
    format: str
    length: int = 32
    key: str = ""  # x509: the rsa-key entry that signs it
    subject: str = ""  # x509: the common name (and DNS name) it is for


@dataclass(frozen=True)
class UsersSpec:
    """Existing servers: the first login is `bootstrap_user_variable`'s user (root, or a sudo
    user); deployer creates `deploy_user_variable`'s user with sudo and the operator's key, and
    every later phase logs in as it. `trust`: (from role, to role, to_variable): a key made on
    each `from` host is authorized on every `to` host, and SSH from one to the address in the
    env variable `to_variable` (the `to` host as the `from` host sees it) must then need no
    password."""

    bootstrap_user_variable: str
    deploy_user_variable: str
    trust: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class ProvisionDir:
    path: str  # absolute on the host
    owner: str = "root"  # a user name, or "deploy" for the deploy user
    mode: str = "0755"


@dataclass(frozen=True)
class ProvisionFile:
    """A file of the host's system: rendered from `template` (quoted per `format`) or copied from
    `source` as it is; a change reloads (or, without ExecReload, restarts) the units of `reload`."""

    path: str  # absolute on the host
    template: str = ""  # relative to the project
    source: str = ""  # relative to the project
    mode: str = "0644"
    owner: str = "root"
    format: str = "raw"
    reload: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProvisionUnit:
    name: str  # systemd unit name without `.service`
    template: str  # relative to the project
    start: bool = True  # enabled and started; False: installed only (the app's release starts it)


@dataclass(frozen=True)
class Provision:
    """What a role's hosts get from their OS before any release: packages (`name` or
    `name=version`), directories, system files and systemd units; each reported installed,
    changed or already present."""

    packages: tuple[str, ...] = ()
    dirs: tuple[ProvisionDir, ...] = ()
    files: tuple[ProvisionFile, ...] = ()
    units: tuple[ProvisionUnit, ...] = ()


@dataclass(frozen=True)
class Reach:
    """Pre-flight: every host of role `from_role` must open a TCP connection to the address in
    the env variable `to_variable`, on `port`."""

    from_role: str
    to_variable: str
    port: int = 22


@dataclass(frozen=True)
class DoctorSpec:
    """Pre-flight checks (`deploy doctor`, and first in every apply)."""

    min_free_mb: int = 1024
    disk_path: str = "/"
    os: tuple[str, ...] = ()  # "debian 12", "ubuntu 24.04": ID and VERSION_ID of os-release
    commands: tuple[str, ...] = ()  # needed on every host
    tools: tuple[str, ...] = ("ssh", "git")  # needed here
    max_clock_skew: float = 5.0
    reach: tuple[Reach, ...] = ()


@dataclass(frozen=True)
class UrlCheck:
    """Checked from this machine at the end of an apply (2xx), and printed as an access URL."""

    name: str
    url: str  # a template: env values and outputs, e.g. http://{{ observability_host }}:9090/-/healthy
    show: str = ""  # the access URL printed; empty: no access URL, only the check
    # https: trust only the certificate in this variable (one deployer generated; its name is
    # not the address's, so the chain is checked and the host name is not).
    ca_variable: str = ""


@dataclass(frozen=True)
class HostsSpec:
    source: str  # "terraform" (an output) or "env" (a variable in the env file)
    output: str = ""  # source=terraform: output holding one address or a list
    user_output: str = ""  # source=terraform: output holding the SSH user
    variable: str = ""  # source=env: variable holding `user@host[:port]` entries
    user: str = "ec2-user"
    port: int = 22
    gateway_variable: str = ""  # env variable naming a jump host `user@host[:port]`
    gateway_output: str = ""  # or a Terraform output naming it (a jump server the stack makes)
    gateway: str = ""  # set when hosts are resolved: the jump host, from one of the two above
    ready_marker: str = ""  # path relative to the remote $HOME; empty: no wait
    ready_timeout: float = 600.0
    parallel: int = 10


@dataclass(frozen=True)
class AppFile:
    template: str  # relative to the project
    path: str  # relative to the release directory
    secret: bool = False  # uploaded with mode 0600
    # How `{{ value }}` outputs are quoted (deployer/templates.py): env, toml, json, yaml, raw.
    format: str = "raw"


FILE_FORMATS = ("env", "toml", "json", "yaml", "raw")
_SUFFIX_FORMATS = {"env": "env", "toml": "toml", "json": "json", "yaml": "yaml", "yml": "yaml"}


def infer_format(template: str) -> str:
    """The format a template's name implies: its suffix before `.j2`, else "raw".

    >>> infer_format("deployments/templates/edge/edge.env.j2"), infer_format("a/.env.docker.j2")
    ('env', 'raw')
    """
    name = template.rsplit("/", 1)[-1].removesuffix(".j2")
    return _SUFFIX_FORMATS.get(name.rsplit(".", 1)[-1], "raw") if "." in name else "raw"


@dataclass(frozen=True)
class HealthCheck:
    name: str
    command: str = ""  # run on the host, in the release directory
    url: str = ""  # fetched on the host (curl or python3), e.g. http://127.0.0.1:8080/
    retries: int = 10
    interval: float = 2.0
    deadline: float = 60.0
    # "before_switch": the new release, before traffic moves; "after_switch": once current is the
    # new release (a failure switches back); "": as the app runs (a service app: after its start
    # from current; otherwise in the release directory before the switch).
    at: str = ""


# Lifecycle points a step runs at, in order (Capistrano's and Deployer's names); "on_failure"
# runs when any step or check of the deploy fails, before the previous release is restored.
STEP_POINTS = ("before_deploy", "build", "migrate", "before_switch", "after_switch", "on_failure")


@dataclass(frozen=True)
class Step:
    """A named command at a lifecycle point: on the host in the new release's directory (or, with
    `local`, on the deploying machine in the project), with DEPLOY_* in its environment; `once`
    runs it on one host of the role only (a migration)."""

    name: str
    at: str
    run: str
    local: bool = False
    once: bool = False


SERVICE_CHANGES = ("restart", "reload")


@dataclass(frozen=True)
class ServiceSpec:
    """A systemd unit a release runs or affects. With a `template` the unit is the release's own
    (rendered into it, installed, enabled); without one it belongs to the host (nginx, php-fpm)
    and a release only restarts or reloads it. `on_change`: what a new release does to it;
    "reload" is `systemctl reload-or-restart` (it starts a unit that is not running)."""

    name: str  # systemd unit name without `.service`
    template: str = ""  # unit file template, relative to the project
    # What runs the service on a host without a running systemd: "none" fails with a
    # clear message; "nohup" starts ExecStart under nohup with a pid file.
    fallback: str = "none"
    on_change: str = "restart"


@dataclass(frozen=True)
class AppSpec:
    repo_variable: str
    ref_variable: str
    root: str  # relative to the remote $HOME, or absolute
    install: str = "install.sh"  # relative to the release directory
    keep_releases: int = 5
    log_command: str = ""
    shared_paths: tuple[str, ...] = ()  # directories kept across releases (shared_dirs)
    files: tuple[AppFile, ...] = ()
    health: tuple[HealthCheck, ...] = ()
    services: tuple[ServiceSpec, ...] = ()  # in order: the release's own units, then the host's
    shared_files: tuple[str, ...] = ()  # files kept across releases, linked in as files
    steps: tuple[Step, ...] = ()
    # Completion markers the install writes under $HOME (a one-time setup, a bootstrap):
    # `status` shows each with its content.
    markers: tuple[str, ...] = ()

    def steps_at(self, point: str) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.at == point)


@dataclass(frozen=True)
class Role:
    """A set of hosts and the app they run (Kamal's role: configuration, not code)."""

    name: str
    hosts: HostsSpec
    app: str = ""  # a key of Stack.apps; "": the role's hosts get only their provisioning
    provision: Provision | None = None
    services: tuple[str, ...] = ()  # units that must be active at the end of an apply


@dataclass(frozen=True)
class Phase:
    """Roles installed together, after the previous phase has succeeded. `batch` (a number of
    hosts, or "25%") makes a rolling deploy; `canary` hosts go first, alone, and stop the phase
    when they fail; up to `max_fail_percentage` of a phase's hosts may fail before the run
    stops (Ansible's serial and max_fail_percentage, Kamal's boot.limit)."""

    name: str
    roles: tuple[str, ...]
    batch: str = ""  # "": every host of the phase at once (within each role's parallelism)
    canary: int = 0
    max_fail_percentage: float = 0.0


@dataclass(frozen=True)
class Stack:
    """A stack file. `hosts` and `app` are those of its one role (a legacy `[hosts]`/`[app]`
    file is one role named after the stack); a stack with several roles has them in `roles`,
    `apps` and `phases`, and `view(role)` gives each role as a one-role stack."""

    name: str
    path: Path
    description: str = ""
    terraform: TerraformSpec | None = None
    variables: Variables = field(default_factory=Variables)
    hosts: HostsSpec | None = None
    app: AppSpec | None = None
    roles: tuple[Role, ...] = ()
    phases: tuple[Phase, ...] = ()
    apps: Mapping[str, AppSpec] = field(default_factory=dict)
    role: str = ""  # set on a view: the role it is
    users: UsersSpec | None = None
    generate: tuple[Generated, ...] = ()
    doctor: DoctorSpec | None = None
    urls: tuple[UrlCheck, ...] = ()
    deploy_log: str = ""  # a directory on each host for its deployment log, e.g. /var/log/x-deploy

    def __post_init__(self) -> None:
        if self.hosts is not None and self.app is not None and not self.roles:
            # today's [hosts] + [app]: one role, named after the stack, in one phase
            object.__setattr__(self, "roles", (Role(self.name, self.hosts, self.name),))
            object.__setattr__(self, "apps", {self.name: self.app})
            object.__setattr__(self, "phases", (Phase("deploy", (self.name,)),))

    @property
    def secret_names(self) -> frozenset[str]:
        return frozenset(self.variables.secrets) | {g.name for g in self.generate}

    @property
    def kept_names(self) -> tuple[str, ...]:
        """What deployments/secrets-ENV holds: generated secrets, then the asked values."""
        return (*(g.name for g in self.generate), *self.variables.ask)

    def role_of(self, name: str) -> Role:
        found = next((r for r in self.roles if r.name == name), None)
        if found is None:
            raise ConfigError(f"stack {self.name} has no role {name!r} (roles:"
                              f" {', '.join(r.name for r in self.roles) or 'none'})")
        return found

    def view(self, role: str) -> Stack:
        """This stack as seen by one role: its hosts and its app, in `hosts` and `app`."""
        found = self.role_of(role)
        return dataclasses.replace(self, hosts=found.hosts, app=self.apps.get(found.app),
                                   role=role)

    def views(self) -> tuple[Stack, ...]:
        """Every role as a one-role stack, in phase order."""
        return tuple(self.view(r) for phase in self.phases for r in phase.roles)


def stack_names(project: Path) -> list[str]:
    return sorted(p.stem for p in (project / STACKS_DIR).glob("*.toml"))


def load_stack(project: Path, name: str) -> Stack:
    """Load `deployments/stacks/<name>.toml`; an unknown name lists the stacks that exist."""
    known = ", ".join(stack_names(project)) or "none"
    if not STACK_NAME.fullmatch(name):
        raise ConfigError(f"stack {_shown(name)} is not a stack name (lowercase letters, digits,"
                          f" '-' and '_', at most 64); stacks: {known}")
    path = project / STACKS_DIR / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown stack {name!r} (no {path}); stacks: {known}")
    text = read_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}:{_toml_line(exc)}: {str(exc).split(' (at ')[0]}") from None
    return parse_stack(name, path, data)


def read_text(path: Path) -> str:
    """A UTF-8 text file, or a ConfigError naming the file (and the line of a bad byte)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x});"
                          " save the file as UTF-8") from None


def _toml_line(exc: tomllib.TOMLDecodeError) -> int:
    match = re.search(r"at line (\d+)", str(exc))
    return int(match[1]) if match else 1


def _shown(text: str, limit: int = 40) -> str:
    """A user's value quoted for a message, cut short: a 300-character name is not echoed."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def parse_stack(name: str, path: Path, data: dict[str, Any]) -> Stack:
    reader = _Reader(path)
    top = reader.table(data, "", {"description", "terraform", "variables", "hosts", "app",
                                  "roles", "apps", "phases", "users", "generate", "doctor", "urls",
                                  "deploy_log"})
    terraform = None
    if "terraform" in top:
        t = reader.table(top["terraform"], "terraform", {"root", "call_out"})
        terraform = TerraformSpec(
            root=reader.string(t, "terraform.root", required=True),
            call_out=reader.strings(t, "terraform.call_out"),
        )
    v = reader.table(top.get("variables", {}), "variables",
                     {"required", "optional", "secrets", "ask"})
    variables = Variables(
        required=reader.strings(v, "variables.required"),
        optional=reader.strings(v, "variables.optional"),
        secrets=reader.strings(v, "variables.secrets"),
        ask=reader.strings(v, "variables.ask"),
    )
    legacy = {"hosts", "app"} & set(top)
    modern = {"roles", "apps", "phases"} & set(top)
    if legacy and modern:
        reader.problem(f"{' and '.join(sorted(legacy))} cannot be mixed with"
                       f" {' and '.join(sorted(modern))}: use [roles.*] and [apps.*]")
    hosts = _hosts(reader, top["hosts"]) if "hosts" in top else None
    app = _app(reader, top["app"]) if "app" in top else None
    roles: tuple[Role, ...] = ()
    apps: dict[str, AppSpec] = {}
    phases: tuple[Phase, ...] = ()
    if modern:
        apps = {key: _app(reader, raw, f"apps.{key}")
                for key, raw in _named_tables(reader, top.get("apps", {}), "apps").items()}
        roles = tuple(_role(reader, key, raw, apps)
                      for key, raw in _named_tables(reader, top.get("roles", {}), "roles").items())
        phases = _phases(reader, top.get("phases"), roles)
        if len(roles) == 1:
            hosts, app = roles[0].hosts, apps.get(roles[0].app)
    deploy_log = reader.string(top, "deploy_log")
    if deploy_log and not _is_system_path(deploy_log):
        reader.problem(f"deploy_log {_shown(deploy_log)} must be an absolute path of letters,"
                       " digits and . _ - / (no '..')")
    stack = Stack(name, path, str(top.get("description", "")), terraform, variables, hosts, app,
                  roles, phases, apps, users=_users(reader, top.get("users")),
                  generate=_generate(reader, top.get("generate", [])),
                  doctor=_doctor(reader, top["doctor"]) if "doctor" in top else None,
                  urls=tuple(UrlCheck(reader.string(u, f"urls[{i}].name", required=True),
                                      reader.string(u, f"urls[{i}].url", required=True),
                                      reader.string(u, f"urls[{i}].show"),
                                      reader.string(u, f"urls[{i}].ca_variable"))
                             for i, u in enumerate(reader.tables(top, "urls", "", {
                                 "name", "url", "show", "ca_variable"}))),
                  deploy_log=deploy_log)
    reader.check_references(stack, legacy=bool(legacy) and not modern)
    reader.raise_problems()
    return stack


NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")  # role, app and phase names: they reach paths


def _named_tables(reader: _Reader, raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        reader.problem(f"{where} must be a table of tables ([{where}.NAME])")
        return {}
    for key in raw:
        if not NAME.fullmatch(key):
            reader.problem(f"{where}.{key}: a name is lowercase letters, digits, '-' and '_'")
    return {k: v for k, v in raw.items() if NAME.fullmatch(k)}


SYSTEM_PATH = re.compile(r"/[A-Za-z0-9._@+/-]*")  # a path on a host's system: no shell, no '..'
USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
UNIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")
PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]*(=[A-Za-z0-9.+~:*-]+)?")  # Debian's names; `=version`
MODE = re.compile(r"0?[0-7]{3}")


def _is_system_path(path: str) -> bool:
    return bool(SYSTEM_PATH.fullmatch(path)) and ".." not in path.split("/")


def _role(reader: _Reader, name: str, raw: Any, apps: Mapping[str, AppSpec]) -> Role:
    prefix = f"roles.{name}"
    own = {"app", "provision", "services"}
    table = reader.table(raw, prefix, {*own, *HostsSpec.__dataclass_fields__} - {"gateway"})
    app = reader.string(table, f"{prefix}.app")
    if app and app not in apps:
        reader.problem(f"{prefix}.app names {app!r}, which is not an [apps.*] table"
                       f" (apps: {', '.join(apps) or 'none'})")
    provision = _provision(reader, table["provision"], f"{prefix}.provision") \
        if "provision" in table else None
    if not app and provision is None:
        reader.problem(f"{prefix} needs an app (app = \"NAME\" of an [apps.*] table), a"
                       f" [{prefix}.provision], or both")
    services = reader.strings(table, f"{prefix}.services")
    for unit in services:
        if not UNIT_NAME.fullmatch(unit):
            reader.problem(f"{prefix}.services: {_shown(unit)} is not a systemd unit name")
    hosts = _hosts(reader, {k: v for k, v in table.items() if k not in own}, prefix)
    return Role(name, hosts, app, provision, services)


def _provision(reader: _Reader, raw: Any, prefix: str) -> Provision:
    table = reader.table(raw, prefix, {"packages", "dirs", "files", "units"})
    packages = reader.strings(table, f"{prefix}.packages")
    for package in packages:
        if not PACKAGE.fullmatch(package):
            reader.problem(f"{prefix}.packages: {_shown(package)} is not a Debian package name"
                           " (optionally name=version)")

    def owner_and_mode(t: dict[str, Any], where: str, mode: str) -> tuple[str, str]:
        owner = reader.string(t, f"{where}.owner") or "root"
        got = reader.string(t, f"{where}.mode") or mode
        if not USER_NAME.fullmatch(owner):
            reader.problem(f"{where}.owner {_shown(owner)} is not a user name (or \"deploy\")")
        if not MODE.fullmatch(got):
            reader.problem(f"{where}.mode {_shown(got)} must be an octal mode such as \"0644\"")
        return owner, got

    def system_path(t: dict[str, Any], where: str) -> str:
        path = reader.string(t, f"{where}.path", required=True)
        if path and not _is_system_path(path):
            reader.problem(f"{where}.path {_shown(path)} must be an absolute path of letters,"
                           " digits and . _ - @ + / (no '..')")
        return path

    dirs = []
    for i, d in enumerate(reader.tables(table, "dirs", prefix, {"path", "owner", "mode"})):
        where = f"{prefix}.dirs[{i}]"
        dirs.append(ProvisionDir(system_path(d, where), *owner_and_mode(d, where, "0755")))
    files = []
    for i, f in enumerate(reader.tables(table, "files", prefix, {
            "path", "template", "source", "mode", "owner", "format", "reload"})):
        where = f"{prefix}.files[{i}]"
        template, source = reader.string(f, f"{where}.template"), reader.string(f, f"{where}.source")
        if bool(template) == bool(source):
            reader.problem(f"{where} needs exactly one of 'template' or 'source'")
        fmt = reader.string(f, f"{where}.format") or (infer_format(template) if template else "raw")
        if fmt not in FILE_FORMATS:
            reader.problem(f"{where}.format must be one of {', '.join(FILE_FORMATS)}, not {fmt!r}")
        reload = reader.strings(f, f"{where}.reload")
        for unit in reload:
            if not UNIT_NAME.fullmatch(unit):
                reader.problem(f"{where}.reload: {_shown(unit)} is not a systemd unit name")
        owner, mode = owner_and_mode(f, where, "0644")
        files.append(ProvisionFile(system_path(f, where), template, source, mode=mode,
                                   owner=owner, format=fmt, reload=reload))
    units = []
    for i, u in enumerate(reader.tables(table, "units", prefix, {"name", "template", "start"})):
        where = f"{prefix}.units[{i}]"
        unit = ProvisionUnit(reader.string(u, f"{where}.name", required=True),
                             reader.string(u, f"{where}.template", required=True),
                             u.get("start", True) is not False)
        if unit.name and not UNIT_NAME.fullmatch(unit.name):
            reader.problem(f"{where}.name {_shown(unit.name)} is not a systemd unit name")
        units.append(unit)
    return Provision(packages, tuple(dirs), tuple(files), tuple(units))


def _services(reader: _Reader, a: dict[str, Any], prefix: str) -> tuple[ServiceSpec, ...]:
    """`[app.service]` (one unit) or `[[app.services]]` (several), never both."""
    keys = {"name", "template", "fallback", "on_change"}
    if "service" in a and "services" in a:
        reader.problem(f"{prefix}: declare either {prefix}.service or [[{prefix}.services]], not both")
    raw = ([(f"{prefix}.service", reader.table(a["service"], f"{prefix}.service", keys))]
           if "service" in a else [])
    raw += [(f"{prefix}.services[{i}]", t) for i, t in enumerate(reader.tables(a, "services", prefix, keys))]
    services = []
    for where, t in raw:
        service = ServiceSpec(name=reader.string(t, f"{where}.name", required=True),
                              template=reader.string(t, f"{where}.template"),
                              fallback=reader.string(t, f"{where}.fallback") or "none",
                              on_change=reader.string(t, f"{where}.on_change") or "restart")
        if service.name and not UNIT_NAME.fullmatch(service.name):
            reader.problem(f"{where}.name {_shown(service.name)} is not a systemd unit name")
        if service.fallback not in ("none", "nohup"):
            reader.problem(f"{where}.fallback must be 'none' or 'nohup', not {service.fallback!r}")
        if service.fallback == "nohup" and not service.template:
            reader.problem(f"{where}.fallback = 'nohup' needs a template (its ExecStart is what runs)")
        if service.on_change not in SERVICE_CHANGES:
            reader.problem(f"{where}.on_change must be 'restart' or 'reload', not {service.on_change!r}")
        services.append(service)
    names = [s.name for s in services]
    for name in sorted({n for n in names if names.count(n) > 1}):
        reader.problem(f"{prefix}.services: {name!r} is declared twice")
    return tuple(services)


def _users(reader: _Reader, raw: Any) -> UsersSpec | None:
    if raw is None:
        return None
    table = reader.table(raw, "users", {"bootstrap_user_variable", "deploy_user_variable", "trust"})
    trust = []
    for i, t in enumerate(reader.tables(table, "trust", "users", {"from", "to", "to_variable"})):
        trust.append((reader.string(t, f"users.trust[{i}].from", required=True),
                      reader.string(t, f"users.trust[{i}].to", required=True),
                      reader.string(t, f"users.trust[{i}].to_variable", required=True)))
    return UsersSpec(reader.string(table, "users.bootstrap_user_variable", required=True),
                     reader.string(table, "users.deploy_user_variable", required=True),
                     tuple(trust))


def _generate(reader: _Reader, raw: Any) -> tuple[Generated, ...]:
    found = []
    for i, g in enumerate(reader.tables({"generate": raw}, "generate", "",
                                        {"name", "format", "length", "key", "subject"})):
        where = f"generate[{i}]"
        item = Generated(reader.string(g, f"{where}.name", required=True),
                         reader.string(g, f"{where}.format") or "hex",
                         reader.number(g, f"{where}.length", int, 32, low=16, high=256),
                         reader.string(g, f"{where}.key"), reader.string(g, f"{where}.subject"))
        earlier = {f.name: f.format for f in found}
        if item.format == "x509" and earlier.get(item.key) != "rsa-key":
            reader.problem(f"{where}.key must name an earlier [[generate]] entry of format"
                           f" 'rsa-key', not {item.key!r}")
        if item.format == "x509" and not re.fullmatch(r"[A-Za-z0-9*][A-Za-z0-9.*-]{0,62}", item.subject):
            reader.problem(f"{where}.subject must be a host name (the certificate's common name)")
        if item.format not in GENERATED_FORMATS:
            reader.problem(f"{where}.format must be one of {', '.join(GENERATED_FORMATS)},"
                           f" not {item.format!r}")
        if item.name and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", item.name):
            reader.problem(f"{where}.name {_shown(item.name)} is not a variable name")
        found.append(item)
    return tuple(found)


def _doctor(reader: _Reader, raw: Any) -> DoctorSpec:
    table = reader.table(raw, "doctor", {"min_free_mb", "disk_path", "os", "commands", "tools",
                                          "max_clock_skew", "reach"})
    reach = tuple(
        Reach(reader.string(r, f"doctor.reach[{i}].from", required=True),
              reader.string(r, f"doctor.reach[{i}].to_variable", required=True),
              reader.number(r, f"doctor.reach[{i}].port", int, 22, low=1, high=65535))
        for i, r in enumerate(reader.tables(table, "reach", "doctor", {"from", "to_variable", "port"})))
    for name in (*reader.strings(table, "doctor.commands"), *reader.strings(table, "doctor.tools")):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", name):
            reader.problem(f"doctor: {_shown(name)} is not a command name")
    disk_path = reader.string(table, "doctor.disk_path") or "/"
    if not _is_system_path(disk_path):
        reader.problem(f"doctor.disk_path {_shown(disk_path)} must be an absolute path")
    return DoctorSpec(
        min_free_mb=reader.number(table, "doctor.min_free_mb", int, 1024, low=0),
        disk_path=disk_path,
        os=reader.strings(table, "doctor.os"),
        commands=reader.strings(table, "doctor.commands"),
        tools=reader.strings(table, "doctor.tools") if "tools" in table else ("ssh", "git"),
        max_clock_skew=reader.number(table, "doctor.max_clock_skew", float, 5.0, low=0),
        reach=reach,
    )


def _phases(reader: _Reader, raw: Any, roles: tuple[Role, ...]) -> tuple[Phase, ...]:
    """[[phases]] in order; without them, one phase with every role."""
    names = [r.name for r in roles]
    if raw is None:
        return (Phase("deploy", tuple(names)),) if names else ()
    phases = []
    for i, table in enumerate(reader.tables({"phases": raw}, "phases", "", {
            "name", "roles", "batch", "canary", "max_fail_percentage"})):
        where = f"phases[{i}]"
        batch = table.get("batch", "")
        if isinstance(batch, bool) or not isinstance(batch, int | str) or \
                (isinstance(batch, int) and batch < 1) or \
                (isinstance(batch, str) and batch and not re.fullmatch(r"([1-9]\d?|100)%", batch)):
            reader.problem(f"{where}.batch must be a number of hosts (1 or more) or a percentage"
                           " such as \"25%\"")
            batch = ""
        phases.append(Phase(
            name=reader.string(table, f"{where}.name") or f"phase {i + 1}",
            roles=reader.strings(table, f"{where}.roles"),
            batch=str(batch),
            canary=reader.number(table, f"{where}.canary", int, 0, low=0),
            max_fail_percentage=reader.number(table, f"{where}.max_fail_percentage", float, 0.0,
                                              low=0, high=100),
        ))
    placed = [r for p in phases for r in p.roles]
    for name in sorted(set(placed) - set(names)):
        reader.problem(f"phases name the role {name!r}, which is not a [roles.*] table")
    for name in names:
        if placed.count(name) != 1:
            reader.problem(f"role {name!r} must be in exactly one phase (it is in {placed.count(name)})")
    return tuple(phases)


def _hosts(reader: _Reader, raw: Any, prefix: str = "hosts") -> HostsSpec:
    h = reader.table(raw, prefix, {f.name for f in HostsSpec.__dataclass_fields__.values()} - {"gateway"})
    spec = HostsSpec(
        source=reader.string(h, f"{prefix}.source", required=True),
        output=reader.string(h, f"{prefix}.output"),
        user_output=reader.string(h, f"{prefix}.user_output"),
        variable=reader.string(h, f"{prefix}.variable"),
        user=reader.string(h, f"{prefix}.user") or "ec2-user",
        port=reader.number(h, f"{prefix}.port", int, 22, low=1, high=65535),
        gateway_variable=reader.string(h, f"{prefix}.gateway_variable"),
        gateway_output=reader.string(h, f"{prefix}.gateway_output"),
        ready_marker=reader.string(h, f"{prefix}.ready_marker"),
        ready_timeout=reader.number(h, f"{prefix}.ready_timeout", float, 600.0, low=0),
        parallel=reader.number(h, f"{prefix}.parallel", int, 10, low=1, high=256),
    )
    if spec.source not in ("terraform", "env"):
        reader.problem(f"{prefix}.source must be 'terraform' or 'env', not {spec.source!r}")
    elif spec.source == "terraform" and not spec.output:
        reader.problem(f"{prefix}.output is required when {prefix}.source = 'terraform'")
    elif spec.source == "env" and not spec.variable:
        reader.problem(f"{prefix}.variable is required when {prefix}.source = 'env'")
    return spec


def _app(reader: _Reader, raw: Any, prefix: str = "app") -> AppSpec:
    keys = {"repo_variable", "ref_variable", "root", "install", "keep_releases", "log_command",
            "shared_paths", "shared_dirs", "shared_files", "files", "health", "service", "services", "steps",
            "markers"}
    a = reader.table(raw, prefix, keys)
    files = tuple(
        AppFile(
            template=reader.string(f, f"{prefix}.files[{i}].template", required=True),
            path=reader.string(f, f"{prefix}.files[{i}].path", required=True),
            secret=reader.flag(f, f"{prefix}.files[{i}].secret"),
            format=(reader.string(f, f"{prefix}.files[{i}].format")
                    or infer_format(reader.string(f, f"{prefix}.files[{i}].template"))),
        )
        for i, f in enumerate(reader.tables(a, "files", prefix, {"template", "path", "secret", "format"}))
    )
    for i, file in enumerate(files):
        if file.format not in FILE_FORMATS:
            reader.problem(f"{prefix}.files[{i}].format must be one of {', '.join(FILE_FORMATS)},"
                           f" not {file.format!r}")
    health = tuple(
        HealthCheck(
            name=reader.string(c, f"{prefix}.health[{i}].name", required=True),
            command=reader.string(c, f"{prefix}.health[{i}].command"),
            url=reader.string(c, f"{prefix}.health[{i}].url"),
            retries=reader.number(c, f"{prefix}.health[{i}].retries", int, 10, low=1),
            interval=reader.number(c, f"{prefix}.health[{i}].interval", float, 2.0, low=0),
            deadline=reader.number(c, f"{prefix}.health[{i}].deadline", float, 60.0, low=0),
            at=reader.string(c, f"{prefix}.health[{i}].at"),
        )
        for i, c in enumerate(reader.tables(a, "health", prefix, {
            "name", "command", "url", "retries", "interval", "deadline", "at"}))
    )
    for i, check in enumerate(health):
        if check.at not in ("", "before_switch", "after_switch"):
            reader.problem(f"{prefix}.health[{i}].at must be 'before_switch' or 'after_switch',"
                           f" not {check.at!r}")
    steps = tuple(
        Step(name=reader.string(t, f"{prefix}.steps[{i}].name", required=True),
             at=reader.string(t, f"{prefix}.steps[{i}].at", required=True),
             run=reader.string(t, f"{prefix}.steps[{i}].run", required=True),
             local=reader.flag(t, f"{prefix}.steps[{i}].local"),
             once=reader.flag(t, f"{prefix}.steps[{i}].once"))
        for i, t in enumerate(reader.tables(a, "steps", prefix, {"name", "at", "run", "local", "once"}))
    )
    for i, step in enumerate(steps):
        if step.at and step.at not in STEP_POINTS:
            reader.problem(f"{prefix}.steps[{i}].at must be one of {', '.join(STEP_POINTS)},"
                           f" not {step.at!r}")
    shared_dirs = reader.strings(a, f"{prefix}.shared_dirs") + reader.strings(a, f"{prefix}.shared_paths")
    shared_files = reader.strings(a, f"{prefix}.shared_files")
    for where, paths in (("shared_dirs", shared_dirs), ("shared_files", shared_files)):
        for p in paths:
            if not p or p.startswith("/") or ".." in p.split("/") or "\0" in p:
                reader.problem(f"{prefix}.{where}: {p!r} must be a path inside the release")
    for i, check in enumerate(health):
        if bool(check.command) == bool(check.url):
            reader.problem(f"{prefix}.health[{i}] needs exactly one of 'command' or 'url'")
    services = _services(reader, a, prefix)
    markers = reader.strings(a, f"{prefix}.markers")
    for marker in markers:
        if not re.fullmatch(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*", marker) or ".." in marker.split("/"):
            reader.problem(f"{prefix}.markers: {_shown(marker)} must be a path under $HOME"
                           " (letters, digits, . _ - /; no '..')")
    keep = reader.number(a, f"{prefix}.keep_releases", int, 5, low=1)
    return AppSpec(
        repo_variable=reader.string(a, f"{prefix}.repo_variable", required=True),
        ref_variable=reader.string(a, f"{prefix}.ref_variable", required=True),
        root=reader.string(a, f"{prefix}.root", required=True),
        install=reader.string(a, f"{prefix}.install") or "install.sh",
        keep_releases=keep,
        log_command=reader.string(a, f"{prefix}.log_command"),
        markers=markers,
        shared_paths=shared_dirs,
        files=files,
        health=health,
        services=services,
        shared_files=shared_files,
        steps=steps,
    )


class _Reader:
    """Collects every problem in one stack file so the user sees them all at once."""

    def __init__(self, path: Path):
        self.path = path
        self.problems: list[str] = []

    def problem(self, text: str) -> None:
        self.problems.append(f"{self.path}: {text}")

    def raise_problems(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)

    def table(self, raw: Any, where: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(raw, dict):
            self.problem(f"{where or 'top level'} must be a table")
            return {}
        for key in sorted(set(raw) - allowed):
            self.problem(f"unknown key {'.'.join(filter(None, [where, key]))!r}")
        return raw

    def tables(self, parent: dict[str, Any], key: str, prefix: str, allowed: set[str],
               ) -> list[dict[str, Any]]:
        raw = parent.get(key, [])
        if not isinstance(raw, list):
            self.problem(f"{prefix}.{key} must be an array of tables ([[{prefix}.{key}]])")
            return []
        return [self.table(item, f"{prefix}.{key}[{i}]", allowed) for i, item in enumerate(raw)]

    def string(self, table: dict[str, Any], where: str, *, required: bool = False) -> str:
        value = table.get(where.rsplit(".", 1)[-1])
        if value is None:
            if required:
                self.problem(f"{where} is required")
            return ""
        if not isinstance(value, str):
            self.problem(f"{where} must be a string")
            return ""
        return value

    def number(self, table: dict[str, Any], where: str, kind: type, default: Any, *,
               low: float | None = None, high: float | None = None) -> Any:
        """An integer (or, for kind=float, any number) within [low, high]; the default otherwise."""
        value = table.get(where.rsplit(".", 1)[-1], default)
        allowed = (int,) if kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, allowed):
            self.problem(f"{where} must be {'a whole number' if kind is int else 'a number'},"
                         f" not {type(value).__name__} {_shown(str(value))}")
            return default
        if low is not None and value < low:
            self.problem(f"{where} must be at least {low:g}")
            return default
        if high is not None and value > high:
            self.problem(f"{where} must be at most {high:g}")
            return default
        return kind(value)

    def flag(self, table: dict[str, Any], where: str) -> bool:
        value = table.get(where.rsplit(".", 1)[-1], False)
        if not isinstance(value, bool):
            self.problem(f"{where} must be true or false")
            return False
        return value

    def strings(self, table: dict[str, Any], where: str) -> tuple[str, ...]:
        value = table.get(where.rsplit(".", 1)[-1], [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(f"{where} must be a list of strings")
            return ()
        return tuple(value)

    def check_references(self, stack: Stack, *, legacy: bool) -> None:
        declared = set(stack.variables.required) | set(stack.variables.optional)
        for name in stack.variables.secrets:
            if name not in declared:
                self.problem(f"variables.secrets names {name!r}, which is neither required nor optional")
        referenced = []
        for role in stack.roles:
            where = "hosts" if legacy else f"roles.{role.name}"
            referenced += [(f"{where}.variable", role.hosts.variable),
                           (f"{where}.gateway_variable", role.hosts.gateway_variable)]
        for key, app in stack.apps.items():
            where = "app" if legacy else f"apps.{key}"
            referenced += [(f"{where}.repo_variable", app.repo_variable),
                           (f"{where}.ref_variable", app.ref_variable)]
        users = stack.users
        if users is not None:
            referenced += [("users.bootstrap_user_variable", users.bootstrap_user_variable),
                           ("users.deploy_user_variable", users.deploy_user_variable)]
        roles = {r.name for r in stack.roles}
        for i, (a, b, address) in enumerate(users.trust if users else ()):
            for role in (a, b):
                if role and role not in roles:
                    self.problem(f"users.trust[{i}] names the role {role!r}, which is not a [roles.*] table")
            referenced.append((f"users.trust[{i}].to_variable", address))
        for i, reach in enumerate(stack.doctor.reach if stack.doctor else ()):
            if reach.from_role and reach.from_role not in roles:
                self.problem(f"doctor.reach[{i}].from names the role {reach.from_role!r}, which is"
                             " not a [roles.*] table")
            referenced.append((f"doctor.reach[{i}].to_variable", reach.to_variable))
        kept = stack.kept_names
        for name in sorted({n for n in kept if kept.count(n) > 1} | (set(kept) & declared)):
            self.problem(f"{name!r} is both generated or asked for and declared elsewhere: one"
                         " place only (secrets-ENV holds generated and asked values)")
        for where, name in referenced:
            if name and name not in declared:
                self.problem(f"{where} names {name!r}, which is not declared in [variables]")
