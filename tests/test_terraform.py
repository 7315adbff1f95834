"""The Terraform stacks `shared`, `dashboard` and `cso`, for real: the embedded engine, the AWS
provider 3.39.0 and a moto endpoint. Every root and module is formatted and valid; shared and
dashboard apply, settle (a second apply changes nothing), and the dashboard is destroyed while
shared and the state stay; cso applies single, then ha, settles and is destroyed."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, Project, result_of

pytestmark = pytest.mark.slow

ROOTS = sorted(p.parent for p in (REPO / "terraform").glob("*/main.tf"))
MODULES = sorted(p.parent for p in (REPO / "terraform" / "modules").glob("*/main.tf"))


def engine(args: list[str], cwd: Path, tmp_path: Path, mirror: Path,
           tf_vars: dict[str, str] | None = None,
           environ: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    rc = tmp_path / "terraformrc"
    rc.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{mirror}"\n  }}\n}}\n')
    env = {k: v for k, v in (environ or os.environ).items() if not k.startswith("TF_VAR_")}
    env.update({"TF_CLI_CONFIG_FILE": str(rc), "TF_DATA_DIR": str(tmp_path / cwd.name),
                "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"})
    env.update({f"TF_VAR_{k}": v for k, v in (tf_vars or {}).items()})
    return subprocess.run([sys.executable, "-m", "deployer.embedded", f"-chdir={cwd}", *args],
                          env=env, capture_output=True, text=True, timeout=300)


def test_terraform_is_formatted(tmp_path: Path, provider_mirror: Path) -> None:
    done = engine(["fmt", "-check", "-recursive", "-diff"], REPO / "terraform", tmp_path,
                  provider_mirror)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("root", ROOTS + MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_root_and_module_validates(root: Path, tmp_path: Path, provider_mirror: Path) -> None:
    init = engine(["init", "-backend=false", "-input=false", "-no-color"], root, tmp_path,
                  provider_mirror)
    assert init.returncode == 0, init.stdout + init.stderr
    done = engine(["validate", "-no-color"], root, tmp_path, provider_mirror)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_variable_and_output_is_documented_and_typed() -> None:
    import re

    for path in (REPO / "terraform").rglob("variables.tf"):
        blocks = re.split(r'^variable "', path.read_text(), flags=re.M)[1:]
        for block in blocks:
            name = block.split('"', 1)[0]
            assert "description" in block and "type " in block, f"{path}: variable {name}"
    for path in (REPO / "terraform").rglob("outputs.tf"):
        for block in re.split(r'^output "', path.read_text(), flags=re.M)[1:]:
            assert "description" in block, f"{path}: output {block.split(chr(34), 1)[0]}"
    for path in (REPO / "terraform" / "modules").rglob("*.tf"):
        assert 'provider "aws"' not in path.read_text(), f"{path}: modules take no provider block"


def stage_env(project: Project, public_key: str) -> None:
    project.write_env("stage", "\n".join([
        "TF_VAR_deptype=stage",
        'TF_VAR_ssh_cidr_blocks=["127.0.0.0/8"]', 'TF_VAR_app_cidr_blocks=["127.0.0.0/8"]',
        f'TF_VAR_public_key="{public_key}"',
        "git_repo=file:///nonexistent.git", "git_ref=main",
        "jwt_secret_key=0123456789abcdef", "frp_token=0123456789abcdef",
        "db_password=0123456789abcdef", "background_color=#123456",
        "vite_api_base_url=http://localhost:8080/api",
    ]) + "\n")


def test_shared_and_dashboard_apply_settle_and_destroy(project: Project, tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")],
                   check=True)
    stage_env(project, (tmp_path / "key.pub").read_text().strip())
    project.deploy("bootstrap-state", "-y", check=True)

    shared = project.deploy("shared", "stage", "apply", "--json", check=True)
    shared_out = result_of(shared)["engine"]["outputs"]
    assert set(shared_out["eip_allocation_ids"]) == {"stage", "prod"}
    ec2 = project.client("ec2")
    vpc = ec2.describe_vpcs(VpcIds=[shared_out["vpc_id"]])["Vpcs"][0]
    assert vpc["Ipv6CidrBlockAssociationSet"], "the VPC has an IPv6 block"
    subnet = ec2.describe_subnets(SubnetIds=[shared_out["subnet_id"]])["Subnets"][0]
    assert subnet["MapPublicIpOnLaunch"] is True
    rules = ec2.describe_security_groups(GroupIds=[shared_out["security_group_id"]])[
        "SecurityGroups"][0]["IpPermissions"]
    assert {r.get("FromPort") for r in rules} >= {22, 80, 443, 8080, 7000}
    assert ingress_sources(ec2, shared_out["security_group_id"]) == {
        22: {"127.0.0.0/8"}, 80: {"127.0.0.0/8"}, 443: {"127.0.0.0/8"}, 8080: {"127.0.0.0/8"},
        7000: {"127.0.0.0/8"}}  # the env file's loopback CIDRs, and no 0.0.0.0/0 anywhere
    assert_default_group_is_empty(ec2, shared_out["vpc_id"])
    assert ec2.describe_flow_logs(Filters=[{"Name": "resource-id", "Values": [shared_out["vpc_id"]]}])[
        "FlowLogs"] == []  # off outside prod unless TF_VAR_enable_flow_logs says so
    assert shared_out.get("flow_log_group_name") is None  # a null output is not in the state

    again = result_of(project.deploy("shared", "stage", "apply", "--json", check=True))
    assert again["engine"]["applied"] is False, again["engine"]["plan"]

    dash = project.deploy("dashboard", "stage", "apply", "--no-hosts", "--json", check=True)
    out = result_of(dash)["engine"]["outputs"]
    address = out["host_address"]
    assert ipaddress.ip_address(address).is_loopback  # moto's Elastic IPs are 127.x.y.z
    assert address == shared_out["eip_public_ips"]["stage"]
    assert out["ssh_command"] == f"ssh ec2-user@{address}"
    assert out["dashboard_url"] == f"http://{address}:8080/"
    instance = ec2.describe_instances(InstanceIds=[out["instance_id"]])["Reservations"][0][
        "Instances"][0]
    assert instance["ImageId"].startswith("ami-")
    assert instance["KeyName"] == "chronos-stage-dashboard"

    settled = project.deploy("dashboard", "stage", "apply", "--no-hosts", "--json", check=True)
    result = result_of(settled)["engine"]
    assert result["applied"] is False and result["reason"] == "no infrastructure change; apply skipped", \
        result["plan"]

    project.deploy("dashboard", "stage", "destroy", "-y", check=True)
    state = ec2.describe_instances(InstanceIds=[out["instance_id"]])["Reservations"][0][
        "Instances"][0]["State"]["Name"]
    assert state == "terminated"
    # shared and the state are untouched.
    assert ec2.describe_vpcs(VpcIds=[shared_out["vpc_id"]])["Vpcs"]
    after = result_of(project.deploy("shared", "stage", "apply", "--json", check=True))
    assert after["engine"]["applied"] is False
    s3 = project.client("s3")
    assert s3.head_bucket(Bucket=f"{project.profile}-chronos-terraform-state-storage")


def ingress_sources(ec2, group_id: str) -> dict[int, set[str]]:
    """Port → the IPv4 and IPv6 ranges allowed in, read back from the endpoint."""
    group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    sources: dict[int, set[str]] = {}
    for rule in group["IpPermissions"]:
        ranges = {r["CidrIp"] for r in rule.get("IpRanges", [])}
        ranges |= {r["CidrIpv6"] for r in rule.get("Ipv6Ranges", [])}
        sources.setdefault(rule["FromPort"], set()).update(ranges)
    return sources


def assert_default_group_is_empty(ec2, vpc_id: str) -> None:
    default = ec2.describe_security_groups(Filters=[
        {"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": ["default"]}])[
        "SecurityGroups"][0]
    assert default["IpPermissions"] == [] and default["IpPermissionsEgress"] == [], default


BOUNDARY = "arn:aws:iam::123456789012:policy/chronos-permissions-boundary"


def test_shared_in_prod_logs_flows_and_opens_only_the_given_cidrs(project: Project) -> None:
    """prod gets VPC flow logs by default: a KMS-encrypted log group with a retention, written
    through a role that can write to that group only. The security group lets in exactly the
    env file's CIDRs. A second apply changes nothing; destroy removes it all."""
    project.write_env("prod", "\n".join([
        "TF_VAR_deptype=prod", 'TF_VAR_eip_environments=["prod"]',
        'TF_VAR_ssh_cidr_blocks=["127.0.0.1/32"]', 'TF_VAR_app_cidr_blocks=["127.0.0.0/8", "10.9.0.0/16"]',
        f"TF_VAR_permissions_boundary={BOUNDARY}",
    ]) + "\n")
    project.deploy("bootstrap-state", "-y", check=True)
    out = result_of(project.deploy("shared", "prod", "apply", "-y", "--json", check=True))[
        "engine"]["outputs"]
    ec2, logs, iam, kms = (project.client(s) for s in ("ec2", "logs", "iam", "kms"))

    assert ingress_sources(ec2, out["security_group_id"]) == {
        22: {"127.0.0.1/32"}, **{p: {"127.0.0.0/8", "10.9.0.0/16"} for p in (80, 443, 8080, 7000)}}
    assert_default_group_is_empty(ec2, out["vpc_id"])

    group_name = out["flow_log_group_name"]
    assert group_name == "chronos-prod-vpc-flow-logs"
    (flow,) = ec2.describe_flow_logs(Filters=[{"Name": "resource-id", "Values": [out["vpc_id"]]}])[
        "FlowLogs"]
    assert flow["TrafficType"] == "ALL" and flow["LogDestinationType"] == "cloud-watch-logs"
    (group,) = logs.describe_log_groups(logGroupNamePrefix=group_name)["logGroups"]
    assert flow.get("LogGroupName", flow.get("LogDestination", "")).endswith(group_name), flow
    assert group["retentionInDays"] == 365
    key = kms.describe_key(KeyId=group["kmsKeyId"])["KeyMetadata"]
    assert kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"] is True
    key_policy = json.loads(kms.get_key_policy(KeyId=key["KeyId"], PolicyName="default")["Policy"])
    logs_statement = next(s for s in key_policy["Statement"] if "Service" in s["Principal"])
    assert logs_statement["Principal"]["Service"] == "logs.us-east-1.amazonaws.com"
    assert logs_statement["Condition"]["ArnEquals"]["kms:EncryptionContext:aws:logs:arn"].endswith(
        f":log-group:{group_name}")

    role_name = flow["DeliverLogsPermissionArn"].rsplit("/", 1)[1]
    assert role_name == "chronos-prod-flow-logs"
    trust = iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
    assert [s["Principal"] for s in trust["Statement"]] == [{"Service": "vpc-flow-logs.amazonaws.com"}]
    (policy_name,) = iam.list_role_policies(RoleName=role_name)["PolicyNames"]
    statements = iam.get_role_policy(RoleName=role_name, PolicyName=policy_name)["PolicyDocument"][
        "Statement"]
    write = next(s for s in statements if "logs:PutLogEvents" in s["Action"])
    assert all(group_name in r for r in write["Resource"])  # this log group and nothing else
    assert iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"] == []
    for role in (role_name, "chronos-prod-host"):  # what modules/policies requires of every role
        got = iam.get_role(RoleName=role)["Role"]["PermissionsBoundary"]["PermissionsBoundaryArn"]
        assert got == BOUNDARY, role

    again = result_of(project.deploy("shared", "prod", "apply", "-y", "--json", check=True))
    assert again["engine"]["applied"] is False, again["engine"]["plan"]

    project.deploy("shared", "prod", "destroy", "-y", check=True)
    assert logs.describe_log_groups(logGroupNamePrefix=group_name)["logGroups"] == []
    assert ec2.describe_flow_logs(Filters=[{"Name": "resource-id", "Values": [out["vpc_id"]]}])[
        "FlowLogs"] == []
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "PendingDeletion"


