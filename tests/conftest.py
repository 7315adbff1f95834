"""Shared fixtures: real parts only. A moto AWS endpoint on loopback (session), the real AWS
provider 3.39.0 in an offline mirror, and throwaway project directories that drive the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from deployer.sandbox import endpoint
from deployer.sandbox.provider import ensure_provider_mirror

REPO = Path(__file__).resolve().parent.parent
# What a project needs from the repo; env files and .env are written per test.
PROJECT_LINKS = ("terraform", "deployments/templates", "deployments/env.template", "scripts",
                 "examples")
DEPLOY = str(Path(sys.executable).with_name("deploy"))


@pytest.fixture(scope="session")
def aws_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[endpoint.Endpoint]:
    """moto server on a free 127.0.0.1 port, with the project's moto patches."""
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    ep = endpoint.start(log)
    yield ep
    os.kill(ep.pid, signal.SIGTERM)


@pytest.fixture(scope="session")
def provider_mirror() -> Path:
    """The real AWS provider 3.39.0, unpacked once per checkout into .deployer/plugins."""
    return ensure_provider_mirror(REPO / ".deployer" / "plugins")


class Project:
    """A throwaway project directory: the repo's stacks and Terraform, its own env files,
    its own AWS profile (so its state bucket and lock table are its own on the shared moto)."""

    def __init__(self, path: Path, environ: dict[str, str]):
        self.path = path
        self.environ = environ

    @property
    def profile(self) -> str:
        return self.environ["AWS_PROFILE"]

    def client(self, service: str):
        """A boto3 client for the test's own checks, against the same endpoint."""
        return boto3.client(service, endpoint_url=self.environ["AWS_ENDPOINT_URL"],
                            region_name="us-east-1", verify=self.environ["AWS_CA_BUNDLE"],
                            aws_access_key_id="x", aws_secret_access_key="y")

    def add_stack(self, name: str) -> None:
        """A test-only stack from tests/data/<name>.toml."""
        (self.path / "deployments" / "stacks" / f"{name}.toml").symlink_to(REPO / f"tests/data/{name}.toml")

    def add_probe_stack(self) -> None:
        """The test-only `probe` stack (tests/data): one VPC and a resource as slow as asked."""
        (self.path / "deployments" / "stacks" / "probe.toml").symlink_to(REPO / "tests/data/probe.toml")
        (self.path / "terraform-probe").symlink_to(REPO / "tests/data/probe")

    def write_env(self, env: str, text: str) -> Path:
        path = self.path / "deployments" / f"env-{env}"
        path.write_text(text, encoding="utf-8")
        path.chmod(0o600)
        return path

    def deploy(self, *args: str, check: bool = False, timeout: float = 600,
               extra_env: dict[str, str] | None = None, input: str | None = None,
               ) -> subprocess.CompletedProcess[str]:
        """Run the real `deploy` console script as a user types it, in the project directory."""
        done = subprocess.run(
            [DEPLOY, *args], cwd=self.path, env={**self.environ, **(extra_env or {})},
            capture_output=True, text=True, timeout=timeout, input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"deploy {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done


PROBE_SECRET = "pr0be-secret # with $dollar and spaces"


def probe_project(project: Project, **extra: str) -> Project:
    """The probe stack in `stage` (extra lines for its env file), after bootstrap-state."""
    project.add_probe_stack()
    lines = ["TF_VAR_deptype=stage", f'probe_secret="{PROBE_SECRET}"']
    lines += [f"{k}={v}" for k, v in extra.items()]
    project.write_env("stage", "\n".join(lines) + "\n")
    project.deploy("bootstrap-state", "-y", check=True)
    return project


def lock_items(project: Project) -> list[dict]:
    """The engine's state locks held in the project's lock table (digests left out)."""
    ddb = project.client("dynamodb")
    table = f"{project.profile}-chronos-terraform-state-locks"
    return [i for i in ddb.scan(TableName=table)["Items"] if "Info" in i]


@pytest.fixture
def make_project(
    tmp_path: Path, aws_endpoint: endpoint.Endpoint, provider_mirror: Path
) -> Callable[..., Project]:
    def make(name: str = "proj") -> Project:
        path = tmp_path / name
        (path / "deployments" / "stacks").mkdir(parents=True)
        for rel in PROJECT_LINKS:
            if (REPO / rel).exists():
                (path / rel).symlink_to(REPO / rel)
        for stack_file in (REPO / "deployments" / "stacks").glob("*.toml"):
            (path / "deployments" / "stacks" / stack_file.name).symlink_to(stack_file)
        profile = "t" + uuid.uuid4().hex[:10]
        environ = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", str(tmp_path)),
            "LANG": "C.UTF-8",
            "AWS_ENDPOINT_URL": aws_endpoint.url,
            # The engine a fresh machine has; DEPLOYER_TEST_ENGINE=tofu|terraform tries another.
            "DEPLOYER_ENGINE": os.environ.get("DEPLOYER_TEST_ENGINE", "embedded"),
            "DEPLOYER_PROVIDER_MIRROR": str(provider_mirror),
            **endpoint.write_profile(path / ".deployer" / "aws", profile, "us-east-1",
                                     aws_endpoint.ca_bundle),
        }
        return Project(path, environ)

    return make


@pytest.fixture
def project(make_project: Callable[..., Project]) -> Project:
    return make_project()


