"""Environment files and operator settings → frozen config objects.

`deployments/env-<ENV>` holds one environment's variables (gitignored; see
`deployments/env.template`). `TF_VAR_*` entries go to the engine, the rest are application
variables. The project's `.env` holds operator settings (AWS profile and region, engine choice,
SSH key); the process environment wins over it.
"""

from __future__ import annotations

import io
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from dotenv.parser import parse_stream

from deployer.errors import ConfigError
from deployer.secrets import MIN_MASKED_LENGTH, Masker, is_secret_name
from deployer.stacks import Stack, read_text

DEPLOYMENTS_DIR = Path("deployments")
TF_VAR_PREFIX = "TF_VAR_"
ENGINE_CHOICES = ("auto", "tofu", "terraform", "embedded")
# Environments whose destruction must be confirmed by typing the environment's name.
PROTECTED_ENVIRONMENTS = frozenset({"prod", "production"})
# An environment's name becomes a file name, a state key and a log name: nothing else may pass.
ENV_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
# The environment variables an operator's secrets may live in; masked everywhere.
_SECRET_ENVIRON = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@dataclass(frozen=True)
class Settings:
    """Operator settings: where and how to run, not what to deploy."""

    project: Path
    environ: Mapping[str, str]  # process environment with `.env` filled in underneath
    aws_profile: str
    aws_region: str
    aws_endpoint_url: str  # empty for AWS itself; set for the sandbox or another endpoint
    engine: str
    ssh_key: str
    provider_mirror: str  # a Terraform filesystem mirror for offline `init`; empty: registry
    state_bucket: str
    lock_table: str
    use_lockfile: bool

    @property
    def work_dir(self) -> Path:
        """Everything the tool owns at run time (gitignored): logs, data dirs, plugin cache."""
        return self.project / ".deployer"

    @property
    def secret_values(self) -> tuple[str, ...]:
        return tuple(self.environ[k] for k in _SECRET_ENVIRON if self.environ.get(k))


def load_settings(project: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read `<project>/.env` under the process environment (the environment wins). Every problem
    with either is reported at once, before anything runs."""
    environ = dict(os.environ if environ is None else environ)
    dotenv_path = project / ".env"
    problems: list[str] = []
    if dotenv_path.is_file():
        try:
            values, problems = parse_env_text(read_text(dotenv_path), str(dotenv_path))
        except ConfigError as exc:
            values, problems = {}, list(exc.problems)
        for key, value in values.items():
            environ.setdefault(key, value)

    def where(name: str) -> str:
        return f"{name} (set in the environment or {dotenv_path})"

    profile = environ.get("AWS_PROFILE") or "default"
    engine = environ.get("DEPLOYER_ENGINE", "auto") or "auto"
    if engine not in ENGINE_CHOICES:
        problems.append(f"{where('DEPLOYER_ENGINE')}: {engine!r} is not one of {', '.join(ENGINE_CHOICES)}")
    endpoint_url = environ.get("AWS_ENDPOINT_URL", "")
    if endpoint_url and (bad := endpoint_problem(endpoint_url)):
        problems.append(f"{where('AWS_ENDPOINT_URL')}: {bad}")
    ssh_key = os.path.expanduser(environ.get("DEPLOYER_SSH_KEY", ""))
    if ssh_key and (bad := ssh_key_problem(Path(ssh_key))):
        problems.append(f"{where('DEPLOYER_SSH_KEY')}: {bad}")
    if problems:
        raise ConfigError(problems)
    return Settings(
        project=project,
        environ=MappingProxyType(environ),
        aws_profile=profile,
        aws_region=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        aws_endpoint_url=endpoint_url,
        engine=engine,
        ssh_key=ssh_key,
        provider_mirror=environ.get("DEPLOYER_PROVIDER_MIRROR", ""),
        state_bucket=environ.get("DEPLOYER_STATE_BUCKET")
        or f"{profile}-chronos-terraform-state-storage",
        lock_table=environ.get("DEPLOYER_LOCK_TABLE") or f"{profile}-chronos-terraform-state-locks",
        use_lockfile=environ.get("DEPLOYER_USE_LOCKFILE", "").lower() in ("1", "true", "yes"),
    )


def endpoint_problem(url: str) -> str | None:
    """What is wrong with an AWS endpoint URL, or None.

    >>> endpoint_problem("127.0.0.1:5055")
    "'127.0.0.1:5055' needs a scheme: https://host[:port] (or http://)"
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"{url!r} needs a scheme: https://host[:port] (or http://)"
    try:
        parts.port  # noqa: B018  # raises for a port out of range or not a number
    except ValueError:
        return f"{url!r} has a port that is not a number from 1 to 65535"
    if not parts.hostname:
        return f"{url!r} has no host"
    return None


def ssh_key_problem(path: Path) -> str | None:
    """What is wrong with the operator's private key file, or None."""
    if path.suffix == ".pub":
        return f"{path} is a public key; name the private half ({path.with_suffix('')})"
    try:
        head = path.read_bytes()[:64]
    except FileNotFoundError:
        return f"{path} does not exist"
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror or exc}"
    if head.startswith((b"ssh-", b"ecdsa-", b"sk-")):
        return f"{path} holds a public key; name the private key file"
    return None