CIDR_MESSAGE = "TF_VAR_ssh_cidr_blocks (who may reach SSH) must be a non-empty HCL list of IPv4 CIDRs"


def test_shared_without_cidrs_is_refused_naming_them(project: Project) -> None:
    project.write_env("stage", "TF_VAR_deptype=stage\n")
    run = project.deploy("shared", "stage", "plan")
    assert run.returncode == 2
    assert run.stderr == (f"error: {project.path / 'deployments' / 'env-stage'}: missing required"
                          " variables for stack shared: TF_VAR_ssh_cidr_blocks, TF_VAR_app_cidr_blocks\n")
    assert not (project.path / ".deployer" / "logs").exists()  # refused before any engine run

    # A value that is there but not a CIDR list reaches Terraform, whose validation names it.
    project.write_env("stage", 'TF_VAR_deptype=stage\nTF_VAR_ssh_cidr_blocks=[]\n'
                      'TF_VAR_app_cidr_blocks=["0.0.0.0/0"]\n')
    project.deploy("bootstrap-state", "-y", check=True)
    run = project.deploy("shared", "stage", "plan")
    assert run.returncode == 1
    assert "var.ssh_cidr_blocks is empty list of string" in run.stderr, run.stderr
    (log,) = (project.path / ".deployer" / "logs").glob("*-shared-stage-plan.log")
    text = re.sub(r"^[0-9:.]+ ", "", log.read_text(), flags=re.M)  # the log's time stamps
    assert CIDR_MESSAGE in " ".join(text.split())  # Terraform wraps its lines


