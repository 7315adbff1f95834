"""The run lock: one per stack and environment, in the real DynamoDB lock table (moto over TLS)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from deployer import lock
from deployer.config import load_settings
from deployer.errors import AwsError, LockHeldError

from conftest import Project

pytestmark = pytest.mark.slow


def settings_with_table(project: Project, *, table: bool = True):
    settings = load_settings(project.path, project.environ)
    if table:
        project.client("dynamodb").create_table(
            TableName=settings.lock_table, BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}])
    return settings


def items(project: Project, settings) -> list[dict]:
    return project.client("dynamodb").scan(TableName=settings.lock_table)["Items"]


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_one_run_at_a_time_and_the_lock_is_gone_after(project: Project) -> None:
    settings = settings_with_table(project)
    said: list[str] = []
    with lock.held(settings, "edge", "prod", "alice@laptop pid=1 since now deploying edge/prod",
                   said.append) as where:
        assert where == f"dynamodb:{settings.lock_table}"
        with pytest.raises(LockHeldError) as err:
            with lock.held(settings, "edge", "prod", "bob@ci pid=2 since now deploying edge/prod",
                           said.append):
                pytest.fail("a second run got the lock")
        assert str(err.value) == (
            f"edge/prod (run lock in dynamodb:{settings.lock_table}) is locked by alice@laptop"
            " pid=1 since now deploying edge/prod; if that run is gone: deploy unlock edge prod")
        with lock.held(settings, "edge", "stage", "bob@ci pid=2 since now", said.append):
            pass  # another environment is another lock
    assert items(project, settings) == []
    assert said == []


def test_a_lock_of_a_dead_process_here_is_broken_and_said(project: Project) -> None:
    settings = settings_with_table(project)
    stale = f"me@{socket.gethostname()} pid={dead_pid()} since then deploying edge/prod"
    project.client("dynamodb").put_item(TableName=settings.lock_table, Item={
        "LockID": {"S": lock.lock_id("edge", "prod")}, "Info": {"S": stale}})
    said: list[str] = []
    with lock.held(settings, "edge", "prod", "me@here pid=3 since now", said.append) as where:
        assert where
        assert [i["Info"]["S"] for i in items(project, settings)] == ["me@here pid=3 since now"]
    assert said == [f"run lock: breaking a stale lock ({stale}): that process is gone"]


def test_a_lock_from_another_machine_is_left_to_deploy_unlock(project: Project) -> None:
    settings = settings_with_table(project)
    other = "ci@runner-7 pid=1 since then deploying edge/prod"
    project.client("dynamodb").put_item(TableName=settings.lock_table, Item={
        "LockID": {"S": lock.lock_id("edge", "prod")}, "Info": {"S": other}})
    with pytest.raises(LockHeldError, match="deploy unlock edge prod"):
        with lock.held(settings, "edge", "prod", "me@here pid=3", lambda _: None):
            pass
    assert lock.clear(settings, "edge", "prod", lambda _q, _e: False, lambda _: None) == \
        f"kept the run lock held by {other}"
    asked: list[str] = []
    assert lock.clear(settings, "edge", "prod", lambda q, _e: asked.append(q) or True,
                      lambda _: None) == f"removed the run lock held by {other}"
    assert asked == [f"edge/prod: remove the run lock held by {other}? Type 'yes'"]
    assert items(project, settings) == []
    assert lock.clear(settings, "edge", "prod", lambda _q, _e: True, lambda _: None) == "no run lock"


def test_without_a_table_or_aws_the_run_says_so_and_goes_on(project: Project, tmp_path: Path) -> None:
    said: list[str] = []
    with lock.held(settings_with_table(project, table=False), "edge", "prod", "x", said.append) as where:
        assert where == ""
    assert said == [f"run lock: the lock table dynamodb:{project.profile}-chronos-terraform-state-locks"
                    " does not exist (run `deploy bootstrap-state`); per-host deploy locks only"]
    bare = load_settings(tmp_path, {"PATH": "/usr/bin"})
    said.clear()
    with lock.held(bare, "edge", "prod", "x", said.append) as where:
        assert where == ""
    assert said == ["run lock: no AWS configured (AWS_PROFILE, keys or AWS_ENDPOINT_URL); per-host"
                    " deploy locks only"]


def test_the_engine_state_lock_is_read_where_the_backend_keeps_it(project: Project) -> None:
    """Terraform's LockInfo: the lock table's item `<bucket>/<key>`, or S3's `<key>.tflock`."""
    settings = settings_with_table(project)
    key = "stage/probe.tfstate"
    info = {"ID": "4cb547ca-6ae3-6d58-bd32-6495dc427bc5", "Operation": "OperationTypeApply",
            "Who": "ci@runner-7", "Version": "1.11.4", "Created": "2026-12-03T17:40:01Z",
            "Path": f"{settings.state_bucket}/{key}", "Info": ""}
    assert lock.state_lock(settings, key) is None  # no lock item
    project.client("dynamodb").put_item(TableName=settings.lock_table, Item={
        "LockID": {"S": f"{settings.state_bucket}/{key}"}, "Info": {"S": json.dumps(info)}})
    assert lock.state_lock(settings, key) == info
    assert lock.state_lock(settings, "prod/probe.tfstate") is None

    lockfile = load_settings(project.path, {**project.environ, "DEPLOYER_USE_LOCKFILE": "1"})
    assert lock.state_lock(lockfile, key) is None  # no bucket yet
    s3 = project.client("s3")
    s3.create_bucket(Bucket=lockfile.state_bucket)
    assert lock.state_lock(lockfile, key) is None  # no lock file
    s3.put_object(Bucket=lockfile.state_bucket, Key=f"{key}.tflock", Body=json.dumps(info).encode())
    assert lock.state_lock(lockfile, key) == info
    s3.put_object(Bucket=lockfile.state_bucket, Key=f"{key}.tflock", Body=b"{not json")
    with pytest.raises(AwsError, match=r"state lock of stage/probe.tfstate: its lock info is not JSON"):
        lock.state_lock(lockfile, key)

    bare = load_settings(project.path, {"PATH": "/usr/bin"})
    assert lock.state_lock(bare, key) is None  # no AWS configured
