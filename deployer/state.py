"""`deploy bootstrap-state`: the hardened S3 state bucket and DynamoDB lock table, once per
AWS account, built from `*_if_necessary` steps that also repair drift.

    needs_bootstrap(settings)                 -> is anything missing?
    check(settings)                           -> every item: unchanged / drifted / missing (no change)
    bootstrap(settings, repair=..., progress) -> create what is missing; repair drift if asked

Each step probes first, acts only when needed, and says why. Nothing here deletes the bucket or
the table, and no other module does either.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.exceptions

from deployer import aws, engine
from deployer.config import Settings, environments
from deployer.errors import AwsError, ConfigError
from deployer.results import CHANGED, MISSING, UNCHANGED, Progress, StepResult, no_progress

DRIFTED = "drifted"
TLS_SID = "DenyInsecureTransport"
LIFECYCLE_ID = "deployer-state-retention"
TAGS = {"ManagedBy": "deployer", "Purpose": "terraform-state"}


@dataclass(frozen=True)
class Target:
    bucket: str
    table: str
    region: str
    sse: str  # aws:kms (with an S3 bucket key) or AES256
    noncurrent_days: int


def target(settings: Settings) -> Target:
    env = settings.environ
    sse = env.get("DEPLOYER_STATE_SSE", "aws:kms") or "aws:kms"
    if sse not in ("aws:kms", "AES256"):
        raise ConfigError(f"DEPLOYER_STATE_SSE={sse!r} must be aws:kms or AES256")
    try:
        days = int(env.get("DEPLOYER_STATE_NONCURRENT_DAYS", "90") or "90")
    except ValueError:
        raise ConfigError("DEPLOYER_STATE_NONCURRENT_DAYS must be a whole number of days") from None
    return Target(settings.state_bucket, settings.lock_table, settings.aws_region, sse, days)


@dataclass(frozen=True)
class Probe:
    ok: bool
    found: str  # what is there now, for the report


@dataclass(frozen=True)
class Step:
    name: str
    iam_action: str  # what a denied repair needs, for the error message
    probe: Callable[[Any, Target], Probe]
    fix: Callable[[Any, Target], None]


# ---- S3 --------------------------------------------------------------------------------------

def _code(exc: botocore.exceptions.ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def bucket_exists(s3: Any, t: Target) -> bool:
    try:
        aws.call(s3.head_bucket, Bucket=t.bucket)
        return True
    except botocore.exceptions.ClientError as exc:
        if _code(exc) in ("404", "NoSuchBucket", "NotFound"):
            return False
        if _code(exc) in ("403", "AccessDenied", "Forbidden"):
            raise AwsError(
                f"bucket {t.bucket} exists but these credentials cannot use it: it belongs to another"
                " account, or s3:ListBucket is denied; choose another name with DEPLOYER_STATE_BUCKET"
            ) from None
        raise


def create_bucket_if_necessary(s3: Any, t: Target, progress: Progress) -> StepResult:
    if bucket_exists(s3, t):
        region = aws.call(s3.get_bucket_location, Bucket=t.bucket).get("LocationConstraint") or "us-east-1"
        if region != t.region:
            raise AwsError(f"bucket {t.bucket} is in {region}, not {t.region}; set AWS_REGION={region}"
                           " or choose another bucket name with DEPLOYER_STATE_BUCKET")
        return StepResult("bucket", UNCHANGED, f"s3://{t.bucket} exists in {region}")
    progress(f"creating bucket s3://{t.bucket} in {t.region}")
    kwargs: dict[str, Any] = {"Bucket": t.bucket}
    if t.region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": t.region}
    try:
        aws.call(s3.create_bucket, **kwargs)
    except botocore.exceptions.ClientError as exc:
        if _code(exc) == "BucketAlreadyExists":
            raise AwsError(f"bucket name {t.bucket} is taken by another account; choose another"
                           " with DEPLOYER_STATE_BUCKET") from None
        raise
    return StepResult("bucket", CHANGED, f"created s3://{t.bucket} in {t.region}")


def _get(fn: Callable[..., Any], missing: tuple[str, ...], **kwargs: Any) -> Any:
    """A getter that answers None where AWS says "not configured"."""
    try:
        return aws.call(fn, **kwargs)
    except botocore.exceptions.ClientError as exc:
        if _code(exc) in missing:
            return None
        raise


def _versioning(s3: Any, t: Target) -> Probe:
    status = aws.call(s3.get_bucket_versioning, Bucket=t.bucket).get("Status", "never enabled")
    return Probe(status == "Enabled", f"versioning {status}")


def _fix_versioning(s3: Any, t: Target) -> None:
    aws.call(s3.put_bucket_versioning, Bucket=t.bucket,
             VersioningConfiguration={"Status": "Enabled"})


def _encryption(s3: Any, t: Target) -> Probe:
    got = _get(s3.get_bucket_encryption, ("ServerSideEncryptionConfigurationNotFoundError",),
               Bucket=t.bucket)
    rules = (got or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    if not rules:
        return Probe(False, "no default encryption")
    rule = rules[0]
    algo = rule.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm", "")
    key = bool(rule.get("BucketKeyEnabled"))
    ok = algo == t.sse and (key or t.sse != "aws:kms")
    return Probe(ok, f"default encryption {algo}{' with bucket key' if key else ''}")


def _fix_encryption(s3: Any, t: Target) -> None:
    rule: dict[str, Any] = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": t.sse}}
    if t.sse == "aws:kms":
        rule["BucketKeyEnabled"] = True
    aws.call(s3.put_bucket_encryption, Bucket=t.bucket,
             ServerSideEncryptionConfiguration={"Rules": [rule]})


_BLOCKS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


def _public_access(s3: Any, t: Target) -> Probe:
    got = _get(s3.get_public_access_block, ("NoSuchPublicAccessBlockConfiguration",), Bucket=t.bucket)
    conf = (got or {}).get("PublicAccessBlockConfiguration", {})
    off = [b for b in _BLOCKS if not conf.get(b)]
    return Probe(not off, "all four public access blocks on" if not off else f"off: {', '.join(off)}")


def _fix_public_access(s3: Any, t: Target) -> None:
    aws.call(s3.put_public_access_block, Bucket=t.bucket,
             PublicAccessBlockConfiguration=dict.fromkeys(_BLOCKS, True))


def tls_statement(bucket: str) -> dict[str, Any]:
    return {
        "Sid": TLS_SID, "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def _policy(s3: Any, t: Target) -> dict[str, Any]:
    got = _get(s3.get_bucket_policy, ("NoSuchBucketPolicy",), Bucket=t.bucket)
    return json.loads(got["Policy"]) if got else {"Version": "2012-10-17", "Statement": []}


def _tls_only(s3: Any, t: Target) -> Probe:
    ours = [s for s in _policy(s3, t).get("Statement", []) if s.get("Sid") == TLS_SID]
    ok = bool(ours) and ours[0] == tls_statement(t.bucket)
    return Probe(ok, "policy denies requests without TLS" if ok else "no TLS-only policy statement")


def _fix_tls_only(s3: Any, t: Target) -> None:
    policy = _policy(s3, t)  # keep the operator's own statements
    others = [s for s in policy.get("Statement", []) if s.get("Sid") != TLS_SID]
    policy["Statement"] = [*others, tls_statement(t.bucket)]
    aws.call(s3.put_bucket_policy, Bucket=t.bucket, Policy=json.dumps(policy))


def _ownership(s3: Any, t: Target) -> Probe:
    got = _get(s3.get_bucket_ownership_controls, ("OwnershipControlsNotFoundError",), Bucket=t.bucket)
    rules = (got or {}).get("OwnershipControls", {}).get("Rules", [])
    found = rules[0].get("ObjectOwnership", "none") if rules else "none"
    return Probe(found == "BucketOwnerEnforced", f"object ownership {found}")


def _fix_ownership(s3: Any, t: Target) -> None:
    aws.call(s3.put_bucket_ownership_controls, Bucket=t.bucket,
             OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})


def lifecycle_rule(days: int) -> dict[str, Any]:
    return {
        "ID": LIFECYCLE_ID, "Status": "Enabled", "Filter": {"Prefix": ""},
        "NoncurrentVersionExpiration": {"NoncurrentDays": days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
    }


def _lifecycle_rules(s3: Any, t: Target) -> list[dict[str, Any]]:
    got = _get(s3.get_bucket_lifecycle_configuration, ("NoSuchLifecycleConfiguration",),
               Bucket=t.bucket)
    return (got or {}).get("Rules", [])


def _lifecycle(s3: Any, t: Target) -> Probe:
    ours = [r for r in _lifecycle_rules(s3, t) if r.get("ID") == LIFECYCLE_ID]
    if not ours:
        return Probe(False, "no state retention rule")
    rule = ours[0]
    days = rule.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays")
    aborts = rule.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation")
    ok = rule.get("Status") == "Enabled" and days == t.noncurrent_days and aborts is not None
    return Probe(ok, f"noncurrent versions expire after {days} days, rule {rule.get('Status')}")


def _fix_lifecycle(s3: Any, t: Target) -> None:
    others = [r for r in _lifecycle_rules(s3, t) if r.get("ID") != LIFECYCLE_ID]
    aws.call(s3.put_bucket_lifecycle_configuration, Bucket=t.bucket,
             LifecycleConfiguration={"Rules": [*others, lifecycle_rule(t.noncurrent_days)]})


def _bucket_tags(s3: Any, t: Target) -> dict[str, str]:
    got = _get(s3.get_bucket_tagging, ("NoSuchTagSet", "NoSuchTagSetError"), Bucket=t.bucket)
    return {x["Key"]: x["Value"] for x in (got or {}).get("TagSet", [])}


def _tagged(found: dict[str, str]) -> Probe:
    missing = sorted(k for k, v in TAGS.items() if found.get(k) != v)
    return Probe(not missing, "tagged" if not missing else f"missing tags {missing}")


def _s3_tags(s3: Any, t: Target) -> Probe:
    return _tagged(_bucket_tags(s3, t))


def _fix_s3_tags(s3: Any, t: Target) -> None:
    tags = {**_bucket_tags(s3, t), **TAGS}
    aws.call(s3.put_bucket_tagging, Bucket=t.bucket,
             Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]})


BUCKET_STEPS = (
    Step("versioning", "s3:PutBucketVersioning", _versioning, _fix_versioning),
    Step("encryption", "s3:PutEncryptionConfiguration", _encryption, _fix_encryption),
    Step("public access block", "s3:PutBucketPublicAccessBlock", _public_access, _fix_public_access),
    Step("tls-only policy", "s3:PutBucketPolicy", _tls_only, _fix_tls_only),
    Step("object ownership", "s3:PutBucketOwnershipControls", _ownership, _fix_ownership),
    Step("lifecycle", "s3:PutLifecycleConfiguration", _lifecycle, _fix_lifecycle),
    Step("bucket tags", "s3:PutBucketTagging", _s3_tags, _fix_s3_tags),
)


# ---- DynamoDB --------------------------------------------------------------------------------

def describe_table(ddb: Any, t: Target) -> dict[str, Any] | None:
    got = _get(ddb.describe_table, ("ResourceNotFoundException",), TableName=t.table)
    return got["Table"] if got else None


def create_table_if_necessary(ddb: Any, t: Target, progress: Progress) -> StepResult:
    table = describe_table(ddb, t)
    if table is not None:
        keys = [(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]]
        if keys != [("LockID", "HASH")]:
            raise AwsError(f"table {t.table} exists with key {keys}, not LockID (string); Terraform"
                           " cannot lock with it: choose another name with DEPLOYER_LOCK_TABLE")
        return StepResult("lock table", UNCHANGED, f"dynamodb:{t.table} exists with key LockID")
    progress(f"creating lock table {t.table}")
    aws.call(
        ddb.create_table, TableName=t.table,
        KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST", SSESpecification={"Enabled": True},
        DeletionProtectionEnabled=True, Tags=[{"Key": k, "Value": v} for k, v in TAGS.items()],
    )
    ddb.get_waiter("table_exists").wait(TableName=t.table, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    return StepResult("lock table", CHANGED, f"created dynamodb:{t.table} (key LockID, on demand)")


def _billing(ddb: Any, t: Target) -> Probe:
    mode = (describe_table(ddb, t) or {}).get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED")
    return Probe(mode == "PAY_PER_REQUEST", f"billing {mode}")


def _fix_billing(ddb: Any, t: Target) -> None:
    aws.call(ddb.update_table, TableName=t.table, BillingMode="PAY_PER_REQUEST")


def _table_sse(ddb: Any, t: Target) -> Probe:
    status = (describe_table(ddb, t) or {}).get("SSEDescription", {}).get("Status", "DISABLED")
    return Probe(status in ("ENABLED", "ENABLING"), f"server-side encryption {status}")


def _fix_table_sse(ddb: Any, t: Target) -> None:
    aws.call(ddb.update_table, TableName=t.table, SSESpecification={"Enabled": True})


def _pitr(ddb: Any, t: Target) -> Probe:
    got = aws.call(ddb.describe_continuous_backups, TableName=t.table)
    status = (got["ContinuousBackupsDescription"].get("PointInTimeRecoveryDescription", {})
              .get("PointInTimeRecoveryStatus", "DISABLED"))
    return Probe(status == "ENABLED", f"point-in-time recovery {status}")


def _fix_pitr(ddb: Any, t: Target) -> None:
    aws.call(ddb.update_continuous_backups, TableName=t.table,
             PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})


def _deletion_protection(ddb: Any, t: Target) -> Probe:
    on = bool((describe_table(ddb, t) or {}).get("DeletionProtectionEnabled"))
    return Probe(on, f"deletion protection {'on' if on else 'off'}")


def _fix_deletion_protection(ddb: Any, t: Target) -> None:
    aws.call(ddb.update_table, TableName=t.table, DeletionProtectionEnabled=True)


def _table_tags(ddb: Any, t: Target) -> dict[str, str]:
    arn = (describe_table(ddb, t) or {})["TableArn"]
    return {x["Key"]: x["Value"] for x in aws.call(ddb.list_tags_of_resource, ResourceArn=arn)["Tags"]}


def _ddb_tags(ddb: Any, t: Target) -> Probe:
    return _tagged(_table_tags(ddb, t))


def _fix_ddb_tags(ddb: Any, t: Target) -> None:
    arn = (describe_table(ddb, t) or {})["TableArn"]
    aws.call(ddb.tag_resource, ResourceArn=arn, Tags=[{"Key": k, "Value": v} for k, v in TAGS.items()])


TABLE_STEPS = (
    Step("table billing", "dynamodb:UpdateTable", _billing, _fix_billing),
    Step("table encryption", "dynamodb:UpdateTable", _table_sse, _fix_table_sse),
    Step("point-in-time recovery", "dynamodb:UpdateContinuousBackups", _pitr, _fix_pitr),
    Step("deletion protection", "dynamodb:UpdateTable", _deletion_protection, _fix_deletion_protection),
    Step("table tags", "dynamodb:TagResource", _ddb_tags, _fix_ddb_tags),
)


# ---- the public steps ------------------------------------------------------------------------

def needs_bootstrap(settings: Settings) -> bool:
    """True when the bucket or the table does not exist yet."""
    t = target(settings)
    with _aws_errors(t):
        return not bucket_exists(aws.client(settings, "s3"), t) or \
            describe_table(aws.client(settings, "dynamodb"), t) is None


def check(settings: Settings) -> tuple[StepResult, ...]:
    """Report every item without changing anything."""
    return _run(settings, create=False, repair=False, progress=no_progress)


def bootstrap(
    settings: Settings, *, repair: bool, progress: Progress = no_progress
) -> tuple[StepResult, ...]:
    """Create what is missing; repair drifted settings when `repair`, else report them.
    For example `bootstrap(settings, repair=True)` returns `(StepResult(name='bucket',
    status='unchanged', reason='s3://ops-chronos-… exists in us-east-1'), …)`. (Not a doctest:
    it needs an AWS endpoint; tests/test_state.py runs it against moto.)
    """
    return _run(settings, create=True, repair=repair, progress=progress)


def _run(settings: Settings, *, create: bool, repair: bool, progress: Progress) -> tuple[StepResult, ...]:
    t = target(settings)
    s3, ddb = aws.client(settings, "s3"), aws.client(settings, "dynamodb")
    results: list[StepResult] = []
    with _aws_errors(t):
        for resource, ensure, steps, client in (
            ("bucket", create_bucket_if_necessary, BUCKET_STEPS, s3),
            ("lock table", create_table_if_necessary, TABLE_STEPS, ddb),
        ):
            exists = bucket_exists(s3, t) if resource == "bucket" else describe_table(ddb, t) is not None
            if not exists and not create:
                results.append(StepResult(resource, MISSING, "does not exist"))
                results += [StepResult(s.name, MISSING, f"no {resource} yet") for s in steps]
                continue
            created = not exists
            results.append(ensure(client, t, progress))
            for step in steps:
                results.append(_ensure(step, client, t, created=created, repair=repair, progress=progress))
    return tuple(results)


def _ensure(step: Step, client: Any, t: Target, *, created: bool, repair: bool,
            progress: Progress) -> StepResult:
    """Probe → act only if needed (always on a resource just created) → say why."""
    probe = step.probe(client, t)
    if probe.ok:
        return StepResult(step.name, UNCHANGED, probe.found)
    if not created and not repair:
        return StepResult(step.name, DRIFTED, probe.found)
    progress(f"{'setting' if created else 'repairing'} {step.name} ({probe.found})")
    try:
        step.fix(client, t)
    except botocore.exceptions.ClientError as exc:
        if _code(exc) in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            where = t.bucket if step in BUCKET_STEPS else t.table
            raise AwsError(f"access denied setting {step.name} on {where}:"
                           f" the credentials need {step.iam_action}") from None
        raise
    after = step.probe(client, t)  # read it back: never trust our own write
    if not after.ok:
        raise AwsError(f"{step.name} did not take effect (now: {after.found})")
    verb = "set" if created else "repaired"
    was = "" if created else f" (was: {probe.found})"
    return StepResult(step.name, CHANGED, f"{verb}: {after.found}{was}")


class _aws_errors:  # noqa: N801  # used as a `with` block, reads as a phrase
    """Turn the errors an operator must act on into one-line messages."""

    def __init__(self, t: Target):
        self.t = t

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            raise ConfigError("no AWS credentials: set AWS_PROFILE (or AWS_ACCESS_KEY_ID and"
                              " AWS_SECRET_ACCESS_KEY) in .env or the environment") from None
        if isinstance(exc, botocore.exceptions.ClientError) and _code(exc) in (
                "AccessDenied", "AccessDeniedException"):
            op = exc.operation_name
            raise AwsError(f"access denied on {op} for the state of {self.t.bucket}/{self.t.table}") from None
        if isinstance(exc, botocore.exceptions.EndpointConnectionError):
            raise AwsError(f"cannot reach AWS: {exc}") from None
        return False


def write_backend_configs(settings: Settings) -> list[Path]:
    """Point every environment's backend config at the bootstrapped bucket and table."""
    written = []
    text = engine.render_backend(settings)
    for env in environments(settings.project):
        path = engine.backend_path(settings, env)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
