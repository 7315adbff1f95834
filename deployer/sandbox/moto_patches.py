"""Version-pinned fixes for moto gaps the sandbox runs into. Applied by the sandbox's endpoint
(`python -m deployer.sandbox.endpoint`) before the server starts; each patch has a test in
tests/test_moto_patches.py that fails if the fix is lost.

1. Bucket policy conditions (moto 5.2.5, s3/models.py `FakeBucket.get_permission`): moto ignores
   every condition operator but StringEquals, so the standard TLS-only statement
   (Deny s3:* when `aws:SecureTransport` is "false") denies *every* request, and a statement
   whose condition does not hold is treated as a denial instead of not applying. The patch
   evaluates `Bool` conditions against the request (https or not) and drops statements whose
   conditions do not hold; other operators keep moto's behaviour.
"""

from __future__ import annotations

import json
from typing import Any

PINNED = "5.2.5"


def apply() -> None:
    """Apply every patch to the moto modules loaded in this process."""
    import moto

    if moto.__version__ != PINNED:
        raise RuntimeError(
            f"deployer's moto patches are written for moto {PINNED}, not {moto.__version__};"
            " install moto[server]=={PINNED} (pip install 'deployer[sandbox]')")
    _patch_bucket_policy_conditions()


def request_is_tls() -> bool | None:
    """Whether the request being served came over https; None outside a request."""
    import flask

    if not flask.has_request_context():
        return None
    return flask.request.scheme == "https"


def applicable_statements(policy: dict[str, Any], context: dict[str, str]) -> list[dict[str, Any]]:
    """The statements whose `Bool` conditions hold for `context`, with those conditions removed."""
    statements = policy.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    kept = []
    for statement in statements:
        conditions = dict(statement.get("Condition", {}))
        bools = conditions.pop("Bool", {})
        holds = all(
            str(context.get(key, "")).lower() in [str(v).lower() for v in
                                                   (expected if isinstance(expected, list) else [expected])]
            for key, expected in bools.items()
        )
        if not holds:
            continue
        statement = {k: v for k, v in statement.items() if k != "Condition"}
        if conditions:
            statement["Condition"] = conditions
        kept.append(statement)
    return kept


def _patch_bucket_policy_conditions() -> None:
    from moto.iam.access_control import IAMPolicy, PermissionResult
    from moto.s3.models import FakeBucket

    def get_permission(self: Any, action: str, resource: str) -> Any:
        if self.policy is None:
            return PermissionResult.NEUTRAL
        policy = json.loads(self.policy.decode() if isinstance(self.policy, bytes) else self.policy)
        tls = request_is_tls()
        context = {} if tls is None else {"aws:SecureTransport": "true" if tls else "false"}
        kept = applicable_statements(policy, context)
        if not kept:
            return PermissionResult.NEUTRAL
        return IAMPolicy(json.dumps({**policy, "Statement": kept})).is_action_permitted(action, resource)

    FakeBucket.get_permission = get_permission
