"""bootstrap-state against moto over HTTPS: create, rerun, drift and repair, errors, retries.
Every setting is read back with boto3; the tool's own return values are not trusted."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator

import botocore.exceptions
import pytest

from deployer import aws, state
from deployer.config import load_settings
from deployer.errors import AwsError, ConfigError
from deployer.results import CHANGED, MISSING, UNCHANGED

from conftest import Project

pytestmark = pytest.mark.slow


def settings_of(project: Project, **extra: str):
    return load_settings(project.path, {**project.environ, **extra})


def names(project: Project) -> tuple[str, str]:
    return (f"{project.profile}-chronos-terraform-state-storage",
            f"{project.profile}-chronos-terraform-state-locks")


def test_create_then_unchanged_twice(project: Project) -> None:
    settings = settings_of(project)
    assert state.needs_bootstrap(settings)
    assert {s.status for s in state.check(settings)} == {MISSING}
    first = state.bootstrap(settings, repair=False)
    assert {s.name for s in first if s.status == CHANGED} >= {
        "bucket", "versioning", "encryption", "public access block", "tls-only policy",
        "object ownership", "lifecycle", "lock table", "point-in-time recovery"}
    for _ in range(2):
        assert {s.status for s in state.bootstrap(settings, repair=False)} == {UNCHANGED}
    assert not state.needs_bootstrap(settings)

    bucket, table = names(project)
    s3, ddb = project.client("s3"), project.client("dynamodb")
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule == {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"},
                    "BucketKeyEnabled": True}
    assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True}
    assert json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"] == [
        state.tls_statement(bucket)]
    assert s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"] == [
        {"ObjectOwnership": "BucketOwnerEnforced"}]
    lifecycle = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"][0]
    assert lifecycle["NoncurrentVersionExpiration"]["NoncurrentDays"] == 90
    assert lifecycle["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 7
    described = ddb.describe_table(TableName=table)["Table"]
    assert described["KeySchema"] == [{"AttributeName": "LockID", "KeyType": "HASH"}]
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert described["DeletionProtectionEnabled"] is True
    assert described["SSEDescription"]["Status"] == "ENABLED"
    backups = ddb.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"


DRIFTS: dict[str, Callable] = {
    "versioning": lambda s3, ddb, b, t: s3.put_bucket_versioning(
        Bucket=b, VersioningConfiguration={"Status": "Suspended"}),
    "encryption": lambda s3, ddb, b, t: s3.delete_bucket_encryption(Bucket=b),
    "public access block": lambda s3, ddb, b, t: s3.put_public_access_block(
        Bucket=b, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": False, "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True}),
    "tls-only policy": lambda s3, ddb, b, t: s3.delete_bucket_policy(Bucket=b),
    "object ownership": lambda s3, ddb, b, t: s3.put_bucket_ownership_controls(
        Bucket=b, OwnershipControls={"Rules": [{"ObjectOwnership": "ObjectWriter"}]}),
    "lifecycle": lambda s3, ddb, b, t: s3.delete_bucket_lifecycle(Bucket=b),
    "point-in-time recovery": lambda s3, ddb, b, t: ddb.update_continuous_backups(
        TableName=t, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False}),
    "deletion protection": lambda s3, ddb, b, t: ddb.update_table(
        TableName=t, DeletionProtectionEnabled=False),
}


@pytest.mark.parametrize("setting", sorted(DRIFTS))
def test_each_drift_is_detected_and_repaired(project: Project, setting: str) -> None:
    settings = settings_of(project)
    state.bootstrap(settings, repair=False)
    bucket, table = names(project)
    DRIFTS[setting](project.client("s3"), project.client("dynamodb"), bucket, table)

    found = {s.name: s for s in state.check(settings)}
    assert found[setting].status == state.DRIFTED
    assert [n for n, s in found.items() if s.status != UNCHANGED] == [setting]
    unrepaired = {s.name: s.status for s in state.bootstrap(settings, repair=False)}
    assert unrepaired[setting] == state.DRIFTED
    repaired = {s.name: s for s in state.bootstrap(settings, repair=True)}
    assert repaired[setting].status == CHANGED
    assert repaired[setting].reason.startswith("repaired: ")
    assert {s.status for s in state.check(settings)} == {UNCHANGED}  # read back from AWS


def test_cli_check_exit_codes_and_backend_files(project: Project) -> None:
    project.write_env("stage", "TF_VAR_deptype=stage\n")
    missing = project.deploy("bootstrap-state", "--check")
    assert missing.returncode == 1 and "missing" in missing.stdout
    made = project.deploy("bootstrap-state", check=True)
    assert "created s3://" in made.stdout
    backend = project.path / "deployments" / f"backend-stage-{project.profile}.hcl"
    assert f'bucket  = "{names(project)[0]}"' in backend.read_text()
    assert project.deploy("bootstrap-state", "--check").returncode == 0


def test_no_credentials_is_one_clear_line(project: Project, tmp_path) -> None:
    environ = {"PATH": project.environ["PATH"], "HOME": str(tmp_path),
               "AWS_ENDPOINT_URL": project.environ["AWS_ENDPOINT_URL"],
               "AWS_CA_BUNDLE": project.environ["AWS_CA_BUNDLE"],
               "AWS_CONFIG_FILE": str(tmp_path / "none"),
               "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
               "AWS_EC2_METADATA_DISABLED": "true"}  # never ask an instance metadata service
    with pytest.raises(ConfigError, match="no AWS credentials: set AWS_PROFILE"):
        state.bootstrap(load_settings(project.path, environ), repair=False)


def test_region_mismatch(project: Project) -> None:
    bucket, _ = names(project)
    project.client("s3").create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    with pytest.raises(AwsError, match=f"bucket {bucket} is in eu-west-1, not us-east-1"):
        state.bootstrap(settings_of(project), repair=False)


class Canned(http.server.BaseHTTPRequestHandler):
    """A real HTTP endpoint that answers from a script: (status, body) per request."""

    script: list[tuple[int, bytes]] = []
    seen: list[str] = []

    def do_HEAD(self) -> None:
        self.seen.append(self.command)
        status, body = self.script.pop(0) if self.script else (200, b"")
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.seen.append(self.command)
        status, body = self.script.pop(0) if self.script else (200, b"")
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def canned() -> Iterator[tuple[str, type[Canned]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Canned)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Canned.script, Canned.seen = [], []
    yield f"http://127.0.0.1:{server.server_address[1]}", Canned
    server.shutdown()


def test_transient_errors_are_retried(canned, mocker, tmp_path) -> None:
    url, handler = canned
    sleep = mocker.patch("tenacity.nap.time.sleep")  # the clock is the one thing not real here
    handler.script = [(503, b""), (500, b""), (200, b"")]
    settings = load_settings(tmp_path, {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b",
                                        "AWS_ENDPOINT_URL": url})
    s3 = aws.client(settings, "s3")
    aws.call(s3.head_bucket, Bucket="b")
    assert handler.seen == ["HEAD", "HEAD", "HEAD"]
    assert sleep.call_count == 2


def test_permanent_errors_are_not_retried(canned, mocker, tmp_path) -> None:
    url, handler = canned
    mocker.patch("tenacity.nap.time.sleep")
    denied = (b"<?xml version='1.0'?><Error><Code>AccessDenied</Code>"
              b"<Message>Access Denied</Message></Error>")
    handler.script = [(403, denied)] * 3
    settings = load_settings(tmp_path, {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b",
                                        "AWS_ENDPOINT_URL": url})
    s3 = aws.client(settings, "s3")
    with pytest.raises(botocore.exceptions.ClientError):
        aws.call(s3.get_bucket_versioning, Bucket="b")
    assert handler.seen == ["GET"]
