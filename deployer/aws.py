"""boto3 sessions and clients from Settings, and the one retry policy for AWS calls.

Transient failures (throttling, 5xx, dropped connections) are retried with exponential backoff
by tenacity; everything else (AccessDenied, a missing resource, bad input) fails at once.
botocore's own retries are turned off so there is exactly one policy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions
import tenacity

from deployer.config import Settings
from deployer.errors import ConfigError

T = TypeVar("T")

TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestLimitExceeded",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "SlowDown",
    "RequestTimeout", "RequestTimeoutException", "InternalError", "InternalFailure",
    "InternalServerError", "ServiceUnavailable", "ServiceUnavailableException",
})
_CONNECTION_ERRORS = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectTimeoutError,
)
ATTEMPTS = 5


def is_transient(exc: BaseException) -> bool:
    """Throttling, a 5xx, or a dropped connection: worth another try."""
    if isinstance(exc, _CONNECTION_ERRORS):
        return True
    if isinstance(exc, botocore.exceptions.ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in TRANSIENT_CODES or status >= 500
    return False


def retrying(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorate an AWS call: transient errors are retried with backoff, others raised at once."""
    return tenacity.retry(
        retry=tenacity.retry_if_exception(is_transient),
        wait=tenacity.wait_exponential(multiplier=0.5, max=8),
        stop=tenacity.stop_after_attempt(ATTEMPTS),
        reraise=True,
    )(fn)


def call(method: Callable[..., T], **kwargs: Any) -> T:
    """`call(s3.get_bucket_versioning, Bucket=b)`: one AWS call under the retry policy."""
    return retrying(method)(**kwargs)


def session(settings: Settings) -> boto3.session.Session:
    """A session for the operator's credentials: keys from the environment (or .env) win;
    otherwise the AWS_PROFILE profile."""
    env = settings.environ
    try:
        if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
            return boto3.session.Session(
                aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                aws_session_token=env.get("AWS_SESSION_TOKEN") or None,
                region_name=settings.aws_region,
            )
        return boto3.session.Session(profile_name=env.get("AWS_PROFILE") or None,
                                     region_name=settings.aws_region)
    except botocore.exceptions.ProfileNotFound:
        raise ConfigError(
            f"AWS profile {env.get('AWS_PROFILE')!r} is not in your AWS config; set AWS_PROFILE"
            " in .env or the environment (see .env.template)") from None


def client(settings: Settings, service: str) -> Any:
    config = botocore.config.Config(retries={"total_max_attempts": 1}, connect_timeout=5,
                                    read_timeout=30)
    return session(settings).client(service, endpoint_url=settings.aws_endpoint_url or None,
                                    verify=settings.environ.get("AWS_CA_BUNDLE") or None,
                                    config=config)
