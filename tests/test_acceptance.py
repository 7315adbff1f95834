"""The acceptance scenarios of ../shared/ACCEPTANCE.md, as a user runs them: the real `deploy`
command in a project of its own, on the sandbox (a moto endpoint over TLS, the embedded engine,
the AWS provider 3.39.0, hosts that are machines: systemd-nspawn, reached on 127.x addresses).
Tests run in file order against one sandbox (scenario 13 runs before 9: it needs the dashboard,
which scenario 10 destroys); the last one stops the sandbox."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pwd
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from deployer.process import pids_naming
from deployer.sandbox import machines as m

from conftest import DEPLOY, PROJECT_LINKS, REPO, result_of, wait_for

pytestmark = pytest.mark.slow

SECRET_NAMES = ("jwt_secret_key", "frp_token", "db_password")
# Apart from CI's and a colleague's runs on the same machine (see conftest.ssh_hosts).
_OCTET = int(os.environ.get("DEPLOYER_TEST_HOST_OCTET", "0"))


class Sandbox:
    def __init__(self, path: Path, environ: dict[str, str]):
        self.path = path
        self.environ = environ
        self.runs: list[subprocess.CompletedProcess[str]] = []
        self.argv_seen: set[str] = set()

    def deploy(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([DEPLOY, *args], cwd=self.path, env=self.environ, text=True,
                              capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        self.runs.append(done)
        return done

    def env_file(self, env: str = "demo") -> Path:
        return self.path / "deployments" / f"env-{env}"

    def values(self, env: str = "demo") -> dict[str, str]:
        pairs = (ln.split("=", 1) for ln in self.env_file(env).read_text().splitlines()
                 if "=" in ln and not ln.startswith("#"))
        return {k: v for k, v in pairs}

    def client(self, service: str):
        return boto3.client(service, endpoint_url=self.environ["AWS_ENDPOINT_URL"],
                            region_name="us-east-1", verify=self.environ["AWS_CA_BUNDLE"],
                            aws_access_key_id="x", aws_secret_access_key="y")


class ArgvSampler(threading.Thread):
    """Reads the command line of every process on the machine, every 20 ms, while it runs."""

    def __init__(self, into: set[str]):
        super().__init__(daemon=True)
        self.into = into
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        self.into.add((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                            errors="replace"))
                    except OSError:
                        pass
            time.sleep(0.02)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, provider_mirror: Path) -> Iterator[Sandbox]:
    path = tmp_path_factory.mktemp("acceptance") / "project"
    (path / "deployments" / "stacks").mkdir(parents=True)
    for rel in PROJECT_LINKS:
        (path / rel).symlink_to(REPO / rel)
    for stack in (REPO / "deployments" / "stacks").glob("*.toml"):
        (path / "deployments" / "stacks" / stack.name).symlink_to(stack)
    (path / ".deployer").mkdir()
    (path / ".deployer" / "plugins").symlink_to(provider_mirror)  # no second 177 MB copy
    from deployer.sandbox.endpoint import free_port

    environ = {
        "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
        "DEPLOYER_ENGINE": os.environ.get("DEPLOYER_TEST_ENGINE", "embedded"),
        "DEPLOYER_SANDBOX_EDGE_ADDRESSES": " ".join(f"127.{_OCTET}.30.{i}" for i in (1, 2, 3)),
        "DEPLOYER_SANDBOX_CHOM_ADDRESSES": f"127.{_OCTET}.31.1 127.{_OCTET}.31.2",
        "DEPLOYER_SANDBOX_BALANCER_ADDRESSES": f"127.{_OCTET}.32.0/24",
        "DEPLOYER_SANDBOX_DASHBOARD_PORT": str(free_port()),
    }
    box = Sandbox(path, environ)
    sampler = ArgvSampler(box.argv_seen)
    sampler.start()
    started = time.monotonic()
    box.first = box.deploy("sandbox", "demo")  # type: ignore[attr-defined]
    box.first_seconds = time.monotonic() - started  # type: ignore[attr-defined]
    sampler.stop.set()
    sampler.join()
    if box.first.returncode == 0:  # type: ignore[attr-defined]
        env = result_of(box.deploy("sandbox", "env", "--json"))
        box.environ.update(env)
    yield box
    box.deploy("sandbox", "down")


def dashboard_url(box: Sandbox) -> str:
    match = re.search(r"^dashboard:\s+(\S+)$", box.first.stdout, re.M)  # type: ignore[attr-defined]
    assert match, box.first.stdout  # type: ignore[attr-defined]
    return match.group(1)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def sandbox_state(box: Sandbox) -> dict:
    return json.loads((box.path / ".deployer" / "sandbox" / "state.json").read_text())


def sandbox_machines(box: Sandbox) -> m.Machines:
    return m.Machines(box.path / ".deployer" / "sandbox")


def dashboard_machine(box: Sandbox) -> str:
    """The dashboard instance's machine (the only instance with an Elastic IP)."""
    names = [n for n, e in sandbox_machines(box).recorded().items()
             if n.startswith("i-") and e.get("public_address")]
    assert len(names) == 1, names
    return names[0]


