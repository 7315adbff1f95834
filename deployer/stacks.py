"""Stack files (`deployments/stacks/<name>.toml`) → frozen models.

A stack is one deployable thing, declared as data: its Terraform root (optional), the variables
it needs and which are secret, where its hosts come from, and what is installed on them. Adding
a stack is adding a TOML file; no Python changes.
"""

from __future__ import annotations

import re
import tomllib
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


@dataclass(frozen=True)
class HostsSpec:
    source: str  # "terraform" (an output) or "env" (a variable in the env file)
    output: str = ""  # source=terraform: output holding one address or a list
    user_output: str = ""  # source=terraform: output holding the SSH user
    variable: str = ""  # source=env: variable holding `user@host[:port]` entries
    user: str = "ec2-user"
    port: int = 22
    gateway_variable: str = ""  # env variable naming a jump host `user@host[:port]`
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


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # systemd unit name without `.service`
    template: str  # unit file template, relative to the project
    # What runs the service on a host without a running systemd: "none" fails with a
    # clear message; "nohup" starts ExecStart under nohup with a pid file.
    fallback: str = "none"


@dataclass(frozen=True)
class AppSpec:
    repo_variable: str
    ref_variable: str
    root: str  # relative to the remote $HOME, or absolute
    install: str = "install.sh"  # relative to the release directory
    keep_releases: int = 5
    log_command: str = ""
    shared_paths: tuple[str, ...] = ()
    files: tuple[AppFile, ...] = ()
    health: tuple[HealthCheck, ...] = ()
    service: ServiceSpec | None = None


@dataclass(frozen=True)
class Stack:
    name: str
    path: Path
    description: str = ""
    terraform: TerraformSpec | None = None
    variables: Variables = field(default_factory=Variables)
    hosts: HostsSpec | None = None
    app: AppSpec | None = None

    @property
    def secret_names(self) -> frozenset[str]:
        return frozenset(self.variables.secrets)


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
    top = reader.table(data, "", {"description", "terraform", "variables", "hosts", "app"})
    terraform = None
    if "terraform" in top:
        t = reader.table(top["terraform"], "terraform", {"root", "call_out"})
        terraform = TerraformSpec(
            root=reader.string(t, "terraform.root", required=True),
            call_out=reader.strings(t, "terraform.call_out"),
        )
    v = reader.table(top.get("variables", {}), "variables", {"required", "optional", "secrets"})
    variables = Variables(
        required=reader.strings(v, "variables.required"),
        optional=reader.strings(v, "variables.optional"),
        secrets=reader.strings(v, "variables.secrets"),
    )
    hosts = _hosts(reader, top["hosts"]) if "hosts" in top else None
    app = _app(reader, top["app"]) if "app" in top else None
    stack = Stack(name, path, str(top.get("description", "")), terraform, variables, hosts, app)
    reader.check_references(stack)
    reader.raise_problems()
    return stack


def _hosts(reader: _Reader, raw: Any) -> HostsSpec:
    h = reader.table(raw, "hosts", {f.name for f in HostsSpec.__dataclass_fields__.values()})
    spec = HostsSpec(
        source=reader.string(h, "hosts.source", required=True),
        output=reader.string(h, "hosts.output"),
        user_output=reader.string(h, "hosts.user_output"),
        variable=reader.string(h, "hosts.variable"),
        user=reader.string(h, "hosts.user") or "ec2-user",
        port=reader.number(h, "hosts.port", int, 22, low=1, high=65535),
        gateway_variable=reader.string(h, "hosts.gateway_variable"),
        ready_marker=reader.string(h, "hosts.ready_marker"),
        ready_timeout=reader.number(h, "hosts.ready_timeout", float, 600.0, low=0),
        parallel=reader.number(h, "hosts.parallel", int, 10, low=1, high=256),
    )
    if spec.source not in ("terraform", "env"):
        reader.problem(f"hosts.source must be 'terraform' or 'env', not {spec.source!r}")
    elif spec.source == "terraform" and not spec.output:
        reader.problem("hosts.output is required when hosts.source = 'terraform'")
    elif spec.source == "env" and not spec.variable:
        reader.problem("hosts.variable is required when hosts.source = 'env'")
    return spec


