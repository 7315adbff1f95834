"""The Terraform stacks `shared` and `dashboard`, for real: the embedded engine, the AWS
provider 3.39.0 and a moto endpoint. Every root and module is formatted and valid; shared and
dashboard apply, settle (a second apply changes nothing), and the dashboard is destroyed while
shared and the state stay."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, Project

pytestmark = pytest.mark.slow

ROOTS = sorted(p.parent for p in (REPO / "terraform").glob("*/main.tf"))
MODULES = sorted(p.parent for p in (REPO / "terraform" / "modules").glob("*/main.tf"))


def engine(args: list[str], cwd: Path, tmp_path: Path, mirror: Path) -> subprocess.CompletedProcess[str]:
    rc = tmp_path / "terraformrc"
    rc.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{mirror}"\n  }}\n}}\n')
    env = {**os.environ, "TF_CLI_CONFIG_FILE": str(rc), "TF_DATA_DIR": str(tmp_path / cwd.name),
           "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
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
    shared_out = json.loads(shared.stdout)["engine"]["outputs"]
    assert set(shared_out["eip_allocation_ids"]) == {"stage", "prod"}
    ec2 = project.client("ec2")
    vpc = ec2.describe_vpcs(VpcIds=[shared_out["vpc_id"]])["Vpcs"][0]
    assert vpc["Ipv6CidrBlockAssociationSet"], "the VPC has an IPv6 block"
    subnet = ec2.describe_subnets(SubnetIds=[shared_out["subnet_id"]])["Subnets"][0]
    assert subnet["MapPublicIpOnLaunch"] is True
    rules = ec2.describe_security_groups(GroupIds=[shared_out["security_group_id"]])[
        "SecurityGroups"][0]["IpPermissions"]
    assert {r.get("FromPort") for r in rules} >= {22, 80, 443, 8080, 7000}

    again = json.loads(project.deploy("shared", "stage", "apply", "--json", check=True).stdout)
    assert again["engine"]["applied"] is False, again["engine"]["plan"]

    dash = project.deploy("dashboard", "stage", "apply", "--no-hosts", "--json", check=True)
    out = json.loads(dash.stdout)["engine"]["outputs"]
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
    result = json.loads(settled.stdout)["engine"]
    assert result["applied"] is False and result["reason"] == "no infrastructure change; apply skipped", \
        result["plan"]

    project.deploy("dashboard", "stage", "destroy", "-y", check=True)
    state = ec2.describe_instances(InstanceIds=[out["instance_id"]])["Reservations"][0][
        "Instances"][0]["State"]["Name"]
    assert state == "terminated"
    # shared and the state are untouched.
    assert ec2.describe_vpcs(VpcIds=[shared_out["vpc_id"]])["Vpcs"]
    after = json.loads(project.deploy("shared", "stage", "apply", "--json", check=True).stdout)
    assert after["engine"]["applied"] is False
    s3 = project.client("s3")
    assert s3.head_bucket(Bucket=f"{project.profile}-chronos-terraform-state-storage")
