"""Environment files and operator settings → frozen config objects.

`deployments/env-<ENV>` holds one environment's variables (gitignored; see
`deployments/env.template`). `TF_VAR_*` entries go to the engine, the rest are application
variables. The project's `.env` holds operator settings (AWS profile and region, engine choice,
SSH key); the process environment wins over it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from deployer.errors import ConfigError
from deployer.secrets import MIN_MASKED_LENGTH, Masker, is_secret_name
from deployer.stacks import Stack

DEPLOYMENTS_DIR = Path("deployments")
TF_VAR_PREFIX = "TF_VAR_"
ENGINE_CHOICES = ("auto", "tofu", "terraform", "embedded")
# Environments whose destruction must be confirmed by typing the environment's name.
PROTECTED_ENVIRONMENTS = frozenset({"prod", "production"})
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
    """Read `<project>/.env` under the process environment (the environment wins)."""
    environ = dict(os.environ if environ is None else environ)
    dotenv_path = project / ".env"
    if dotenv_path.is_file():
        for key, value in dotenv_values(dotenv_path, interpolate=False).items():
            if value is not None:
                environ.setdefault(key, value)
    profile = environ.get("AWS_PROFILE") or "default"
    engine = environ.get("DEPLOYER_ENGINE", "auto") or "auto"
    if engine not in ENGINE_CHOICES:
        raise ConfigError(
            f"DEPLOYER_ENGINE={engine!r} is not one of {', '.join(ENGINE_CHOICES)}"
            f" (set in the environment or {dotenv_path})"
        )
    return Settings(
        project=project,
        environ=MappingProxyType(environ),
        aws_profile=profile,
        aws_region=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        aws_endpoint_url=environ.get("AWS_ENDPOINT_URL", ""),
        engine=engine,
        ssh_key=os.path.expanduser(environ.get("DEPLOYER_SSH_KEY", "")),
        provider_mirror=environ.get("DEPLOYER_PROVIDER_MIRROR", ""),
        state_bucket=environ.get("DEPLOYER_STATE_BUCKET")
        or f"{profile}-chronos-terraform-state-storage",
        lock_table=environ.get("DEPLOYER_LOCK_TABLE") or f"{profile}-chronos-terraform-state-locks",
        use_lockfile=environ.get("DEPLOYER_USE_LOCKFILE", "").lower() in ("1", "true", "yes"),
    )


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


def env_path(project: Path, env: str) -> Path:
    return project / DEPLOYMENTS_DIR / f"env-{env}"


def environments(project: Path) -> list[str]:
    """The environments that have an env file."""
    found = (project / DEPLOYMENTS_DIR).glob("env-*")
    return sorted(p.name[len("env-"):] for p in found if p.is_file())


def load_env(project: Path, env: str, stack: Stack) -> EnvConfig:
    """Parse and validate `deployments/env-<env>` for `stack`, reporting every problem at once."""
    path = env_path(project, env)
    if not path.is_file():
        known = ", ".join(environments(project)) or "none yet"
        raise ConfigError(
            f"unknown environment {env!r}: {path} does not exist (environments: {known});"
            f" create it from {project / DEPLOYMENTS_DIR / 'env.template'}"
        )
    values, problems = parse_env_text(path.read_text(encoding="utf-8"), str(path))
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
    if problems:
        raise ConfigError(problems)
    return EnvConfig(env, path, MappingProxyType(values), secret_names)


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