@pytest.fixture(scope="session")
def operator_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The operator's SSH key, generated at run time (never committed)."""
    key = tmp_path_factory.mktemp("operator") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "operator", "-f", str(key)],
                   check=True)
    return key


@pytest.fixture(scope="session")
def app_origin(tmp_path_factory: pytest.TempPathFactory) -> str:
    """examples/chronos-app as a local bare git repository: the app's origin."""
    from deployer.demo import ensure_app_origin

    return ensure_app_origin(REPO, tmp_path_factory.mktemp("origin") / "app.git", dict(os.environ))


TIER_INSTALL = """\
#!/bin/sh
# A tier of the test stacks: records when it ran, fails on purpose on the hosts listed in ./fail.
set -eu
printf '%s start %s\\n' "$DEPLOY_ROLE" "$(date +%s.%N)" >> "$HOME/times"
for h in $(cat fail); do
  if [ "$h" = "$DEPLOY_HOST" ]; then echo "failing on purpose on $h" >&2; exit 1; fi
done
sleep 1
touch installed
printf '%s end %s\\n' "$DEPLOY_ROLE" "$(date +%s.%N)" >> "$HOME/times"
"""


@pytest.fixture(scope="session")
def tier_origin(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The app of the test stacks tests/data/{tiers,rolling,lifecycle}.toml, as a bare origin:
    an install.sh that records its start and end and fails on the hosts ./fail lists, and a
    config file the lifecycle stack shares across releases."""
    work = tmp_path_factory.mktemp("tier")
    (work / "install.sh").write_text(TIER_INSTALL)
    (work / "install.sh").chmod(0o755)
    (work / "config").mkdir()
    (work / "config" / "app.env").write_text("SEED=from the first release\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(work)]
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "a tier"], check=True)
    bare = work.parent / "tier.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return f"file://{bare}"


_next_subnet = iter(range(100, 250))
# The second octet of the test hosts' addresses: two suites on one machine (say a developer's
# run beside CI's) set different DEPLOYER_TEST_HOST_OCTET values and never meet on an address;
# pytest-xdist's workers (gw0, gw1, …) add their number, so they never meet either.
_HOST_OCTET = (int(os.environ.get("DEPLOYER_TEST_HOST_OCTET", "0"))
               + int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0))

# Modules that boot the sandbox's machines and networks (fixed names and addresses, one kernel's
# machined): under pytest-xdist they run one after another on one worker. Every other module
# runs whole on one worker (its module fixtures are made once), beside them.
SANDBOX_MODULES = ("test_acceptance.py", "test_sandbox_cloud.py", "test_sandbox_machines.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """xdist's scope scheduling with one scope per module, and one for all of SANDBOX_MODULES.
    (Its `xdist_group` mark does nothing with pytest 9: the node id it rewrites is not read.)"""
    from xdist.scheduler import LoadScopeScheduling

    class SandboxApart(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "sandbox" if Path(module).name in SANDBOX_MODULES else module

    return SandboxApart(config, log)


@pytest.fixture
def ssh_hosts(tmp_path: Path, operator_key: Path) -> Iterator[Callable[[int], list]]:
    """Start N emulated hosts (real OpenSSH sshd on distinct 127.x addresses, port 22)."""
    from deployer.sandbox.sshd import SandboxHost

    started: list[SandboxHost] = []

    def start(count: int, *, ready: bool = True, forwarding: bool = True) -> list[SandboxHost]:
        subnet = next(_next_subnet)
        hosts = []
        for i in range(1, count + 1):
            address = f"127.{_HOST_OCTET}.{subnet}.{i}"
            host = SandboxHost(tmp_path / "hosts" / address, address)
            host.start(authorized_keys=operator_key.with_suffix(".pub").read_text(),
                       forwarding=forwarding)
            if ready:
                (host.home / ".setup_complete").write_text("test host\n")
            started.append(host)
            hosts.append(host)
        return hosts

    yield start
    for host in started:
        host.stop()


def ssh(config: Path, target: str, command: str, *, jump: str = "",
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """`ssh -F config [-J jump] target command` on a sandbox machine; -F, not -o, so the options
    reach the jump hop too. AssertionError with ssh's stderr when it fails and `check`."""
    argv = ["ssh", "-F", str(config), *(["-J", jump] if jump else []), target, command]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise AssertionError(f"{argv} exited {done.returncode}: {done.stderr}")
    return done


# Never through a proxy: every request the tests make goes to 127.0.0.1.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str) -> tuple[int, str]:
    """Status and body of a GET, an HTTP error's included."""
    try:
        with OPENER.open(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def result_of(run: subprocess.CompletedProcess[str]) -> Any:
    """The data of a `deploy ... --json` run, once its envelope (report.json_envelope) is checked
    against the run: version 1, and ok and exit_code as the process exited."""
    envelope = json.loads(run.stdout)
    assert (envelope["version"], envelope["ok"], envelope["exit_code"]) == (
        1, run.returncode == 0, run.returncode), envelope
    return envelope["data"]


def wait_for(predicate: Callable[[], object], seconds: float = 15, every: float = 0.1) -> bool:
    """True once `predicate()` holds, False after `seconds`: for what a test waits on."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def have(binary: str) -> bool:
    return shutil.which(binary) is not None