def vars_only_root(tmp_path: Path, root: str) -> Path:
    """A root holding only terraform/<root>/variables.tf: plans in a second, offline, with no
    provider, and runs exactly the root's declarations and validations."""
    where = tmp_path / "roots" / f"{root}-variables"  # engine() keeps its data in tmp_path/<name>
    where.mkdir(parents=True)
    (where / "variables.tf").symlink_to(REPO / "terraform" / root / "variables.tf")
    return where


@pytest.mark.parametrize(("value", "accepted"), [
    (None, False), ("[]", False), ('["0.0.0.0"]', False), ('["10.0.0.1/8"]', False),
    ('["::/0"]', False), ('["example.com/32"]', False),
    ('["127.0.0.0/8"]', True), ('["203.0.113.0/24", "0.0.0.0/0"]', True),
])
def test_shared_cidr_variables_have_no_default_and_are_validated(
        value: str | None, accepted: bool, tmp_path: Path, provider_mirror: Path) -> None:
    root = vars_only_root(tmp_path, "shared")
    tf_vars = {"deptype": "stage", "aws_region": "us-east-1", "app_cidr_blocks": '["127.0.0.0/8"]'}
    if value is not None:
        tf_vars["ssh_cidr_blocks"] = value
    done = engine(["plan", "-input=false", "-no-color"], root, tmp_path, provider_mirror, tf_vars)
    text = " ".join((done.stdout + done.stderr).split())
    if accepted:
        assert done.returncode == 0, text
    elif value is None:
        assert done.returncode == 1 and 'No value for required variable' in text, text
        assert 'variable "ssh_cidr_blocks"' in text, text
    else:
        assert done.returncode == 1, text
        assert CIDR_MESSAGE in text, text


