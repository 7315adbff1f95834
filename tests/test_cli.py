"""The `deploy` CLI end to end, as a user types it: real embedded Terraform, the real AWS
provider 3.39.0, an S3 backend with a DynamoDB lock table on a moto server over HTTP.

The `probe` stack (tests/data) is a stack added as data only: one VPC and a resource that takes
as long to create as asked (for the lock and Ctrl-C tests)."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import DEPLOY, PROBE_SECRET, Project, lock_items, probe_project, result_of

pytestmark = pytest.mark.slow

def all_text(project: Project, *runs: subprocess.CompletedProcess[str]) -> str:
    logs = "".join(p.read_text() for p in (project.path / ".deployer" / "logs").glob("*.log"))
    return logs + "".join(r.stdout + r.stderr for r in runs)


def test_help_and_version(project: Project) -> None:
    top = project.deploy("--help", check=True)
    assert "Usage: deploy STACK ENV [plan|apply|destroy] [OPTIONS]" in top.stdout
    for word in ("bootstrap-state", "render", "rollback", "status", "logs", "Exit codes:"):
        assert word in top.stdout
    stack_help = project.deploy("dashboard", "--help", check=True).stdout
    assert "--hosts-only" in stack_help and "3    a lock is held" in stack_help
    assert project.deploy("--version", check=True).stdout.strip() == "deploy, version 0.1.0"
    module = subprocess.run([str(Path(DEPLOY).with_name("python")), "-m", "deployer", "--version"],
                            capture_output=True, text=True, timeout=60)
    assert (module.returncode, module.stdout) == (0, "deploy, version 0.1.0\n")


def test_missing_configuration_starts_nothing(project: Project) -> None:
    env_file = project.write_env("stage", "TF_VAR_deptype=stage\n"
                                 "git_repo=https://example.com/x.git\ngit_ref=main\n"
                                 "frp_token=abcdefgh\ndb_password=abcdefgh\n"
                                 "background_color=red\nvite_api_base_url=http://x/api\n")
    run = project.deploy("dashboard", "stage", "plan")
    assert run.returncode == 2
    assert run.stderr == (f"error: {env_file}: missing required variables for stack dashboard:"
                          " TF_VAR_public_key, jwt_secret_key\n")
    assert not (project.path / ".deployer").joinpath("logs").exists()  # no engine, no SSH
    assert not (project.path / ".deployer").joinpath("tf").exists()


def test_unknown_environment_and_stack(project: Project) -> None:
    project.write_env("stage", "TF_VAR_deptype=stage\n")
    run = project.deploy("shared", "qa")
    assert run.returncode == 2 and "(environments: stage)" in run.stderr
    run = project.deploy("web", "stage")
    assert run.returncode == 2 and "stacks: chom, cso, dashboard, edge, shared" in run.stderr


def test_render_masks_secrets_and_writes_the_backend(project: Project) -> None:
    probe_project(project, TF_VAR_label="one")
    run = project.deploy("render", "probe", "stage", "--json", check=True)
    rendered = result_of(run)
    backend = project.path / "deployments" / f"backend-stage-{project.profile}.hcl"
    assert rendered["backend_file"] == str(backend) and backend.is_file()
    assert rendered["state_key"] == "stage/probe.tfstate"
    assert rendered["exports"]["TF_VAR_label"] == "one"
    assert rendered["exports"]["TF_VAR_deptype"] == "stage"
    assert PROBE_SECRET not in run.stdout + run.stderr


ENVELOPE_KEYS = ["command", "data", "errors", "exit_code", "ok", "version"]


def test_json_is_one_versioned_envelope_for_every_outcome(project: Project) -> None:
    """The contract a pipeline reads: one object, the same keys whatever happened."""
    check = project.deploy("bootstrap-state", "--check", "--json")  # a result that is a failure
    envelope = json.loads(check.stdout)
    assert sorted(envelope) == ENVELOPE_KEYS
    assert (check.returncode, envelope["command"], envelope["ok"], envelope["exit_code"],
            envelope["errors"]) == (1, "bootstrap-state", False, 1, [])
    assert {s["status"] for s in envelope["data"]["steps"]} == {"missing"}

    probe_project(project, TF_VAR_label="one")
    ok = project.deploy("render", "probe", "stage", "--json")
    envelope = json.loads(ok.stdout)
    assert sorted(envelope) == ENVELOPE_KEYS
    assert (ok.returncode, envelope["version"], envelope["command"], envelope["ok"],
            envelope["exit_code"], envelope["errors"]) == (0, 1, "render", True, 0, [])
    assert envelope["data"]["state_key"] == "stage/probe.tfstate"

    bad = project.deploy("nosuch", "stage", "--json")  # bad input: no result, the error instead
    envelope = json.loads(bad.stdout)
    assert sorted(envelope) == ENVELOPE_KEYS
    assert (bad.returncode, envelope["command"], envelope["ok"], envelope["exit_code"],
            envelope["data"]) == (2, "stack", False, 2, None)
    assert len(envelope["errors"]) == 1 and "unknown stack 'nosuch'" in envelope["errors"][0]
    assert bad.stderr == f"error: {envelope['errors'][0]}\n"  # stderr says it too, once


def test_plan_apply_noop_outputs_destroy(project: Project) -> None:
    probe_project(project, TF_VAR_label="one")
    plan = project.deploy("probe", "stage", check=True)  # plan is the default action
    assert "2 to add, 0 to change, 0 to destroy; aws_vpc: 1 create; terraform_data: 1 create" \
        in plan.stdout
    assert "plan has changes" in plan.stdout

    apply = project.deploy("probe", "stage", "apply", check=True)
    assert re.search(r"^  engine   (embedded|tofu|terraform) [0-9.]+: applied the saved plan$",
                     apply.stdout, re.M), apply.stdout
    assert "OK: changes applied" in apply.stdout

    again = project.deploy("probe", "stage", "apply", "--json", check=True)
    result = result_of(again)
    assert result["engine"]["applied"] is False
    assert result["engine"]["reason"] == "no infrastructure change; apply skipped"
    assert result["changed"] is False
    # The version is known, nothing init reads changed, and a plan without changes carries the
    # state's outputs: the engine started once (plan), not four times (version, init, plan,
    # output), and no plan file stays behind.
    assert "init: skipped (backend, modules and providers as at the last init)" in again.stderr
    ran = re.findall(r"-chdir=\S+ (\w+)", Path(result["log_path"]).read_text())
    assert ran == ["plan"], ran
    assert not list((project.path / ".deployer" / "tf").glob("*/tfplan-*"))
    vpc_id = result["engine"]["outputs"]["vpc_id"]
    ec2 = project.client("ec2")
    assert ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]["CidrBlock"] == "10.42.0.0/16"

    # A skipped init the engine needed after all (its installed providers are gone): the plan
    # says so, init runs, the plan runs again.
    shutil.rmtree(project.path / ".deployer" / "tf" / f"probe-stage-{project.profile}" / "providers")
    healed = project.deploy("probe", "stage", "apply", check=True)
    assert "init: skipped, but the engine says 'not installed': running it" in healed.stderr
    assert healed.stdout.rstrip().endswith("OK: no changes"), healed.stdout

    destroy = project.deploy("probe", "stage", "destroy", check=True)
    assert "0 to add, 0 to change, 2 to destroy" in destroy.stdout
    assert not [v for v in ec2.describe_vpcs()["Vpcs"] if v["VpcId"] == vpc_id]
    assert PROBE_SECRET not in all_text(project, plan, apply, again, destroy)


def test_two_operators_at_once(project: Project) -> None:
    """One proceeds; the other stops with exit 3 naming the lock holder. Which one depends on
    who takes the state lock first (Terraform locks for the plan and again for the apply)."""
    probe_project(project, TF_VAR_label="one", TF_VAR_apply_seconds="8")
    first = subprocess.Popen([DEPLOY, "probe", "stage", "apply", "-y"], cwd=project.path,
                             env=project.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    _wait_for_lock(project)
    second = project.deploy("probe", "stage", "apply", "-y")
    out, err = first.communicate(timeout=300)
    runs = {first.returncode: err, second.returncode: second.stderr}
    assert sorted(runs) == [0, 3], runs
    assert "error: the state of probe/stage is locked by " in runs[3]
    assert " since " in runs[3] and "lock ID" in runs[3]
    # The state is intact: the winner's changes are all there and nothing is pending.
    after = project.deploy("probe", "stage", "apply", "--json", check=True)
    assert result_of(after)["engine"]["applied"] is False
    assert lock_items(project) == []


def test_ctrl_c_during_apply_leaves_no_lock(project: Project) -> None:
    probe_project(project, TF_VAR_label="one", TF_VAR_apply_seconds="60")
    run = subprocess.Popen([DEPLOY, "probe", "stage", "apply", "-y"], cwd=project.path,
                           env=project.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    _wait_for_log(project, "Creating...")  # the apply itself, not the plan before it
    time.sleep(2)  # well into the slow resource's creation
    started = time.monotonic()
    run.send_signal(signal.SIGINT)
    _out, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    assert "error: interrupted during " in err and " apply of probe/stage" in err
    assert time.monotonic() - started < 60  # stopped, not finished
    assert lock_items(project) == []
    # The state is usable: the next apply converges (a quick slow resource this time).
    project.write_env("stage", f'TF_VAR_deptype=stage\nprobe_secret="{PROBE_SECRET}"\n'
                      "TF_VAR_label=one\nTF_VAR_apply_seconds=1\n")
    project.deploy("probe", "stage", "apply", "-y", check=True)
    again = project.deploy("probe", "stage", "apply", "--json", check=True)
    assert result_of(again)["engine"]["applied"] is False
    assert lock_items(project) == []


@pytest.mark.parametrize("lock", ["dynamodb", "lockfile"])
def test_a_state_lock_left_by_a_killed_run_is_released_by_deploy_unlock(
        project: Project, lock: str) -> None:
    """A CI runner killed mid-apply leaves the engine's lock on the state. Every later run stops,
    naming the holder and the command that clears it; `deploy unlock` shows the lock and, after
    a yes, has the engine release exactly that lock."""
    lockfile = {"DEPLOYER_USE_LOCKFILE": str(lock == "lockfile")}
    probe_project(project, TF_VAR_label="one", TF_VAR_apply_seconds="60")
    run = subprocess.Popen([DEPLOY, "probe", "stage", "apply", "-y"], cwd=project.path,
                           env={**project.environ, **lockfile}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    _wait_for_log(project, "Creating...")
    # Killed as a runner is, with everything it started: deploy and the engine (its own group).
    engines = Path(f"/proc/{run.pid}/task/{run.pid}/children").read_text().split()
    for leader in (run.pid, *map(int, engines)):
        os.killpg(leader, signal.SIGKILL)
    run.wait(timeout=30)
    held = _state_locks(project, lock)
    assert len(held) == 1, held
    lock_id = held[0]["ID"]

    refused = project.deploy("probe", "stage", "plan", extra_env=lockfile)
    assert refused.returncode == 3, refused.stderr
    assert re.search(rf"error: the state of probe/stage is locked by \S+@\S+ \(apply since .+, lock ID"
                     rf" {lock_id}\); if that run is gone: deploy unlock probe stage$",
                     refused.stderr, re.MULTILINE), refused.stderr
    asked = project.deploy("unlock", "probe", "stage", extra_env=lockfile)  # no terminal, no --yes
    assert asked.returncode == 2, asked.stderr
    assert "run lock: no run lock" in asked.stdout
    assert re.search(rf"error: probe/stage: release the state lock held by \S+ \(apply since .+,"
                     rf" lock ID {lock_id}\): confirmation needed", asked.stderr), asked.stderr
    assert _state_locks(project, lock) == held
    released = project.deploy("unlock", "probe", "stage", "--yes", extra_env=lockfile, check=True)
    assert "state lock: released the state lock held by " in released.stdout
    assert f"lock ID {lock_id})" in released.stdout
    assert _state_locks(project, lock) == []
    again = project.deploy("unlock", "probe", "stage", "--json", extra_env=lockfile, check=True)
    assert "run lock: no run lock\nstate lock: no state lock\n" in again.stderr
    assert result_of(again) == {"hosts": []}  # stdout: the envelope alone
    # The state is usable: the next apply converges (a quick slow resource this time).
    project.write_env("stage", f'TF_VAR_deptype=stage\nprobe_secret="{PROBE_SECRET}"\n'
                      "TF_VAR_label=one\nTF_VAR_apply_seconds=1\n")
    project.deploy("probe", "stage", "apply", "-y", extra_env=lockfile, check=True)
    assert _state_locks(project, lock) == []


def _state_locks(project: Project, lock: str) -> list[dict]:
    """The engine's locks on the project's states: the lock table's items, or S3's lock files."""
    if lock == "dynamodb":
        return [json.loads(item["Info"]["S"]) for item in lock_items(project)]
    s3 = project.client("s3")
    bucket = f"{project.profile}-chronos-terraform-state-storage"
    return [json.loads(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())
            for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])
            if o["Key"].endswith(".tflock")]


def _wait_for_log(project: Project, text: str, timeout: float = 120) -> None:
    """Until the run log says `text` (the engine's output is logged line by line as it comes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = (project.path / ".deployer" / "logs").glob("*.log")
        if any(text in p.read_text(errors="replace") for p in logs):
            return
        time.sleep(0.2)
    raise AssertionError(f"the run log never said {text!r}")


def _wait_for_lock(project: Project, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lock_items(project):
            return
        time.sleep(0.2)
    raise AssertionError("the first apply never took the state lock")


def test_destroy_of_prod_asks_for_the_name(project: Project) -> None:
    project.add_probe_stack()
    project.write_env("prod", f'TF_VAR_deptype=prod\nprobe_secret="{PROBE_SECRET}"\n')
    project.deploy("bootstrap-state", "-y", check=True)
    project.deploy("probe", "prod", "apply", "-y", check=True)

    refused = project.deploy("probe", "prod", "destroy")  # no terminal, no --yes
    assert refused.returncode == 2
    assert "not interactive; pass --yes" in refused.stderr

    wrong = _with_terminal(project, ["probe", "prod", "destroy"], typed="stage\n")
    assert wrong[0] == 2 and "not confirmed; nothing was changed" in wrong[1]
    right = _with_terminal(project, ["probe", "prod", "destroy"], typed="prod\n")
    assert right[0] == 0, right[1]
    assert "2 to destroy" in right[1]


def _with_terminal(project: Project, args: list[str], typed: str) -> tuple[int, str]:
    """Run deploy on a pseudo-terminal and type `typed` at its prompt."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([DEPLOY, *args], cwd=project.path, env=project.environ,
                            stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True)
    os.close(terminal)
    output = b""
    sent = False
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
        if not sent and b"Type the environment name" in output:
            os.write(controller, typed.encode())
            sent = True
    proc.wait(timeout=300)
    os.close(controller)
    return proc.returncode, output.decode(errors="replace")
