"""Version-pinned fixes for moto gaps the sandbox runs into. Applied by the sandbox's endpoint
(`python -m deployer.sandbox.endpoint`) before the server starts; each patch has a test in
tests/test_moto_patches.py that fails if the fix is lost.

1. Bucket policy conditions (moto 5.2.5, s3/models.py `FakeBucket.get_permission`): moto ignores
   every condition operator but StringEquals, so the standard TLS-only statement
   (Deny s3:* when `aws:SecureTransport` is "false") denies *every* request, and a statement
   whose condition does not hold is treated as a denial instead of not applying. The patch
   evaluates `Bool` conditions against the request (https or not) and drops statements whose
   conditions do not hold; other operators keep moto's behaviour.
2. Subnet IPv6 association state (moto 5.2.5, ec2/models/subnets.py
   `Subnet.ipv6_cidr_block_association_set`): the state is answered as the stringified dict
   "{'State': 'associated'}" instead of "associated", so the AWS provider waits for an
   association that never settles and re-plans the subnet forever.
3. Instance security groups given per network interface (moto 5.2.5, ec2/models/instances.py
   `Instance.prep_nics`): the AWS provider 3.39 launches into a subnet through
   `NetworkInterface.N.SecurityGroupId`; moto attaches those groups to the interface at most and
   reports none on the instance, so `vpc_security_group_ids` never settles. The patch carries
   them over as AWS does: the primary interface's groups are the instance's groups.
4. Private hosted zones (moto 5.2.5, route53/responses.py `Route53.create_hosted_zone`): AWS makes
   a zone private when CreateHostedZone names a VPC; moto only when the request also sets
   `HostedZoneConfig.PrivateZone`, which the AWS provider 3.39 does not send. The zone comes out
   public with its VPC dropped, and `aws_route53_zone`'s `vpc` block never settles. The patch
   takes a VPC without an explicit PrivateZone as a private zone, as AWS does.
5. RDS Performance Insights (moto 5.2.5, rds/models.py `DBInstance`): CreateDBInstance and
   ModifyDBInstance accept EnablePerformanceInsights, PerformanceInsightsKMSKeyId and
   PerformanceInsightsRetentionPeriod but moto drops them, so DescribeDBInstances never reports
   them and `aws_db_instance.performance_insights_enabled` plans a change on every run. The
   patch keeps the three and answers them, as AWS does.
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
    _patch_subnet_ipv6_state()
    _patch_instance_nic_security_groups()
    _patch_private_zone_from_vpc()
    _patch_db_performance_insights()


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


def _patch_subnet_ipv6_state() -> None:
    from moto.ec2.models.subnets import Subnet

    def ipv6_cidr_block_association_set(self: Any) -> list[dict[str, Any]]:
        return [
            {
                "ipv6CidrBlock": association["ipv6CidrBlock"],
                "associationId": association["associationId"],
                "ipv6CidrBlockState": {"state": association["ipv6CidrBlockState"]["State"]},
            }
            for association in self.ipv6_cidr_block_associations.values()
            if association["ipv6CidrBlockState"]["State"] == "associated"
        ]

    Subnet.ipv6_cidr_block_association_set = property(ipv6_cidr_block_association_set)


def _patch_instance_nic_security_groups() -> None:
    from moto.ec2.models.instances import Instance

    original = Instance.prep_nics

    def prep_nics(self: Any, nic_spec: list[dict[str, Any]], *args: Any, **kwargs: Any) -> None:
        for nic in nic_spec:
            ids = nic.get("SecurityGroupId") or nic.get("SecurityGroupIds")
            if ids and not nic.get("Groups"):
                nic["Groups"] = list(ids) if isinstance(ids, list) else [ids]
        original(self, nic_spec, *args, **kwargs)
        primary = self.nics.get(0)
        if not self.security_groups and primary is not None:
            self.security_groups = [
                self.ec2_backend.get_security_group_from_id(g) if isinstance(g, str) else g
                for g in primary._group_set
            ]

    Instance.prep_nics = prep_nics


def _patch_private_zone_from_vpc() -> None:
    from moto.route53.responses import Route53

    original = Route53.create_hosted_zone

    def create_hosted_zone(self: Any) -> Any:
        if self._get_param("VPC.VPCId") and self._get_param("HostedZoneConfig.PrivateZone") is None:
            get_bool_param = self._get_bool_param  # this request's handler only

            def private_when_a_vpc_is_given(name: str, if_none: Any = None) -> Any:
                return True if name == "HostedZoneConfig.PrivateZone" else get_bool_param(name, if_none)

            self._get_bool_param = private_when_a_vpc_is_given
        return original(self)

    Route53.create_hosted_zone = create_hosted_zone


def _patch_db_performance_insights() -> None:
    from moto.rds.models import DBInstance

    original = DBInstance.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        # ModifyDBInstance sets the same snake_case names (DBInstance.update's setattr).
        self.enable_performance_insights = bool(kwargs.get("enable_performance_insights", False))
        self.performance_insights_kms_key_id = kwargs.get("performance_insights_kms_key_id")
        self.performance_insights_retention_period = kwargs.get("performance_insights_retention_period")

    DBInstance.__init__ = __init__
    # What DescribeDBInstances' PerformanceInsightsEnabled is serialized from.
    DBInstance.performance_insights_enabled = property(
        lambda self: bool(getattr(self, "enable_performance_insights", False)))