@pytest.mark.parametrize(("name", "value", "accepted"), [
    ("additional_public_key", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB teammate@laptop", True),
    ("additional_public_key", "ecdsa-sha2-nistp256 AAAAE2VjZHNh=", True),
    ("additional_public_key", "ssh-ed25519 AAAA x\nssh-rsa AAAA attacker", False),
    ("additional_public_key", 'command="sh" ssh-ed25519 AAAA', False),
    ("additional_public_key", "not a key", False),
    ("ssh_user", "ec2-user", True),
    ("ssh_user", "ec2-user'; reboot; '", False),
    ("ssh_user", "../root", False),
])
def test_dashboard_validates_what_user_data_is_made_of(name: str, value: str, accepted: bool,
                                                       tmp_path: Path, provider_mirror: Path) -> None:
    root = vars_only_root(tmp_path, "dashboard")
    tf_vars = {"deptype": "stage", "aws_region": "us-east-1", "state_bucket": "b",
               "state_key_prefix": "stage/", "public_key": "ssh-ed25519 AAAA", name: value}
    done = engine(["plan", "-input=false", "-no-color"], root, tmp_path, provider_mirror, tf_vars)
    text = " ".join((done.stdout + done.stderr).split())
    assert (done.returncode == 0) is accepted, text
    if not accepted:
        assert f"TF_VAR_{name} must be" in text, text


def test_user_data_keeps_any_extra_key_as_data(tmp_path: Path, provider_mirror: Path) -> None:
    """scripts/ec2-setup.sh, rendered by the real templatefile() exactly as terraform/dashboard
    calls it, then run with the host commands stubbed: a key full of quotes and shell syntax
    lands in authorized_keys byte for byte and runs nothing."""
    hostile = "ssh-ed25519 AAAA x'\"; touch pwned; echo '$(touch pwned2)` `"
    root = tmp_path / "roots" / "user-data"  # engine() keeps its data in tmp_path/user-data
    root.mkdir(parents=True)
    call = re.search(r'templatefile\("\$\{path\.module\}/\.\./\.\./scripts/ec2-setup\.sh", (\{.*?\n  \})\)',
                     (REPO / "terraform" / "dashboard" / "main.tf").read_text(), re.S)
    assert call, "terraform/dashboard/main.tf renders scripts/ec2-setup.sh"
    render = f'templatefile("{REPO}/scripts/ec2-setup.sh", {call.group(1)})'
    (root / "main.tf").write_text(
        'variable "ssh_user" {\n  type = string\n}\n'
        'variable "additional_public_key" {\n  type = string\n}\n'
        f'output "user_data" {{\n  value = {render}\n}}\n')
    done = engine(["apply", "-auto-approve", "-input=false", "-no-color"], root, tmp_path,
                  provider_mirror, {"ssh_user": "ec2-user", "additional_public_key": hostile})
    assert done.returncode == 0, done.stdout + done.stderr
    script = engine(["output", "-raw", "user_data"], root, tmp_path, provider_mirror).stdout
    assert "pwned" not in script and "'ec2-user'" in script

    home, stubs = tmp_path / "home", tmp_path / "bin"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "authorized_keys").write_text("ssh-ed25519 KEYPAIR\n")
    stubs.mkdir()
    for command in ("dnf", "systemctl", "usermod", "chown"):
        (stubs / command).write_text("#!/bin/sh\nexit 0\n")
    (stubs / "getent").write_text(f"#!/bin/sh\necho 'ec2-user:x:1000:1000::{home}:/bin/bash'\n")
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    (tmp_path / "user_data.sh").write_text(script)
    ran = subprocess.run(["bash", str(tmp_path / "user_data.sh")], cwd=tmp_path, capture_output=True,
                         text=True, env={"PATH": f"{stubs}:{os.environ['PATH']}"}, timeout=30)
    assert ran.returncode == 0, ran.stderr
    assert (home / ".ssh" / "authorized_keys").read_text() == f"ssh-ed25519 KEYPAIR\n{hostile}\n"
    assert (home / ".setup_complete").exists()
    assert not list(tmp_path.rglob("pwned*"))


def statements(name: str) -> list[dict]:
    return json.loads((REPO / "terraform" / "modules" / "policies" / name).read_text())["Statement"]


def actions(statement: dict) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def test_deployment_policy_cannot_escalate() -> None:
    """The deployment policy grants role creation and instance launches, so every way to give a
    role more than the project boundary must be closed (see modules/policies/README.md)."""
    policy = statements("terraform-deployment-policy.json")
    boundary = "arn:aws:iam::${aws:PrincipalAccount}:policy/chronos-permissions-boundary"
    allows = [s for s in policy if s["Effect"] == "Allow"]
    denies = [s for s in policy if s["Effect"] == "Deny"]
    role_writes = {"iam:CreateRole", "iam:PutRolePolicy", "iam:AttachRolePolicy"}
    for statement in allows:
        assert not any(a.endswith("*") for a in actions(statement) if a.startswith("iam:")), statement
        if actions(statement) & role_writes:
            assert statement["Condition"] == {"StringEquals": {"iam:PermissionsBoundary": boundary}}
        if "iam:PassRole" in actions(statement):
            assert set(statement["Condition"]["StringEquals"]) == {"iam:PassedToService"}
            assert statement["Resource"] in {"arn:aws:iam::*:role/chronos-*-host",
                                             "arn:aws:iam::*:role/chronos-*-flow-logs"}
        assert not actions(statement) & {"iam:PutRolePermissionsBoundary",
                                         "iam:DeleteRolePermissionsBoundary", "iam:CreatePolicy",
                                         "iam:CreatePolicyVersion"}, statement
    assert any(actions(s) >= role_writes and s["Condition"] == {
        "StringNotEquals": {"iam:PermissionsBoundary": boundary}} for s in denies)
    assert any("iam:AttachRolePolicy" in actions(s) and s["Condition"] == {
        "ArnNotLike": {"iam:PolicyARN": "arn:aws:iam::*:policy/chronos-*"}} for s in denies)
    assert any(actions(s) >= {"iam:PutRolePermissionsBoundary", "iam:DeleteRolePermissionsBoundary"}
               and s["Resource"] == "*" and "Condition" not in s for s in denies)
    # The boundary itself grants nothing in IAM, STS or KMS, and nothing that passes roles.
    for statement in statements("permissions-boundary-policy.json"):
        assert statement["Effect"] == "Allow"
        assert not {a.split(":")[0] for a in actions(statement)} & {"iam", "sts", "kms", "*"}


# --- terraform/cso ---------------------------------------------------------------------------

CSO = REPO / "terraform" / "cso"
ADMIN_CIDR, UI_CIDR = "198.51.100.0/24", "203.0.113.0/24"
ANYWHERE = "0.0.0.0/0"
CSO_ROLES = ("frontend", "backend", "keystone", "rabbitmq")