@dataclass(frozen=True)
class EnvConfig:
    """One environment's variables, validated for one stack."""

    name: str
    path: Path
    values: Mapping[str, str]  # every entry of the file, in file order
    secret_names: frozenset[str]

    @property
    def tf_vars(self) -> dict[str, str]:
        """`TF_VAR_public_key=…` → `{"public_key": …}`."""
        n = len(TF_VAR_PREFIX)
        return {k[n:]: v for k, v in self.values.items() if k.startswith(TF_VAR_PREFIX)}

    @property
    def app_vars(self) -> dict[str, str]:
        return {k: v for k, v in self.values.items() if not k.startswith(TF_VAR_PREFIX)}

    @property
    def secret_values(self) -> tuple[str, ...]:
        return tuple(v for k, v in self.values.items() if k in self.secret_names and v)

    @property
    def is_protected(self) -> bool:
        return self.name in PROTECTED_ENVIRONMENTS

    def masker(self, settings: Settings | None = None) -> Masker:
        extra = settings.secret_values if settings is not None else ()
        return Masker([*self.secret_values, *extra])


def env_name_problem(env: str) -> str | None:
    """Why `env` cannot name an environment, or None.

    >>> env_name_problem("stage") is None
    True
    >>> env_name_problem("../stage").split(":")[0]
    "environment '../stage' is not an environment name"
    """
    if ENV_NAME.fullmatch(env):
        return None
    shown = repr(env if len(env) <= 40 else env[:40] + "…")
    return (f"environment {shown} is not an environment name: lowercase letters, digits and '-',"
            " starting with a letter or digit, at most 32 characters")


def env_path(project: Path, env: str) -> Path:
    return project / DEPLOYMENTS_DIR / f"env-{env}"


def environments(project: Path) -> list[str]:
    """The environments that have an env file."""
    found = (project / DEPLOYMENTS_DIR).glob("env-*")
    return sorted(p.name[len("env-"):] for p in found if p.is_file())


