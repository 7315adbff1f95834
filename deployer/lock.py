"""One lock per stack and environment for a whole host phase (deploy or rollback), in the
DynamoDB lock table that `deploy bootstrap-state` made, beside Terraform's own locks.

Per-host deploy locks stay as a second guard, but alone they let two runs started together each
win some hosts and leave the fleet on two commits; a run takes this lock before it touches any
host. With no AWS configured (or no lock table yet) the run says so and relies on the per-host
locks. A lock whose holder is a dead process of this machine is broken (and the run says so);
any other is named with the command that clears it, `deploy unlock`. That command also reads
the engine's own lock on a stack's state here (`state_lock`), to show it before it is released.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from deployer.config import Settings
from deployer.errors import AwsError, LockHeldError
from deployer.results import Progress

if TYPE_CHECKING:
    import botocore.exceptions


def _aws() -> tuple[Any, type[Exception]]:
    """deployer.aws and botocore's ClientError, imported only when a run lock is really taken or
    cleared (boto3 costs about 0.2 s): a run with no AWS configured, and the host code that only
    asks `is_stale`, never pay for them."""
    import botocore.exceptions

    from deployer import aws

    return aws, botocore.exceptions.ClientError

PREFIX = "deployer-run"  # Terraform's own items are "<bucket>/<key>[-md5]": never this


def lock_id(stack: str, env: str) -> str:
    """The item's key in the lock table.

    >>> lock_id("edge", "prod")
    'deployer-run/edge/prod'
    """
    return f"{PREFIX}/{stack}/{env}"


def is_stale(holder: str) -> bool:
    """The holder is a process of this machine that no longer runs."""
    match = re.search(r"^\S+@(\S+) pid=(\d+)", holder.strip())
    if not match or match.group(1) != socket.gethostname():
        return False
    try:
        os.kill(int(match.group(2)), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _code(exc: botocore.exceptions.ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


NO_AWS = ("run lock: no AWS configured (AWS_PROFILE, keys or AWS_ENDPOINT_URL); per-host deploy"
          " locks only")


def aws_configured(settings: Settings) -> bool:
    env = settings.environ
    return bool(settings.aws_endpoint_url or env.get("AWS_PROFILE") or env.get("AWS_ACCESS_KEY_ID"))


def table_client(settings: Settings) -> Any | None:
    """The DynamoDB client, or None when no AWS is configured for this project."""
    return _aws()[0].client(settings, "dynamodb") if aws_configured(settings) else None


def _table_client(settings: Settings, progress: Progress, made: Future[Any | None] | None = None,
                  ) -> Any | None:
    """table_client, or the one `made` ahead (its error, if it failed, raised here); None said."""
    ddb = made.result() if made is not None else table_client(settings)
    if ddb is None:
        progress(NO_AWS)
    return ddb


@contextlib.contextmanager
def held(settings: Settings, stack: str, env: str, info: str, progress: Progress,
         client: Future[Any | None] | None = None) -> Iterator[str]:
    """Hold the run lock of `stack`/`env` while the block runs; yields where it is held
    (`dynamodb:<table>`), or "" when the run goes on with per-host locks only. `client`: the
    table's client made ahead (pipeline.ahead), while the engine ran."""
    ddb = _table_client(settings, progress, client)
    where = f"dynamodb:{settings.lock_table}"
    if ddb is None or not _acquire(ddb, settings.lock_table, lock_id(stack, env), info,
                                   f"{stack}/{env}", progress):
        yield ""
        return
    try:
        yield where
    finally:
        _release(ddb, settings.lock_table, lock_id(stack, env), info)