def self_signed_pair() -> tuple[str, str]:
    """What deploy generates once for the ha load balancer: a certificate and its key (PEM)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cso.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("cso.example")]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()).decode())


def expected_cso_rules(topology: str) -> dict[str, dict[str, set[tuple[int, str]]]]:
    """Group role -> {"in": {(port, source)}, "out": {(port, destination)}}: the architecture's
    flows and nothing else (a source is a group's role or a CIDR)."""
    ha = topology == "ha"
    hosts_and_jump = ("jump", *CSO_ROLES)
    groups = (*hosts_and_jump, "database", "efs", *(("alb",) if ha else ()))
    rules: dict[str, dict[str, set[tuple[int, str]]]] = {g: {"in": set(), "out": set()} for g in groups}

    def flow(source: str, target: str, port: int) -> None:
        rules[target]["in"].add((port, source))
        rules[source]["out"].add((port, target))

    rules["jump"]["in"].add((22, ADMIN_CIDR))
    for role in CSO_ROLES:
        flow("jump", role, 22)
    if ha:
        rules["alb"]["in"].add((8102, UI_CIDR))
        rules["alb"]["out"].add((443, ANYWHERE))  # Cognito's token endpoint
        flow("alb", "frontend", 8102)
    else:
        rules["jump"]["in"].add((8102, UI_CIDR))
        flow("jump", "frontend", 8102)
    flow("frontend", "backend", 8080)
    flow("backend", "keystone", 5000)
    flow("backend", "rabbitmq", 5671)
    flow("backend", "database", 3306)
    flow("keystone", "database", 3306)
    for port in (4369, 25672, 5671):
        flow("rabbitmq", "rabbitmq", port)
    for role in hosts_and_jump:
        flow(role, "efs", 2049)
        rules[role]["out"] |= {(80, ANYWHERE), (443, ANYWHERE)}  # packages, through the NAT
    return rules


def cso_rules(ec2, vpc_id: str) -> dict[str, dict[str, set[tuple[int, str]]]]:
    """The same shape, read back from the endpoint (groups named <prefix>-<role>)."""
    groups = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["SecurityGroups"]
    role_of = {g["GroupId"]: g["GroupName"].removeprefix("cso-stage-") for g in groups}
    found = {}
    for group in groups:
        if group["GroupName"] == "default":
            continue
        sides = {}
        for side, key in (("in", "IpPermissions"), ("out", "IpPermissionsEgress")):
            pairs = set()
            for rule in group[key]:
                assert rule["IpProtocol"] == "tcp" and rule["FromPort"] == rule["ToPort"], rule
                pairs |= {(rule["FromPort"], r["CidrIp"]) for r in rule.get("IpRanges", [])}
                pairs |= {(rule["FromPort"], role_of[p["GroupId"]]) for p in rule.get("UserIdGroupPairs", [])}
                assert not rule.get("Ipv6Ranges") and not rule.get("PrefixListIds"), rule
            sides[side] = pairs
        found[role_of[group["GroupId"]]] = sides
    return found


def cso_instances(ec2, vpc_id: str) -> dict[str, dict]:
    """Running instances of the VPC by Name tag."""
    reservations = ec2.describe_instances(Filters=[
        {"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "instance-state-name", "Values": ["running"]}])
    instances = [i for r in reservations["Reservations"] for i in r["Instances"]]
    return {next(t["Value"] for t in i["Tags"] if t["Key"] == "Name"): i for i in instances}


def cso_databases(rds) -> list[dict]:
    return [d for d in rds.describe_db_instances()["DBInstances"] if d["DBInstanceIdentifier"] == "cso-stage"]


def plan_actions(run, plan_file: Path) -> dict[str, list[str]]:
    shown = run(["show", "-json", "-no-color", str(plan_file)])
    assert shown.returncode == 0, shown.stderr
    return {c["address"]: c["change"]["actions"] for c in json.loads(shown.stdout)["resource_changes"]
            if c["change"]["actions"] != ["no-op"] and c["mode"] == "managed"}


def test_cso_single_then_ha_apply_settles_and_destroys(project: Project, tmp_path: Path,
                                                        provider_mirror: Path) -> None:
    """terraform/cso on the sandbox endpoint: single (5 hosts, one NAT gateway, no load
    balancer), then ha, which adds exactly the second host of each role, the second NAT gateway,
    the load balancer with Cognito, and turns on Multi-AZ; each topology settles; destroy
    removes it all and leaves the state bucket and lock table."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")],
                   check=True)
    certificate, private_key = self_signed_pair()
    project.write_env("stage", "TF_VAR_deptype=stage\n")
    project.deploy("bootstrap-state", "-y", check=True)
    bucket = f"{project.profile}-chronos-terraform-state-storage"
    table = f"{project.profile}-chronos-terraform-state-locks"
    endpoint = project.environ["AWS_ENDPOINT_URL"]
    # What deploy renders for the sandbox, but with no state lock: this test drives the raw
    # engine, without deploy's recovery when the AWS SDK resends a lock request whose answer it
    # lost (engine.Workspace._run), and under CI load one of its dozen lock requests could lock
    # it out of its own state. Locking is tested through deploy (test_engine, test_cli).
    backend = tmp_path / "backend.hcl"
    backend.write_text("\n".join([
        f'bucket = "{bucket}"', 'key = "stage/cso.tfstate"', 'region = "us-east-1"', "encrypt = true",
        "use_path_style = true", "skip_credentials_validation = true",
        "skip_requesting_account_id = true", "skip_metadata_api_check = true",
        "skip_region_validation = true",
        f'endpoints = {{\n  s3 = "{endpoint}"\n  dynamodb = "{endpoint}"\n  sts = "{endpoint}"\n}}', ""]))
    tf_vars = {
        "deptype": "stage", "aws_region": "us-east-1", "aws_endpoint_url": endpoint,
        "topology": "single", "vpc_cidr": "10.42.0.0/16",
        "admin_cidr_blocks": f'["{ADMIN_CIDR}"]', "ui_cidr_blocks": f'["{UI_CIDR}"]',
        "public_key": (tmp_path / "key.pub").read_text().strip(),
        "db_password": "0123456789abcdef", "rabbitmq_password": "fedcba9876543210",
        "alb_certificate_pem": certificate, "alb_private_key_pem": private_key,
    }  # stage defaults: no deletion protection, secrets deleted at once, a final DB snapshot

    def run(args: list[str]) -> subprocess.CompletedProcess[str]:
        return engine(args, CSO, tmp_path, provider_mirror, tf_vars, project.environ)

    def apply() -> dict:
        done = run(["apply", "-auto-approve", "-input=false", "-no-color"])
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr
        out = run(["output", "-json"])
        return {k: v["value"] for k, v in json.loads(out.stdout).items()}

    def settled() -> None:
        done = run(["plan", "-detailed-exitcode", "-input=false", "-no-color"])
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr  # 0: no changes

    init = run(["init", "-input=false", "-no-color", f"-backend-config={backend}"])
    assert init.returncode == 0, init.stdout + init.stderr
    ec2, elbv2, rds, efs, kms, secrets, route53, iam = (project.client(s) for s in (
        "ec2", "elbv2", "rds", "efs", "kms", "secretsmanager", "route53", "iam"))

    # --- single ---
    out = apply()
    vpc_id = out["vpc_id"]
    assert out["topology"] == "single" and out["ssh_user"] == "ec2-user"
    subnets = {s["CidrBlock"]: s for s in ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]}
    assert set(subnets) == {"10.42.0.0/18", "10.42.64.0/18", "10.42.128.0/18", "10.42.192.0/18"}
    zones = [subnets[f"10.42.{q}.0/18"]["AvailabilityZone"] for q in (0, 64, 128, 192)]
    assert zones[0] == zones[2] != zones[1] == zones[3]  # public and private A, then B
    instances = cso_instances(ec2, vpc_id)
    assert sorted(instances) == ["cso-stage-backend-1", "cso-stage-frontend-1", "cso-stage-jump",
                                 "cso-stage-keystone-1", "cso-stage-rabbitmq-1"]
    jump = instances["cso-stage-jump"]
    assert jump["SubnetId"] == subnets["10.42.0.0/18"]["SubnetId"] and jump["InstanceType"] == "t2.large"
    assert out["jump_address"] == jump["PublicIpAddress"]
    assert ipaddress.ip_address(out["jump_address"]).is_loopback  # moto's Elastic IPs are 127.x.y.z
    for name, instance in instances.items():
        assert instance["MetadataOptions"]["HttpTokens"] == "required", name
        assert instance["KeyName"] == "cso-stage", name
        if name != "cso-stage-jump":
            assert instance["SubnetId"] == subnets["10.42.128.0/18"]["SubnetId"], name
            assert "PublicIpAddress" not in instance, name
    assert {n: i["InstanceType"] for n, i in instances.items() if n != "cso-stage-jump"} == {
        "cso-stage-frontend-1": "c5.2xlarge", "cso-stage-backend-1": "c5.4xlarge",
        "cso-stage-keystone-1": "t2.xlarge", "cso-stage-rabbitmq-1": "t2.xlarge"}
    user_data = ec2.describe_instance_attribute(InstanceId=jump["InstanceId"], Attribute="userData")
    assert b".setup_complete" in base64.b64decode(user_data["UserData"]["Value"])  # the ready marker
    nats = ec2.describe_nat_gateways(Filter=[{"Name": "vpc-id", "Values": [vpc_id]},
                                             {"Name": "state", "Values": ["available"]}])["NatGateways"]
    assert [n["SubnetId"] for n in nats] == [subnets["10.42.0.0/18"]["SubnetId"]]
    assert [lb for lb in elbv2.describe_load_balancers()["LoadBalancers"] if lb["VpcId"] == vpc_id] == []
    assert cso_rules(ec2, vpc_id) == expected_cso_rules("single")
    assert_default_group_is_empty(ec2, vpc_id)
    private_ips = {r: [instances[f"cso-stage-{r}-1"]["PrivateIpAddress"]] for r in CSO_ROLES}
    assert out["role_private_ips"] == {"jump": [jump["PrivateIpAddress"]], **private_ips}
    assert [out[f"{r}_hosts"] for r in CSO_ROLES] == [private_ips[r] for r in CSO_ROLES]
    assert out["jump_ssh"] == f"ec2-user@{out['jump_address']}"
    assert out["ssh_command"] == f"ssh ec2-user@{out['jump_address']}"
    assert out["role_ssh_commands"]["backend"] == [
        f"ssh -J ec2-user@{out['jump_address']} ec2-user@{private_ips['backend'][0]}"]
    assert out["admin_ui_url"] == f"https://{out['jump_address']}:8102/" and out["alb_dns_name"] == ""

    (db,) = cso_databases(rds)
    assert db["MultiAZ"] is False and db["StorageEncrypted"] is True and db["BackupRetentionPeriod"] == 30
    assert db["Endpoint"]["Address"] == out["db_address"] and db["PubliclyAccessible"] is False
    assert db["DeletionProtection"] is False and db["PerformanceInsightsEnabled"] is True
    storage_key, secrets_key = (kms.describe_key(KeyId=f"alias/cso-stage-{k}")["KeyMetadata"]["Arn"]
                                for k in ("storage", "secrets"))
    assert db["KmsKeyId"] == storage_key
    for key in (storage_key, secrets_key):
        assert kms.get_key_rotation_status(KeyId=key)["KeyRotationEnabled"] is True
    (fs,) = efs.describe_file_systems(FileSystemId=out["efs_id"])["FileSystems"]
    assert fs["Encrypted"] is True and fs["KmsKeyId"] == storage_key
    assert efs.describe_lifecycle_configuration(FileSystemId=out["efs_id"])["LifecyclePolicies"] == [
        {"TransitionToIA": "AFTER_30_DAYS"}]
    mounts = efs.describe_mount_targets(FileSystemId=out["efs_id"])["MountTargets"]
    assert {m["SubnetId"] for m in mounts} == {
        subnets["10.42.128.0/18"]["SubnetId"], subnets["10.42.192.0/18"]["SubnetId"]}
    for arn, value in ((out["db_secret_arn"], "0123456789abcdef"),
                       (out["rabbitmq_secret_arn"], "fedcba9876543210")):
        assert secrets.describe_secret(SecretId=arn)["KmsKeyId"] == secrets_key
        assert secrets.get_secret_value(SecretId=arn)["SecretString"] == value
    # Only the jump host may read them, and decrypt only through Secrets Manager.
    policy = iam.get_role_policy(RoleName="cso-stage-jump", PolicyName="cso-stage-jump")["PolicyDocument"]
    read, decrypt = policy["Statement"]
    assert sorted(read["Resource"]) == sorted([out["db_secret_arn"], out["rabbitmq_secret_arn"]])
    assert decrypt["Resource"] == secrets_key and decrypt["Action"] == "kms:Decrypt"
    assert decrypt["Condition"] == {
        "StringEquals": {"kms:ViaService": ["secretsmanager.us-east-1.amazonaws.com"]}}
    assert iam.list_role_policies(RoleName="cso-stage-host")["PolicyNames"] == []
    assert iam.list_attached_role_policies(RoleName="cso-stage-host")["AttachedPolicies"] == []
    (zone,) = [z for z in route53.list_hosted_zones()["HostedZones"] if z["Name"] == "stage.cso.internal."]
    got = route53.get_hosted_zone(Id=zone["Id"])
    assert got["HostedZone"]["Config"]["PrivateZone"] is True
    assert [v["VPCId"] for v in got["VPCs"]] == [vpc_id]
    records = {(r["Name"], r["Type"]): [v["Value"] for v in r["ResourceRecords"]]
               for r in route53.list_resource_record_sets(HostedZoneId=zone["Id"])["ResourceRecordSets"]}
    assert records[("frontend-1.stage.cso.internal.", "A")] == private_ips["frontend"]
    assert records[("frontend.stage.cso.internal.", "A")] == private_ips["frontend"]
    assert records[("jump.stage.cso.internal.", "A")] == [jump["PrivateIpAddress"]]
    assert records[("db.stage.cso.internal.", "CNAME")] == [out["db_address"]]
    settled()

    # --- single -> ha: exactly the second hosts, NAT gateway, load balancer and Multi-AZ ---
    tf_vars["topology"] = "ha"
    plan_file = tmp_path / "ha.plan"
    planned = run(["plan", "-input=false", "-no-color", f"-out={plan_file}"])
    assert planned.returncode == 0, planned.stdout[-3000:] + planned.stderr
    actions = plan_actions(run, plan_file)
    changes = {a for a, act in actions.items() if act == ["update"]}
    deletes = {a for a, act in actions.items() if act == ["delete"]}
    creates = {a for a, act in actions.items() if act == ["create"]}
    assert set(actions) == changes | deletes | creates, actions  # nothing is replaced
    assert changes == {"module.data.aws_db_instance.this", "module.network.aws_route.private_nat_gateway[1]"}
    # The jump host stops taking the Admin UI: the load balancer (with Cognito) does.
    assert deletes == {'module.security.aws_security_group_rule.jump_admin_ui[0]',
                       'module.security.aws_security_group_rule.ingress_from_group["jump-to-frontend-8102"]',
                       'module.security.aws_security_group_rule.egress_to_group["jump-to-frontend-8102"]'}
    assert {a for a in creates if "aws_instance" in a} == {
        f'module.host["{r}-2"].aws_instance.this' for r in CSO_ROLES}
    assert {a for a in creates if a.startswith("module.network.")} == {
        "module.network.aws_nat_gateway.this[1]", "module.network.module.nat_eip[1].aws_eip.this",
        *(f'module.network.module.nat_eip[1].aws_ec2_tag.this["{t}"]'
          for t in ("Name", "Project", "Environment", "ManagedBy"))}
    assert {a for a in creates if a.startswith("module.dns.")} == {
        f'module.dns.aws_route53_record.a["{r}-2"]' for r in CSO_ROLES}
    assert {a for a in creates if a.startswith("module.security.")} == {
        'module.security.aws_security_group.this["alb"]',
        "module.security.aws_security_group_rule.alb_admin_ui[0]",
        "module.security.aws_security_group_rule.alb_cognito[0]",
        'module.security.aws_security_group_rule.ingress_from_group["alb-to-frontend-8102"]',
        'module.security.aws_security_group_rule.egress_to_group["alb-to-frontend-8102"]'}
    assert {a.split(".", 2)[2] for a in creates if a.startswith("module.alb[0].")} == {
        "aws_lb.this", "aws_lb_target_group.this", 'aws_lb_target_group_attachment.this["frontend-1"]',
        'aws_lb_target_group_attachment.this["frontend-2"]', "aws_acm_certificate.this",
        "aws_lb_listener.this", "aws_lb_listener_rule.this", "aws_cognito_user_pool.this",
        "aws_cognito_user_pool_domain.this", "aws_cognito_user_pool_client.this"}
    assert len(creates) == 29
    done = run(["apply", "-input=false", "-no-color", str(plan_file)])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    out = {k: v["value"] for k, v in json.loads(run(["output", "-json"]).stdout).items()}

    instances = cso_instances(ec2, vpc_id)
    assert len(instances) == 9
    for role in CSO_ROLES:
        assert instances[f"cso-stage-{role}-2"]["SubnetId"] == subnets["10.42.192.0/18"]["SubnetId"]
    nats = ec2.describe_nat_gateways(Filter=[{"Name": "vpc-id", "Values": [vpc_id]},
                                             {"Name": "state", "Values": ["available"]}])["NatGateways"]
    assert sorted(n["SubnetId"] for n in nats) == sorted(
        [subnets["10.42.0.0/18"]["SubnetId"], subnets["10.42.64.0/18"]["SubnetId"]])
    (lb,) = [lb for lb in elbv2.describe_load_balancers()["LoadBalancers"] if lb["VpcId"] == vpc_id]
    assert out["alb_dns_name"] == lb["DNSName"] and out["admin_ui_url"] == f"https://{lb['DNSName']}:8102/"
    (listener,) = elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    assert (listener["Port"], listener["Protocol"]) == (8102, "HTTPS")
    assert [a["Type"] for a in listener["DefaultActions"]] == ["forward"]
    rules = elbv2.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"]
    (rule,) = [r for r in rules if not r["IsDefault"]]
    rule["Actions"].sort(key=lambda a: a["Order"])
    assert [a["Type"] for a in rule["Actions"]] == ["authenticate-cognito", "forward"]
    cognito = rule["Actions"][0]["AuthenticateCognitoConfig"]
    client = project.client("cognito-idp").describe_user_pool_client(
        UserPoolId=out["cognito_user_pool_id"], ClientId=cognito["UserPoolClientId"])["UserPoolClient"]
    assert client["CallbackURLs"] == [f"https://{lb['DNSName']}:8102/oauth2/idpresponse"]
    assert client["AllowedOAuthFlows"] == ["code"] and client["ClientSecret"]
    (group,) = elbv2.describe_target_groups(LoadBalancerArn=lb["LoadBalancerArn"])["TargetGroups"]
    assert (group["Port"], group["Protocol"]) == (8102, "HTTPS")
    targets = elbv2.describe_target_health(TargetGroupArn=group["TargetGroupArn"])["TargetHealthDescriptions"]
    assert {t["Target"]["Id"] for t in targets} == {
        instances[f"cso-stage-frontend-{i}"]["InstanceId"] for i in (1, 2)}
    assert cso_rules(ec2, vpc_id) == expected_cso_rules("ha")
    (db,) = cso_databases(rds)
    assert db["MultiAZ"] is True
    assert [len(out[f"{r}_hosts"]) for r in CSO_ROLES] == [2, 2, 2, 2]
    settled()

    # --- destroy: everything of the root; the state bucket and lock table stay ---
    done = run(["destroy", "-auto-approve", "-input=false", "-no-color"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert ec2.describe_vpcs(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Vpcs"] == []
    assert cso_instances(ec2, vpc_id) == {}
    assert cso_databases(rds) == []
    snapshots = rds.describe_db_snapshots(DBInstanceIdentifier="cso-stage")["DBSnapshots"]
    (final,) = [s["DBSnapshotIdentifier"] for s in snapshots if s["SnapshotType"] == "manual"]
    assert re.fullmatch(r"cso-stage-final-\d{14}", final), final
    assert [z for z in route53.list_hosted_zones()["HostedZones"] if z["Name"] == "stage.cso.internal."] == []
    assert project.client("s3").head_bucket(Bucket=bucket)
    assert project.client("dynamodb").describe_table(TableName=table)["Table"]["TableStatus"] == "ACTIVE"


CSO_REQUIRED = {"deptype": "stage", "aws_region": "us-east-1", "public_key": "ssh-ed25519 AAAA",
                "db_password": "0123456789abcdef", "rabbitmq_password": "0123456789abcdef"}


@pytest.mark.parametrize("name", ["admin_cidr_blocks", "ui_cidr_blocks"])
@pytest.mark.parametrize(("value", "accepted"), [
    (None, False), ("[]", False), ('["0.0.0.0"]', False), ('["10.0.0.1/8"]', False),
    ('["::/0"]', False), ('["example.com/32"]', False),
    ('["127.0.0.0/8"]', True), ('["203.0.113.0/24", "0.0.0.0/0"]', True),
])
def test_cso_cidr_variables_have_no_default_and_are_validated(
        name: str, value: str | None, accepted: bool, tmp_path: Path, provider_mirror: Path) -> None:
    root = vars_only_root(tmp_path, "cso")
    tf_vars = {**CSO_REQUIRED, "admin_cidr_blocks": '["127.0.0.0/8"]', "ui_cidr_blocks": '["127.0.0.0/8"]'}
    tf_vars.pop(name)
    if value is not None:
        tf_vars[name] = value
    done = engine(["plan", "-input=false", "-no-color"], root, tmp_path, provider_mirror, tf_vars)
    text = " ".join((done.stdout + done.stderr).split())
    if accepted:
        assert done.returncode == 0, text
    elif value is None:
        assert done.returncode == 1 and "No value for required variable" in text, text
        assert f'variable "{name}"' in text, text
    else:
        assert done.returncode == 1, text
        assert f"TF_VAR_{name} (who may reach" in text, text
        assert "must be a non-empty HCL list of IPv4 CIDRs in network form" in text, text


@pytest.mark.parametrize(("name", "value", "accepted"), [
    ("topology", "single", True), ("topology", "ha", True), ("topology", "multi", False),
    ("vpc_cidr", "10.9.0.0/16", True), ("vpc_cidr", "10.9.0.1/16", False),
    ("availability_zones", '["eu-west-2a", "eu-west-2c"]', True),
    ("availability_zones", '["eu-west-2a"]', False),
    ("db_password", "0123456789abcdef", True), ("db_password", "has/slash-123", False),
    ("db_password", "short", False), ("ssh_user", "../root", False),
    ("secret_recovery_window_in_days", "0", True), ("secret_recovery_window_in_days", "3", False),
])
def test_cso_validates_its_variables(name: str, value: str, accepted: bool, tmp_path: Path,
                                     provider_mirror: Path) -> None:
    root = vars_only_root(tmp_path, "cso")
    tf_vars = {**CSO_REQUIRED, "admin_cidr_blocks": '["127.0.0.0/8"]', "ui_cidr_blocks": '["127.0.0.0/8"]',
               name: value}
    done = engine(["plan", "-input=false", "-no-color"], root, tmp_path, provider_mirror, tf_vars)
    text = " ".join((done.stdout + done.stderr).split())
    assert (done.returncode == 0) is accepted, text
    if not accepted:
        assert f"TF_VAR_{name} must be" in text, text
