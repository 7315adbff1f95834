"""The moto patches (deployer/sandbox/moto_patches.py): each fails here if its fix is lost."""

from __future__ import annotations

import json

from conftest import Project

from deployer.sandbox.moto_patches import applicable_statements
from deployer.state import tls_statement


def test_bool_conditions_decide_whether_a_statement_applies() -> None:
    policy = {"Statement": [tls_statement("b"), {"Sid": "Read", "Effect": "Allow", "Principal": "*",
                                                  "Action": "s3:GetObject", "Resource": "*"}]}
    over_http = applicable_statements(policy, {"aws:SecureTransport": "false"})
    over_tls = applicable_statements(policy, {"aws:SecureTransport": "true"})
    assert [s["Sid"] for s in over_http] == ["DenyInsecureTransport", "Read"]
    assert "Condition" not in over_http[0]
    assert [s["Sid"] for s in over_tls] == ["Read"]


def test_tls_only_bucket_policy_lets_tls_requests_through(project: Project) -> None:
    """Unpatched moto 5.2.5 ignores the condition and denies every request to the bucket."""
    s3 = project.client("s3")
    bucket = f"{project.profile}-tls-only"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(
        {"Version": "2012-10-17", "Statement": [tls_statement(bucket)]}))
    s3.put_object(Bucket=bucket, Key="state", Body=b"{}")
    assert s3.get_object(Bucket=bucket, Key="state")["Body"].read() == b"{}"