@contextlib.contextmanager
def busy_cores(count: int, *, seconds: float) -> Iterator[None]:
    """`count` busy loops, each bounded to `seconds`, stopped when the block ends."""
    loop = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    spinners = [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def test_1_first_contact(sandbox: Sandbox) -> None:
    first = sandbox.first  # type: ignore[attr-defined]
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "engine: embedded 1.15" in first.stderr or "engine: " in first.stderr
    for stack in ("shared/demo apply", "dashboard/demo apply", "edge/demo apply"):
        assert stack in first.stdout
    assert sandbox.env_file().stat().st_mode & 0o777 == 0o600  # fresh secrets, owner only
    url = dashboard_url(sandbox)
    assert url.startswith("http://127.")
    assert "background_color: #0f766e" in fetch(url)
    ssh = re.search(r"^ssh:\s+(ssh .+)$", first.stdout, re.M)
    assert ssh, first.stdout
    login = subprocess.run([*ssh.group(1).split(), "-o", "BatchMode=yes", "readlink ~/chronos/current"],
                           capture_output=True, text=True, timeout=30)
    assert login.returncode == 0 and login.stdout.startswith("releases/"), login.stderr
    endpoint_pid = sandbox_state(sandbox)["endpoint"]["pid"]
    with busy_cores(2, seconds=300):  # a rerun on a busy machine must still find its cloud
        again = sandbox.deploy("sandbox", "demo")
    assert again.returncode == 0, again.stderr[-2000:]
    assert sandbox_state(sandbox)["endpoint"]["pid"] == endpoint_pid
    assert "demo: no changes anywhere" in again.stdout
    assert again.stdout.count("no infrastructure change; apply skipped") == 2
    assert " changed " not in again.stdout.replace("unchanged", "")


def test_2_missing_configuration(sandbox: Sandbox) -> None:
    text = sandbox.env_file().read_text()
    text = "\n".join(ln for ln in text.splitlines()
                     if not ln.startswith(("TF_VAR_public_key", "jwt_secret_key", "TF_VAR_deptype")))
    sandbox.env_file("stage").write_text(text + "\nTF_VAR_deptype=stage\n")
    logs_before = set((sandbox.path / ".deployer" / "logs").glob("*"))
    run = sandbox.deploy("dashboard", "stage", "plan")
    assert run.returncode == 2
    assert run.stderr == (f"error: {sandbox.env_file('stage')}: missing required variables for stack"
                          " dashboard: TF_VAR_public_key, jwt_secret_key\n")
    assert set((sandbox.path / ".deployer" / "logs").glob("*")) == logs_before  # nothing started
    sandbox.env_file("stage").unlink()


def test_3_config_only_change(sandbox: Sandbox) -> None:
    env = sandbox.env_file()
    env.write_text(env.read_text().replace("background_color=#0f766e", "background_color=#7c3aed"))
    run = sandbox.deploy("dashboard", "demo", "apply")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no infrastructure change; apply skipped" in run.stdout
    assert "config only: dashboard_frontend/.env.docker; reran install.sh" in run.stdout
    assert "background_color: #7c3aed" in fetch(dashboard_url(sandbox))


def push_to_origin(sandbox: Sandbox, edit, message: str) -> None:
    origin = sandbox.path / ".deployer" / "sandbox" / "app.git"
    work = sandbox.path / ".deployer" / "work"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    subprocess.run(["git", "clone", "-q", str(origin), str(work)], check=True)
    edit(work)
    who = ["-c", "user.name=dev", "-c", "user.email=dev@example.com"]
    subprocess.run(["git", *who, "-C", str(work), "commit", "-qam", message], check=True)
    subprocess.run(["git", "-C", str(work), "push", "-q", "origin", "HEAD:main"], check=True)


def test_4_bad_release(sandbox: Sandbox) -> None:
    def break_health(work: Path) -> None:
        server = work / "app" / "server.py"
        server.write_text(server.read_text().replace(
            "self.send_response(200)", 'self.send_response(500 if self.path == "/health" else 200)'))

    push_to_origin(sandbox, break_health, "a release whose health check fails")
    run = sandbox.deploy("dashboard", "demo", "apply")
    assert run.returncode == 1
    host = re.search(r"host_address = (\S+)", run.stdout).group(1)
    assert f"health check 'dashboard http' failed on ec2-user@{host}" in run.stdout
    assert "not made current" in run.stdout and "(restarted)" in run.stdout
    assert "background_color: #7c3aed" in fetch(dashboard_url(sandbox))  # the previous one serves

    push_to_origin(sandbox, lambda work: subprocess.run(
        ["git", "-C", str(work), "revert", "--no-edit", "--no-commit", "HEAD"], check=True),
        "revert the bad release")
    assert sandbox.deploy("dashboard", "demo", "apply").returncode == 0


def test_5_two_operators_at_once(sandbox: Sandbox) -> None:
    env = sandbox.env_file()
    env.write_text(env.read_text().replace("background_color=#7c3aed", "background_color=#b91c1c")
                   + "install_pause_seconds=30\n")
    first = subprocess.Popen([DEPLOY, "dashboard", "demo", "apply"], cwd=sandbox.path,
                             env=sandbox.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    lock = sandbox_machines(sandbox).root(dashboard_machine(sandbox)) / "home" / "ec2-user" / "chronos"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (lock / ".deploy-lock").exists():
        time.sleep(0.05)
    # The first run's install pauses 30 s: long enough for the second run's engine phase to end
    # on a busy machine while the first still holds the host's lock.
    second = sandbox.deploy("dashboard", "demo", "apply")
    assert first.poll() is None, "the first run ended before the second reached the host"
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    assert second.returncode == 3, second.stdout + second.stderr
    assert re.search(r"error: dashboard/demo \(run lock in dynamodb:\S+\) is locked by \S+@\S+"
                     r" pid=\d+ since \S+ deploying dashboard/demo", second.stderr), second.stderr
    # State intact: the next run changes nothing.
    env.write_text(env.read_text().replace("install_pause_seconds=30\n", ""))
    settled = sandbox.deploy("dashboard", "demo", "apply")
    assert settled.returncode == 0
    ddb = sandbox.client("dynamodb")
    items = ddb.scan(TableName="sandbox-chronos-terraform-state-locks")["Items"]
    assert not [i for i in items if "Info" in i]


def test_6_state_bootstrap_three_times(sandbox: Sandbox) -> None:
    for _ in range(2):  # runs 2 and 3 (the demo was run 1)
        run = sandbox.deploy("bootstrap-state", "--json")
        assert run.returncode == 0
        assert {s["status"] for s in result_of(run)["steps"]} == {"unchanged"}
    s3, ddb = sandbox.client("s3"), sandbox.client("dynamodb")
    bucket, table = "sandbox-chronos-terraform-state-storage", "sandbox-chronos-terraform-state-locks"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(pab.values()) and len(pab) == 4
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    described = ddb.describe_table(TableName=table)["Table"]
    assert described["KeySchema"] == [{"AttributeName": "LockID", "KeyType": "HASH"}]
    pitr = ddb.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    assert pitr["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"

    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    s3.delete_public_access_block(Bucket=bucket)
    check = sandbox.deploy("bootstrap-state", "--check")
    assert check.returncode == 1
    assert re.search(r"versioning\s+drifted\s+versioning Suspended", check.stdout)
    repair = sandbox.deploy("bootstrap-state", "-y")
    assert repair.returncode == 0
    assert "repaired: versioning Enabled (was: versioning Suspended)" in repair.stdout
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    # Nothing in the CLI can delete them: no code path calls a delete of either.
    source = "".join(p.read_text() for p in (REPO / "deployer").rglob("*.py"))
    assert "delete_bucket(" not in source and "delete_table(" not in source


def test_7_secrets_stay_secret(sandbox: Sandbox) -> None:
    values = [v for k, v in sandbox.values().items() if k in SECRET_NAMES]
    assert len(values) == 3 and all(len(v) >= 16 for v in values)
    texts = [r.stdout + r.stderr for r in sandbox.runs]
    texts += [p.read_text(errors="replace") for p in (sandbox.path / ".deployer").rglob("*.log")]
    texts += sorted(sandbox.argv_seen)
    assert len(sandbox.argv_seen) > 50  # the sampler really saw the run's processes
    for value in values:
        for text in texts:
            assert value not in text


def test_8_fleet(sandbox: Sandbox, ssh_hosts) -> None:
    hosts = ssh_hosts(19)
    key = sandbox.path / ".deployer" / "sandbox" / "ssh" / "id_ed25519.pub"
    for host in hosts:  # the fleet trusts the sandbox operator's key
        host.start(authorized_keys=key.read_text())
    down = hosts[0].address.rsplit(".", 1)[0] + ".20"
    values = sandbox.values()
    sandbox.env_file("prod").write_text("\n".join([
        "edge_hosts=" + " ".join(f"root@{h.address}" for h in hosts) + f" root@{down}",
        f"git_repo={values['git_repo']}", "git_ref=main", f"frp_token={values['frp_token']}",
        "edge_api_url=http://localhost/api", "edge_port=9300",
    ]) + "\n")
    run = sandbox.deploy("edge", "prod", "--accept-new-host-keys")
    assert run.returncode == 1
    assert f"FAILED on 1 host(s): root@{down}" in run.stdout
    assert run.stdout.count("  changed   new commit") == 19
    assert re.search(rf"root@{re.escape(down)}\s+failed\s+root@{re.escape(down)}: unreachable", run.stdout)


def ssh_config(box: Sandbox) -> Path:
    """-F reaches the jump hop too (options given with -o reach only the destination)."""
    config = box.path / ".deployer" / "test-ssh-config"
    config.write_text(
        "Host *\n"
        f"  IdentityFile {box.path / '.deployer' / 'sandbox' / 'ssh' / 'id_ed25519'}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {box.path / '.deployer' / 'test-known-hosts'}\n"
        "  StrictHostKeyChecking accept-new\n  BatchMode yes\n  ConnectTimeout 10\n"
        "  User ec2-user\n")
    return config


def ssh(box: Sandbox, target: str, command: str, *, jump: str = "",
        check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ssh", "-F", str(ssh_config(box)), *(["-J", jump] if jump else []), target, command]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise AssertionError(f"{argv} exited {done.returncode}: {done.stderr}")
    return done


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat from its third field on (state, ppid, …; start time at [19]); [] if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []



# Scenario 13 needs the dashboard host, which scenario 10 destroys: it runs here, before 9.
def test_13_real_machines(sandbox: Sandbox) -> None:
    fleet = sandbox_machines(sandbox)
    recorded = fleet.recorded()
    edges = [e["public_address"] for n, e in sorted(recorded.items()) if n.startswith("edge-")]
    assert edges == [f"127.{_OCTET}.30.{i}" for i in (1, 2, 3)]
    host = recorded[dashboard_machine(sandbox)]["public_address"]

    # Each host is its own machine: a user made on one exists neither on another nor here.
    user = f"u{uuid.uuid4().hex[:8]}"
    assert ssh(sandbox, edges[0], f"sudo -n useradd {user} && id -un {user}").stdout.strip() == user
    assert ssh(sandbox, edges[1], f"id {user}", check=False).returncode == 1
    assert ssh(sandbox, host, f"id {user}", check=False).returncode == 1
    with pytest.raises(KeyError):
        pwd.getpwnam(user)
    assert len({ssh(sandbox, a, "cat /etc/machine-id").stdout for a in [*edges, host]}) == 4

    # The edge app is a systemd service (systemd is PID 1), installed by deploy with sudo -n.
    for address in edges:
        done = ssh(sandbox, address, "cat /proc/1/comm; systemctl is-active chronos-edge", check=False)
        assert done.stdout.split() == ["systemd", "active"], (address, done.stdout, done.stderr)
    edge_run = next(r for r in sandbox.runs if "edge/demo apply" in r.stdout)
    assert "under nohup" not in edge_run.stderr

    # user_data (scripts/ec2-setup.sh, rendered by Terraform) ran once, as root, and wrote the
    # ready marker itself; on Debian it says it skipped the package installs.
    done = ssh(sandbox, host, "sudo -n cat /var/lib/deployer/user-data.done /var/log/user-data.log;"
               " stat -c %U ~/.setup_complete")
    assert done.stdout.startswith("exit=0 "), done.stdout
    assert "ec2-setup: no dnf on this host: skipped installing docker and git" in done.stdout
    assert done.stdout.splitlines()[-1] == "ec2-user"

    # A private host: an instance without an Elastic IP answers only through the jump host.
    ec2 = sandbox.client("ec2")
    dashboard = ec2.describe_instances(InstanceIds=[dashboard_machine(sandbox)]
                                       )["Reservations"][0]["Instances"][0]
    launched = ec2.run_instances(
        ImageId=dashboard["ImageId"], InstanceType="t3.micro", MinCount=1, MaxCount=1,
        SubnetId=dashboard["SubnetId"], KeyName=dashboard["KeyName"],
        SecurityGroupIds=[g["GroupId"] for g in dashboard["SecurityGroups"]],
        UserData="#!/bin/sh\ntouch /home/ec2-user/.setup_complete\n")["Instances"][0]
    private_id, private_ip = launched["InstanceId"], launched["PrivateIpAddress"]
    try:
        assert wait_for(lambda: ssh(sandbox, private_ip, "test -e .setup_complete", jump=host,
                                    check=False).returncode == 0, 90), (
            (sandbox.path / ".deployer" / "sandbox" / "instances.log").read_text()[-2000:])
        assert fleet.recorded()[private_id]["public_address"] is None
        assert ssh(sandbox, private_ip, "hostname", jump=host).stdout.strip() == private_id
        started = time.monotonic()
        with pytest.raises(OSError) as refused:
            socket.create_connection((private_ip, 22), timeout=10)
        assert refused.value.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)
        assert time.monotonic() - started < 1.0  # at once: the unreachable route, no timeout
        direct = subprocess.run(["ssh", "-F", str(ssh_config(sandbox)), private_ip, "true"],
                                capture_output=True, text=True, timeout=30)
        assert direct.returncode == 255 and "No route to host" in direct.stderr
    finally:
        ec2.terminate_instances(InstanceIds=[private_id])
    # A terminated instance's machine is stopped.
    assert wait_for(lambda: private_id not in fleet.recorded(), 60)
    assert not (Path("/run/netns") / fleet.netns(private_id)).exists()


def test_13_a_machine_killed_during_an_install_converges(sandbox: Sandbox) -> None:
    """kill -9 of the dashboard machine's supervisor while install.sh runs: the run fails, the
    watcher boots the machine again (its disk kept), and the next run converges."""
    env = sandbox.env_file()
    before = env.read_text()
    color = re.search(r"^background_color=(\S+)$", before, re.M).group(1)
    env.write_text(before.replace(f"background_color={color}", "background_color=#15803d")
                   + "install_pause_seconds=30\n")
    fleet = sandbox_machines(sandbox)
    name = dashboard_machine(sandbox)
    supervisor = fleet.recorded()[name]["supervisor"]
    first = subprocess.Popen([DEPLOY, "dashboard", "demo", "apply"], cwd=sandbox.path,
                             env=sandbox.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)

    def installing() -> bool:  # install.sh's pause runs in the machine
        return any(_cmdline(pid) == b"sleep\x0030\x00" for pid in fleet.pids(name))

    assert wait_for(installing, 120), first.poll()
    os.kill(supervisor, signal.SIGKILL)
    out, err = first.communicate(timeout=300)
    assert first.returncode != 0, out + err
    assert wait_for(lambda: fleet.recorded().get(name, {}).get("supervisor", supervisor) != supervisor
                    and fleet.is_ssh_ready(name), 90)
    env.write_text(env.read_text().replace("install_pause_seconds=30\n", ""))
    again = sandbox.deploy("dashboard", "demo", "apply")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "background_color: #15803d" in fetch(dashboard_url(sandbox))
    settled = sandbox.deploy("dashboard", "demo", "apply")
    assert settled.returncode == 0 and "already current" in settled.stdout, settled.stdout


def test_9_interrupted(sandbox: Sandbox) -> None:
    env = sandbox.env_file()
    env.write_text(env.read_text() + "TF_VAR_instance_type=t3.medium\n")
    run = subprocess.Popen([DEPLOY, "dashboard", "demo", "apply", "-y"], cwd=sandbox.path,
                           env=sandbox.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    ddb = sandbox.client("dynamodb")
    table = "sandbox-chronos-terraform-state-locks"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if [i for i in ddb.scan(TableName=table)["Items"] if "Info" in i]:
            break
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    _out, err = run.communicate(timeout=180)
    assert run.returncode == 130, err
    assert "interrupted during" in err
    assert not [i for i in ddb.scan(TableName=table)["Items"] if "Info" in i]
    env.write_text(env.read_text().replace("TF_VAR_instance_type=t3.medium\n", ""))


def test_10_guard_rails(sandbox: Sandbox) -> None:
    sandbox.env_file("prod").write_text('TF_VAR_deptype=prod\nTF_VAR_ssh_cidr_blocks=["127.0.0.0/8"]\n'
                                        'TF_VAR_app_cidr_blocks=["127.0.0.0/8"]\n')
    refused = sandbox.deploy("shared", "prod", "destroy")
    assert refused.returncode == 2
    assert "Destroy stack shared in the protected environment 'prod'" in refused.stderr
    assert "pass --yes" in refused.stderr
    destroy = sandbox.deploy("dashboard", "demo", "destroy", "-y")
    assert destroy.returncode == 0, destroy.stdout + destroy.stderr
    assert "to destroy" in destroy.stdout
    s3, ddb = sandbox.client("s3"), sandbox.client("dynamodb")
    s3.head_bucket(Bucket="sandbox-chronos-terraform-state-storage")
    assert ddb.describe_table(TableName="sandbox-chronos-terraform-state-locks")["Table"]


def cso_run(box: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    done = box.deploy(*args, timeout=1200)
    print(f"{' '.join(args)}: {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def cso_hosts(run: subprocess.CompletedProcess[str]) -> dict[str, list[str]]:
    """role -> the `ssh -J jump host` commands the run printed."""
    found: dict[str, list[str]] = {}
    for role, command in re.findall(r"^  output   role_ssh_commands\.(\w+) = (.+)$", run.stdout, re.M):
        found.setdefault(role, []).append(command)
    return found


def test_14_cso_single_then_ha(sandbox: Sandbox) -> None:
    single = cso_run(sandbox, "sandbox", "demo-cso")
    out = single.stdout
    assert "aws_instance: 5 create" in out and "aws_nat_gateway: 1 create" in out and "aws_lb:" not in out
    jump = re.search(r"^  output   jump_ssh = (\S+)$", out, re.M).group(1)
    assert re.search(r"^  url      Admin UI: https://\S+:8102/$", out, re.M), out
    assert "url Admin UI  ok" in out and "(TLS: the generated certificate)" in out
    roles = cso_hosts(single)
    assert sorted(roles) == ["backend", "frontend", "keystone", "rabbitmq"]
    assert all(len(commands) == 1 for commands in roles.values())
    # The phases ran in order: jump, then rabbitmq and keystone, then frontend and backend.
    order = [line.split(":")[0] for line in single.stderr.splitlines() if line.startswith("phase ") and
             line.endswith("done")]
    assert order == ["phase setup", "phase messaging and identity", "phase frontend and backend"]
    # A role host answers only through the jump server.
    private = roles["backend"][0].split()[-1]
    direct = ssh(sandbox, private, "true", check=False)
    assert direct.returncode != 0 and "no route to host" in direct.stderr.lower(), direct.stderr
    assert ssh(sandbox, private, "systemctl is-active cso-backend", jump=jump).stdout.strip() == "active"
    again = cso_run(sandbox, "cso", "demo", "apply", "-y")
    assert "no infrastructure change; apply skipped" in again.stdout
    assert again.stdout.rstrip().endswith("OK: no changes"), again.stdout
    status = cso_run(sandbox, "status", "cso", "demo", "--role", "keystone")
    assert "markers = ('.keystone-done: " in status.stdout, status.stdout

    ha = cso_run(sandbox, "sandbox", "demo-cso", "--topology", "ha")
    out = ha.stdout
    plan = re.search(r"^  plan     (.+)$", out, re.M).group(1)
    # Only the jump server's single-topology Admin UI rules go: in ha the UI is the ALB's.
    assert plan.startswith("29 to add, 2 to change, 3 to destroy;"), plan
    assert "aws_instance: 4 create" in plan and "aws_nat_gateway: 1 create" in plan
    assert "aws_lb: 1 create" in plan and "aws_lb_listener: 1 create" in plan
    roles = cso_hosts(ha)
    assert all(len(commands) == 2 for commands in roles.values()), roles
    assert re.search(r"^  url      Admin UI: https://\S+\.elb\.amazonaws\.com:8102/$", out, re.M), out
    assert "url Admin UI  ok" in out
    # The hosts that were there get only new settings (the peers they now know of).
    assert len(re.findall(r"^  host     \S+\s+changed   provisioned: 1 of 1 item\(s\) changed; new commit",
                          out, re.M)) == 4, out


def test_15_resume_after_a_failure_in_the_last_phase(sandbox: Sandbox) -> None:
    run = cso_run(sandbox, "cso", "demo", "apply", "-y")
    jump = re.search(r"^  output   jump_ssh = (\S+)$", run.stdout, re.M).group(1)
    backend = cso_hosts(run)["backend"][0].split()[-1]  # ec2-user@10.1.x.y

    def touch_readme(work: Path) -> None:
        (work / "README.md").write_text((work / "README.md").read_text() + "\nA new release.\n")

    push_to(sandbox, "cso", touch_readme, "a new release for every role")
    # One host of the last phase breaks: something else holds the backend's port (provisioning
    # cannot repair that), so its new release fails its health check.
    ssh(sandbox, backend, "sudo -n systemctl stop cso-backend && sudo -n systemd-run --quiet"
        " --unit=port-squatter python3 -m http.server 8080", jump=jump)
    failed = sandbox.deploy("cso", "demo", "apply", "-y", timeout=1200)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"FAILED on 1 host(s): {backend}" in failed.stdout
    assert "health check 'backend' failed" in failed.stdout, failed.stdout
    ssh(sandbox, backend, "sudo -n systemctl stop port-squatter", jump=jump)
    resumed = cso_run(sandbox, "cso", "demo", "apply", "-y")
    changed = re.findall(r"^  host     (\S+)\s+changed", resumed.stdout, re.M)
    assert changed == [backend], resumed.stdout  # every earlier phase: unchanged


def test_15_destroy_of_ha_leaves_the_state_alone(sandbox: Sandbox) -> None:
    destroyed = cso_run(sandbox, "cso", "demo", "destroy", "-y")
    assert "to destroy" in destroyed.stdout
    s3, ddb = sandbox.client("s3"), sandbox.client("dynamodb")
    s3.head_bucket(Bucket="sandbox-chronos-terraform-state-storage")
    assert ddb.describe_table(TableName="sandbox-chronos-terraform-state-locks")["Table"]
    assert not [i for r in sandbox.client("ec2").describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["running"]},
                 {"Name": "tag:Name", "Values": ["cso-*"]}])["Reservations"] for i in r["Instances"]]


CHOM_SECRETS = ("app_key", "db_password", "redis_password", "backup_encryption_key", "jwt_secret")
CHOM = tuple(f"127.{_OCTET}.31.{i}" for i in (1, 2))  # observability, app (the fixture's env)


BROKEN = "raise SystemExit('this release cannot start')\n"


def chom_release(box: Sandbox) -> str:
    return json.loads(fetch(f"http://{CHOM[1]}/health"))["release"]


def chom_sql(box: Sandbox, query: str) -> str:
    """A query on the app host's real database, as the deploy user."""
    code = ("import sqlite3,sys; c=sqlite3.connect('/var/www/chom/shared/storage/database.sqlite3');"
            " print(sorted(r[0] for r in c.execute(sys.argv[1])))")
    return ssh(box, f"stilgar@{CHOM[1]}", f"python3 -c {shlex.quote(code)} {shlex.quote(query)}").stdout


def push_to(box: Sandbox, branch: str, edit, message: str) -> None:
    """A commit on `branch` of the sandbox's origin (chom, cso: each example is a branch)."""
    origin = box.path / ".deployer" / "sandbox" / "app.git"
    work = box.path / ".deployer" / f"work-{branch}"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    subprocess.run(["git", "clone", "-q", "--branch", branch, str(origin), str(work)], check=True)
    edit(work)
    who = ["-c", "user.name=dev", "-c", "user.email=dev@example.com"]
    subprocess.run(["git", "-C", str(work), "add", "--all"], check=True)
    subprocess.run(["git", *who, "-C", str(work), "commit", "-qm", message], check=True)
    subprocess.run(["git", "-C", str(work), "push", "-q", "origin", f"HEAD:{branch}"], check=True)


def test_16_chom_from_bare_servers(sandbox: Sandbox) -> None:
    started = time.monotonic()
    first = sandbox.deploy("sandbox", "demo-chom", timeout=900)
    seconds = time.monotonic() - started
    assert first.returncode == 0, first.stdout + first.stderr
    print(f"chom first run: {seconds:.1f} s")
    out = first.stdout
    assert "deploy user stilgar: created, with a home and bash; sudo rule written; operator key added" in out
    assert re.search(r"package nginx: installed \S+", first.stderr)
    assert "added app_key, db_password, redis_password, backup_encryption_key, jwt_secret" in out
    for name, url in (("Prometheus", f"http://{CHOM[0]}:9090/"), ("Grafana", f"http://{CHOM[0]}:3000/"),
                      ("Application", f"http://{CHOM[1]}/")):
        assert f"url      {name}: {url}" in out
    assert f"services on stilgar@{CHOM[1]}  ok" in out and "url Application  ok" in out
    secrets_file = sandbox.path / "deployments" / "secrets-demo"
    assert oct(secrets_file.stat().st_mode & 0o777) == "0o600"
    kept = dict(ln.split("=", 1) for ln in secrets_file.read_text().splitlines() if "=" in ln)
    values = [v.strip("'") for k, v in kept.items() if k in CHOM_SECRETS]
    assert len(values) == 5 and all(len(v) >= 32 for v in values)
    before = secrets_file.read_bytes()
    # Nothing secret on the terminal, in the local log or in the hosts' own deployment logs.
    host_logs = "".join(ssh(sandbox, f"stilgar@{h}", "sudo -n sh -c 'cat /var/log/chom-deploy/*.log'").stdout
                        for h in CHOM)
    assert "migrate" in host_logs and "running build.sh" in host_logs
    for value in values:
        assert value not in out + first.stderr + host_logs
    # The deploy user exists on each machine (and not here); SSH observability → app needs no password.
    assert "stilgar" not in Path("/etc/passwd").read_text()
    trust = ssh(sandbox, f"stilgar@{CHOM[0]}", "ssh -o BatchMode=yes 10.20.251.2 hostname")
    assert trust.stdout.strip() == "chom-app"
    assert "sites" in chom_sql(sandbox, "select name from sqlite_master where type='table'")
    again = sandbox.deploy("chom", "demo", "apply", "-y")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.rstrip().endswith("OK: no changes"), again.stdout
    assert "deploy user stilgar exists, with sudo and the operator's key" in again.stdout
    assert secrets_file.read_bytes() == before


def test_16_doctor_names_every_failed_check(sandbox: Sandbox) -> None:
    assert sandbox.deploy("doctor", "chom", "demo").returncode == 0
    for host in CHOM:  # a login without sudo, on each server
        ssh(sandbox, f"stilgar@{host}", "sudo -n useradd --create-home nosudo && sudo -n install -d -o"
            " nosudo ~nosudo/.ssh && sudo -n install -m 600 -o nosudo ~/.ssh/authorized_keys ~nosudo/.ssh/")
    env = sandbox.env_file("doc")
    env.write_text(sandbox.env_file().read_text().replace("bootstrap_user=root", "bootstrap_user=nosudo")
                   .replace("TF_VAR_deptype=demo", "TF_VAR_deptype=doc"))
    env.chmod(0o600)
    stack = sandbox.path / "deployments" / "stacks" / "chom-big.toml"
    stack.write_text((REPO / "deployments" / "stacks" / "chom.toml").read_text().replace(
        "min_free_mb = 512", "min_free_mb = 100000000"))
    run = sandbox.deploy("doctor", "chom-big", "doc", "--accept-new-host-keys")
    assert run.returncode == 1, run.stdout + run.stderr
    for host in CHOM:
        for check in ("sudo", "disk"):
            assert re.search(rf"nosudo@{re.escape(host)}\s+{check}\s+FAILED", run.stdout), run.stdout
    assert run.stdout.splitlines()[-1] == (
        f"doctor: FAILED 4 of 29 checks: nosudo@{CHOM[0]} sudo, nosudo@{CHOM[0]} disk,"
        f" nosudo@{CHOM[1]} sudo, nosudo@{CHOM[1]} disk")
    applied = sandbox.deploy("chom-big", "doc", "apply", "-y")
    assert applied.returncode == 1 and re.search(r"^  pre-flight failed +4 failed: ", applied.stdout, re.M), \
        applied.stdout
    assert not (sandbox.path / "deployments" / "secrets-doc").exists()  # nothing before pre-flight
    stack.unlink()


def test_17_bad_migration_and_a_failed_switch_roll_back(sandbox: Sandbox) -> None:
    serving = chom_release(sandbox)
    notify = sandbox.path / ".deployer" / "chom-notify.log"
    notify.unlink(missing_ok=True)

    def bad_migration(work: Path) -> None:
        (work / "migrations" / "003_bad.sql").write_text(
            "CREATE TABLE invoices (id INTEGER PRIMARY KEY);\nALTER TABLE no_such_table ADD COLUMN x;\n")

    push_to(sandbox, "chom", bad_migration, "a migration that fails halfway")
    started = time.monotonic()
    run = sandbox.deploy("chom", "demo", "apply", "-y")
    print(f"chom rollback after a bad migration: {time.monotonic() - started:.1f} s")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "migrate step 'migrate' failed" in run.stdout
    assert "database restored from backup" in run.stderr
    assert chom_release(sandbox) == serving  # the previous release keeps serving
    assert "invoices" not in chom_sql(sandbox, "select name from sqlite_master where type='table'")
    assert len(notify.read_text().splitlines()) == 1 and "migrate" in notify.read_text()

    def fix_migration_break_health(work: Path) -> None:
        (work / "migrations" / "003_bad.sql").unlink()
        app = work / "app.py"
        app.write_text(BROKEN + app.read_text())

    push_to(sandbox, "chom", fix_migration_break_health, "a release that cannot start")
    run = sandbox.deploy("chom", "demo", "apply", "-y")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "health check 'app through nginx' failed" in run.stdout
    assert chom_release(sandbox) == serving
    assert len(notify.read_text().splitlines()) == 2

    def main_pids() -> list[str]:
        return ssh(sandbox, f"stilgar@{CHOM[1]}",
                   "systemctl show -p MainPID --value nginx chom-worker").stdout.split()

    push_to(sandbox, "chom", lambda work: (work / "app.py").write_text(
        (work / "app.py").read_text().removeprefix(BROKEN)), "fix the release")
    nginx, worker = main_pids()
    fixed = sandbox.deploy("chom", "demo", "apply", "-y")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert chom_release(sandbox) != serving
    # The app's services at the switch: nginx reloaded (same master), the worker restarted, enabled.
    assert "systemd: chom-app restarted, nginx reloaded, chom-worker restarted" in fixed.stderr
    now = main_pids()
    assert now[0] == nginx and now[1] not in (worker, "0"), (nginx, worker, now)
    enabled = ssh(sandbox, f"stilgar@{CHOM[1]}", "systemctl is-enabled chom-worker").stdout
    assert enabled.strip() == "enabled"


def test_11_down_stops_everything_it_started(sandbox: Sandbox) -> None:
    state = sandbox_state(sandbox)
    pids = [state["endpoint"]["pid"], state["watcher"]["pid"]]
    fleet = sandbox_machines(sandbox)
    recorded = fleet.recorded()
    assert sorted(n for n in recorded if n.startswith("edge-")) == [
        f"edge-127-{_OCTET}-30-{i}" for i in (1, 2, 3)]
    machine_pids = [pid for name in recorded for pid in fleet.pids(name)]
    pids += [e["forwarder"] for e in recorded.values() if e.get("forwarder")]
    edge_pids = [pid for pid in machine_pids if b"edge_server/server.py" in _cmdline(pid)]
    assert len(edge_pids) == 3  # the apps ran, one per edge machine
    route = json.loads(fleet.state_path.read_text())["network"]
    # Each process by its pid and start time: one that ended before `down` may have left its pid
    # to another by now.
    started = {pid: stat[19] for pid in pids + machine_pids if (stat := _stat(pid))}
    down = sandbox.deploy("sandbox", "down")
    assert down.returncode == 0, down.stderr
    for pid, start in started.items():
        stat = _stat(pid)  # a killed process loses its command line before it stops running
        assert not stat or stat[19] != start or stat[0] in ("Z", "X"), (pid, _cmdline(pid), stat[:4])
    naming_the_project = [pid for pid in pids_naming(str(sandbox.path))
                          if Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"]
    assert naming_the_project == [], [Path(f"/proc/{p}/cmdline").read_bytes() for p in naming_the_project]
    # Nothing of the machines is left: namespaces, route, mounts, cgroups.
    assert not [ns for ns in os.listdir("/run/netns") if ns.startswith(fleet.prefix)]
    routes = subprocess.run(["ip", "route", "show", "type", "unreachable", route["route"]],
                            capture_output=True, text=True, check=True).stdout
    assert f"metric {route['metric']}" not in routes
    assert str(sandbox.path) not in Path("/proc/mounts").read_text()
    assert not [c for c in m.CGROUP_ROOTS if (c / f"deployer-{fleet.tag}").exists()]
    assert sandbox.env_file().exists()  # the user's files stay
    status = sandbox.deploy("sandbox", "status")
    assert re.search(r"aws endpoint\s+stopped", status.stdout), status.stdout
    assert "running" not in status.stdout, status.stdout