def _acquire(ddb: Any, table: str, key: str, info: str, what: str, progress: Progress) -> bool:
    aws, ClientError = _aws()  # noqa: N806  # a class, named as one
    put = {"TableName": table, "Item": {"LockID": {"S": key}, "Info": {"S": info}},
           "ConditionExpression": "attribute_not_exists(LockID)"}
    for attempt in (1, 2):
        try:
            aws.call(ddb.put_item, **put)
            return True
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                progress(f"run lock: the lock table dynamodb:{table} does not exist (run `deploy"
                         " bootstrap-state`); per-host deploy locks only")
                return False
            if _code(exc) != "ConditionalCheckFailedException":
                raise AwsError(f"run lock: {exc}") from None
        holder = holder_of(ddb, table, key)
        if attempt == 1 and holder and is_stale(holder):
            progress(f"run lock: breaking a stale lock ({holder}): that process is gone")
            remove(ddb, table, key, holder)
            continue
        raise LockHeldError(f"{what} (run lock in dynamodb:{table})",
                            f"{holder or 'unknown'}; if that run is gone:"
                            f" deploy unlock {what.replace('/', ' ')}")
    return False  # not reached: the second attempt either took the lock or raised


def _release(ddb: Any, table: str, key: str, info: str) -> None:
    remove(ddb, table, key, info)


def holder_of(ddb: Any, table: str, key: str) -> str:
    item = _aws()[0].call(ddb.get_item, TableName=table, Key={"LockID": {"S": key}},
                    ConsistentRead=True).get("Item")
    return item["Info"]["S"] if item and "Info" in item else ""


def remove(ddb: Any, table: str, key: str, holder: str) -> bool:
    """Delete the lock only while `holder` holds it; False when it changed hands."""
    aws, ClientError = _aws()  # noqa: N806  # a class, named as one
    try:
        aws.call(ddb.delete_item, TableName=table, Key={"LockID": {"S": key}},
                 ConditionExpression="Info = :holder",
                 ExpressionAttributeValues={":holder": {"S": holder}})
        return True
    except ClientError as exc:
        if _code(exc) in ("ConditionalCheckFailedException", "ResourceNotFoundException"):
            return False
        raise AwsError(f"run lock: {exc}") from None


def state_lock(settings: Settings, key: str) -> dict[str, Any] | None:
    """The engine's own lock on the state `key`, read where its S3 backend keeps it: the lock
    table's item `<bucket>/<key>`, or the object `<key>.tflock` with S3's lock file
    (DEPLOYER_USE_LOCKFILE). Its LockInfo (ID, Who, Operation, Created), or None: not locked,
    or no AWS configured, or no lock table or bucket yet."""
    if not aws_configured(settings):
        return None
    aws, ClientError = _aws()  # noqa: N806  # a class, named as one
    try:
        if settings.use_lockfile:
            body = aws.call(aws.client(settings, "s3").get_object, Bucket=settings.state_bucket,
                            Key=f"{key}.tflock")["Body"].read()
        else:
            item = aws.call(aws.client(settings, "dynamodb").get_item, TableName=settings.lock_table,
                            Key={"LockID": {"S": f"{settings.state_bucket}/{key}"}},
                            ConsistentRead=True).get("Item") or {}
            body = item.get("Info", {}).get("S", "")
    except ClientError as exc:
        if _code(exc) in ("NoSuchKey", "NoSuchBucket", "ResourceNotFoundException"):
            return None
        raise AwsError(f"state lock: {exc}") from None
    if not body:
        return None
    try:
        info = json.loads(body)
    except ValueError:
        raise AwsError(f"state lock of {key}: its lock info is not JSON; see it in the AWS"
                       " console") from None
    return info if isinstance(info, dict) else None


def clear(settings: Settings, stack: str, env: str, confirm: Callable[[str, str], bool],
          progress: Progress) -> str:
    """`deploy unlock`: show the run lock's holder and remove it after a yes. What happened."""
    ddb = _table_client(settings, progress)
    if ddb is None:
        return "no run lock (no AWS configured)"
    ClientError = _aws()[1]  # noqa: N806  # a class, named as one
    table, key = settings.lock_table, lock_id(stack, env)
    try:
        holder = holder_of(ddb, table, key)
    except ClientError as exc:
        if _code(exc) == "ResourceNotFoundException":
            return f"no run lock (no table dynamodb:{table})"
        raise AwsError(f"run lock: {exc}") from None
    if not holder:
        return "no run lock"
    if not confirm(f"{stack}/{env}: remove the run lock held by {holder}? Type 'yes'", "yes"):
        return f"kept the run lock held by {holder}"
    if not remove(ddb, table, key, holder):
        return "the run lock changed hands meanwhile; left alone"
    return f"removed the run lock held by {holder}"