def _app(reader: _Reader, raw: Any) -> AppSpec:
    keys = {"repo_variable", "ref_variable", "root", "install", "keep_releases", "log_command",
            "shared_paths", "files", "health", "service"}
    a = reader.table(raw, "app", keys)
    files = tuple(
        AppFile(
            template=reader.string(f, f"app.files[{i}].template", required=True),
            path=reader.string(f, f"app.files[{i}].path", required=True),
            secret=reader.flag(f, f"app.files[{i}].secret"),
            format=(reader.string(f, f"app.files[{i}].format")
                    or infer_format(reader.string(f, f"app.files[{i}].template"))),
        )
        for i, f in enumerate(reader.tables(a, "files", {"template", "path", "secret", "format"}))
    )
    for i, file in enumerate(files):
        if file.format not in FILE_FORMATS:
            reader.problem(f"app.files[{i}].format must be one of {', '.join(FILE_FORMATS)},"
                           f" not {file.format!r}")
    health = tuple(
        HealthCheck(
            name=reader.string(c, f"app.health[{i}].name", required=True),
            command=reader.string(c, f"app.health[{i}].command"),
            url=reader.string(c, f"app.health[{i}].url"),
            retries=reader.number(c, f"app.health[{i}].retries", int, 10, low=1),
            interval=reader.number(c, f"app.health[{i}].interval", float, 2.0, low=0),
            deadline=reader.number(c, f"app.health[{i}].deadline", float, 60.0, low=0),
        )
        for i, c in enumerate(
            reader.tables(a, "health", {"name", "command", "url", "retries", "interval", "deadline"})
        )
    )
    for i, check in enumerate(health):
        if bool(check.command) == bool(check.url):
            reader.problem(f"app.health[{i}] needs exactly one of 'command' or 'url'")
    service = None
    if "service" in a:
        s = reader.table(a["service"], "app.service", {"name", "template", "fallback"})
        service = ServiceSpec(
            name=reader.string(s, "app.service.name", required=True),
            template=reader.string(s, "app.service.template", required=True),
            fallback=reader.string(s, "app.service.fallback") or "none",
        )
        if service.fallback not in ("none", "nohup"):
            reader.problem(f"app.service.fallback must be 'none' or 'nohup', not {service.fallback!r}")
    keep = reader.number(a, "app.keep_releases", int, 5, low=1)
    return AppSpec(
        repo_variable=reader.string(a, "app.repo_variable", required=True),
        ref_variable=reader.string(a, "app.ref_variable", required=True),
        root=reader.string(a, "app.root", required=True),
        install=reader.string(a, "app.install") or "install.sh",
        keep_releases=keep,
        log_command=reader.string(a, "app.log_command"),
        shared_paths=reader.strings(a, "app.shared_paths"),
        files=files,
        health=health,
        service=service,
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

    def tables(self, parent: dict[str, Any], key: str, allowed: set[str]) -> list[dict[str, Any]]:
        raw = parent.get(key, [])
        if not isinstance(raw, list):
            self.problem(f"app.{key} must be an array of tables ([[app.{key}]])")
            return []
        return [self.table(item, f"app.{key}[{i}]", allowed) for i, item in enumerate(raw)]

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

    def check_references(self, stack: Stack) -> None:
        declared = set(stack.variables.required) | set(stack.variables.optional)
        for name in stack.variables.secrets:
            if name not in declared:
                self.problem(f"variables.secrets names {name!r}, which is neither required nor optional")
        referenced = []
        if stack.hosts:
            referenced += [("hosts.variable", stack.hosts.variable),
                           ("hosts.gateway_variable", stack.hosts.gateway_variable)]
        if stack.app:
            referenced += [("app.repo_variable", stack.app.repo_variable),
                           ("app.ref_variable", stack.app.ref_variable)]
        for where, name in referenced:
            if name and name not in declared:
                self.problem(f"{where} names {name!r}, which is not declared in [variables]")
