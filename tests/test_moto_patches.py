"""The moto patches (deployer/sandbox/moto_patches.py): each fails here if its fix is lost."""

from __future__ import annotations

import json

from deployer.sandbox.moto_patches import applicable_statements
from deployer.state import tls_statement

from conftest import Project


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


def test_subnet_ipv6_association_state_is_a_plain_state(project: Project) -> None:
    """Unpatched moto 5.2.5 answers "{'State': 'associated'}" and the provider never settles."""
    ec2 = project.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16", AmazonProvidedIpv6CidrBlock=True)["Vpc"]
    vpc_v6 = ec2.describe_vpcs(VpcIds=[vpc["VpcId"]])["Vpcs"][0]["Ipv6CidrBlockAssociationSet"][0]
    block = vpc_v6["Ipv6CidrBlock"].replace("::/56", "::/64")
    subnet = ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock="10.9.1.0/24", Ipv6CidrBlock=block)
    got = ec2.describe_subnets(SubnetIds=[subnet["Subnet"]["SubnetId"]])["Subnets"][0]
    states = [a["Ipv6CidrBlockState"]["State"] for a in got["Ipv6CidrBlockAssociationSet"]]
    assert states == ["associated"]


def test_groups_given_per_network_interface_are_the_instance_groups(project: Project) -> None:
    """How the AWS provider 3.39 launches into a subnet; unpatched moto reports no groups."""
    ec2 = project.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.8.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=f"{project.profile}-nic", Description="t",
                                      VpcId=vpc)["GroupId"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    run = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, NetworkInterfaces=[{
        "DeviceIndex": 0, "SubnetId": subnet, "Groups": [group],
        "AssociatePublicIpAddress": True}])
    instance_id = run["Instances"][0]["InstanceId"]
    got = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert [g["GroupId"] for g in got["SecurityGroups"]] == [group]


def test_a_zone_created_with_a_vpc_is_private(project: Project) -> None:
    """How the AWS provider 3.39 creates a private zone (a VPC, no PrivateZone flag); unpatched
    moto makes it public and drops the VPC, and `aws_route53_zone.vpc` never settles."""
    ec2, route53 = project.client("ec2"), project.client("route53")
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    zone = route53.create_hosted_zone(Name=f"{project.profile}.internal", CallerReference=project.profile,
                                      VPC={"VPCRegion": "us-east-1", "VPCId": vpc})["HostedZone"]
    got = route53.get_hosted_zone(Id=zone["Id"])
    assert got["HostedZone"]["Config"]["PrivateZone"] is True
    assert [v["VPCId"] for v in got["VPCs"]] == [vpc]


def test_db_instances_keep_performance_insights(project: Project) -> None:
    """Unpatched moto drops EnablePerformanceInsights and its key and retention, so
    `aws_db_instance.performance_insights_enabled` plans a change on every run."""
    rds = project.client("rds")
    name = f"{project.profile}-pi"
    key = "arn:aws:kms:us-east-1:123456789012:key/performance-insights"
    created = rds.create_db_instance(
        DBInstanceIdentifier=name, Engine="mysql", DBInstanceClass="db.m5.large", AllocatedStorage=20,
        MasterUsername="admin_user", MasterUserPassword="0123456789abcdef",
        EnablePerformanceInsights=True, PerformanceInsightsKMSKeyId=key,
        PerformanceInsightsRetentionPeriod=7)["DBInstance"]
    assert (created["PerformanceInsightsEnabled"], created["PerformanceInsightsKMSKeyId"],
            created["PerformanceInsightsRetentionPeriod"]) == (True, key, 7)
    rds.modify_db_instance(DBInstanceIdentifier=name, EnablePerformanceInsights=False, ApplyImmediately=True)
    (got,) = rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"]
    assert got["PerformanceInsightsEnabled"] is False
    rds.delete_db_instance(DBInstanceIdentifier=name, SkipFinalSnapshot=True)