def load_env(project: Path, env: str, stack: Stack) -> EnvConfig:
    """Parse and validate `deployments/env-<env>` for `stack`, reporting every problem at once."""
    if bad := env_name_problem(env):
        raise ConfigError(bad)
    path = env_path(project, env)
    if not path.is_file():
        known = ", ".join(environments(project)) or "none yet"
        raise ConfigError(
            f"unknown environment {env!r}: {path} does not exist (environments: {known});"
            f" create it from {project / DEPLOYMENTS_DIR / 'env.template'}"
        )
    values, problems = parse_env_text(read_text(path), str(path))
    deptype = values.get("TF_VAR_deptype")
    if deptype is not None and deptype != env:
        problems.append(f"{path}: TF_VAR_deptype is {deptype!r} but the environment is {env!r}")
    missing = [n for n in stack.variables.required if not values.get(n)]
    if missing:
        problems.append(
            f"{path}: missing required variable{'s' if len(missing) > 1 else ''} for stack"
            f" {stack.name}: {', '.join(missing)}"
        )
    secret_names = frozenset(
        k for k in values if k in stack.secret_names or is_secret_name(k)
    )
    for name in sorted(secret_names):
        if values[name] and len(values[name]) < MIN_MASKED_LENGTH:
            problems.append(
                f"{path}: {name} is shorter than {MIN_MASKED_LENGTH} characters;"
                " use a real secret (e.g. `openssl rand -hex 32`)"
            )
    problems += _value_problems(path, stack, values)
    if problems:
        raise ConfigError(problems)
    return EnvConfig(env, path, MappingProxyType(values), secret_names)


def _value_problems(path: Path, stack: Stack, values: Mapping[str, str]) -> list[str]:
    """Values that reach a host's command line or a connection: a git ref or repository (never
    an option, a transport or shell), a host list, a gateway. Named by variable; the value is
    not repeated when it may be anything."""
    from deployer import validate
    from deployer.hosts.address import parse_host, parse_host_list

    problems: list[str] = []

    def add(problem: str) -> None:
        if problem not in problems:  # roles may share a variable: say it once
            problems.append(problem)

    for app in stack.apps.values():
        for name, check, what in ((app.ref_variable, validate.git_ref,
                                   "a branch, tag or full commit sha"),
                                  (app.repo_variable, validate.git_repo, "a repository URL")):
            value = values.get(name)
            if value and (bad := check(value)):
                add(f"{path}: {name} {bad}; it must be {what}")
    from deployer.stacks import USER_NAME
    for name in ((stack.users.bootstrap_user_variable, stack.users.deploy_user_variable)
                 if stack.users else ()):
        if values.get(name) and not USER_NAME.fullmatch(values[name]):
            add(f"{path}: {name} must be a user name (lowercase letters, digits, '_' and '-',"
                " starting with a letter or '_', at most 32)")
    addresses = [t[2] for t in stack.users.trust] if stack.users else []
    addresses += [r.to_variable for r in stack.doctor.reach] if stack.doctor else []
    for name in addresses:
        if values.get(name) and not validate.host_address(values[name]):
            add(f"{path}: {name} must be an IP address or a host name (letters, digits, '-', '.')")
    for spec in (role.hosts for role in stack.roles):
        if spec.source == "env" and values.get(spec.variable):
            _, bad_hosts = parse_host_list(values[spec.variable], default_user=spec.user,
                                           default_port=spec.port)
            for text in bad_hosts:
                add(f"{path}: {spec.variable}: {text}")
        if spec.gateway_variable and values.get(spec.gateway_variable):
            try:
                parse_host(values[spec.gateway_variable], default_user=spec.user)
            except ValueError as exc:
                add(f"{path}: {spec.gateway_variable}: {exc}")
    return problems


def parse_env_text(text: str, where: str) -> tuple[dict[str, str], list[str]]:
    """python-dotenv's parser with line numbers; values round-trip exactly (no interpolation)."""
    values: dict[str, str] = {}
    first_line: dict[str, int] = {}
    problems: list[str] = []
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.line
        if binding.error:
            problems.append(f"{where}:{line}: cannot parse this line; expected KEY=value")
        elif binding.key is None:
            continue  # blank line or comment
        elif binding.value is None:
            problems.append(f"{where}:{line}: {binding.key} has no '='; write {binding.key}= for empty")
        elif binding.key in first_line:
            problems.append(
                f"{where}:{line}: {binding.key} is set again (first set on line"
                f" {first_line[binding.key]})"
            )
        else:
            first_line[binding.key] = line
            values[binding.key] = binding.value
    return values, problems
