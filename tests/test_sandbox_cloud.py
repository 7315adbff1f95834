"""The sandbox cloud keeps one endpoint: never a second beside a live one, a watcher tied to the
endpoint it watches, CHOM's two servers booted with the edge hosts, a VPC of its own (a jump
server, private role servers and a load balancer in front of them), and `down` stops everything
any `up` started. Real moto, real machines, real sshd."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest

from deployer.process import is_alive, pids_naming
from deployer.sandbox import balancers, cloud, endpoint

from conftest import ssh, wait_for

pytestmark = pytest.mark.slow

_OCTET = int(os.environ.get("DEPLOYER_TEST_HOST_OCTET", "0"))


@pytest.fixture
def work_dir(tmp_path: Path, provider_mirror: Path):
    work = tmp_path / ".deployer"
    work.mkdir()
    (work / "plugins").symlink_to(provider_mirror)  # no second copy of the provider
    yield work
    cloud.down(work)


def environ(index: int) -> dict[str, str]:
    """Addresses of this test's own: never the project's sandbox's, nor another test's."""
    return {**os.environ, "DEPLOYER_SANDBOX_EDGE_ADDRESSES": f"127.{_OCTET}.252.{index}",
            "DEPLOYER_SANDBOX_CHOM_ADDRESSES": f"127.{_OCTET}.253.{2 * index - 1}"
                                               f" 127.{_OCTET}.253.{2 * index}"}


def state(work: Path) -> dict:
    return json.loads((work / "sandbox" / "state.json").read_text())



def test_a_live_endpoint_that_does_not_answer_is_never_replaced(
        work_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = work_dir / "sandbox"
    root.mkdir()
    # A process that is the recorded endpoint by its command line, and never answers.
    mute = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             cloud.ENDPOINT_MARKER, str(root)])
    # Between fork and exec the child's command line is still ours: wait for its own.
    assert wait_for(lambda: is_alive(mute.pid, cloud.ENDPOINT_MARKER), 10)
    try:
        cert, _ = endpoint.ensure_certificate(root / "tls")
        (root / "state.json").write_text(json.dumps({"endpoint": {
            "url": f"https://127.0.0.1:{endpoint.free_port()}", "pid": mute.pid,
            "ca_bundle": str(cert)}}))
        monkeypatch.setattr(endpoint, "PATIENCE_SECONDS", 1.0)
        with pytest.raises(cloud.SandboxError, match=rf"pid {mute.pid}.*did not answer within 1s"):
            cloud.up(work_dir, environ(1))
        assert state(work_dir)["endpoint"]["pid"] == mute.pid
        assert [p for p in pids_naming(str(root)) if is_alive(p, cloud.ENDPOINT_MARKER)] == [mute.pid]
    finally:
        mute.kill()
        mute.wait()


def test_rerun_keeps_the_endpoint_and_the_watcher(work_dir: Path) -> None:
    first = cloud.up(work_dir, environ(2))
    before = state(work_dir)
    again = cloud.up(work_dir, environ(2))
    assert [r.status for r in first][:1] == ["changed"]
    assert {r.name: r.status for r in again}["aws endpoint"] == "unchanged"
    assert {r.name: r.status for r in again}["instance emulation"] == "unchanged"
    assert state(work_dir) == before


def test_the_watcher_stops_with_its_endpoint_and_is_replaced_with_it(work_dir: Path) -> None:
    cloud.up(work_dir, environ(3))
    old = state(work_dir)
    os.kill(old["endpoint"]["pid"], signal.SIGKILL)
    assert wait_for(lambda: not is_alive(old["watcher"]["pid"], cloud.WATCHER_MARKER))
    cloud.up(work_dir, environ(3))
    new = state(work_dir)
    assert new["endpoint"]["pid"] != old["endpoint"]["pid"]
    assert new["watcher"]["endpoint_pid"] == new["endpoint"]["pid"]
    assert is_alive(new["watcher"]["pid"], cloud.WATCHER_MARKER)


def test_down_stops_an_endpoint_whose_record_was_lost(work_dir: Path) -> None:
    cloud.up(work_dir, environ(4))
    root = work_dir / "sandbox"
    lost = endpoint.start(root / "endpoint-lost.log")  # an earlier `up` whose record is gone
    recorded = state(work_dir)
    assert lost.pid in pids_naming(str(root))
    results = cloud.down(work_dir)
    assert f"stopped stray {cloud.ENDPOINT_MARKER} {lost.pid}" in [r.reason for r in results]
    for pid in (lost.pid, recorded["endpoint"]["pid"], recorded["watcher"]["pid"]):
        assert wait_for(lambda pid=pid: not is_alive(pid, str(root)), 5), pid
    assert [p for p in pids_naming(str(root))] == []


def test_chom_servers_boot_with_the_edge_hosts_let_root_in_and_share_the_lan(
        work_dir: Path, tmp_path: Path) -> None:
    env = environ(5)
    steps = {r.name: r for r in cloud.up(work_dir, env)}
    observability, app = cloud.chom_addresses(env)
    assert steps[f"chom observability server {observability}"].status == "changed"
    assert steps[f"chom app server {app}"].status == "changed"
    config = tmp_path / "ssh_config"  # root, with the operator key `up` made
    config.write_text(
        f"Host *\n  User root\n  IdentityFile {cloud.paths(work_dir).key}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {tmp_path / 'known_hosts'}\n  StrictHostKeyChecking accept-new\n"
        "  BatchMode yes\n  ConnectTimeout 10\n")
    for role, address in zip(cloud.CHOM_ROLES, (observability, app), strict=True):
        assert ssh(config, address, "id -un; hostname").stdout.split() == [
            "root", cloud.chom_machine(role)]
    # A listener on observability's port 9090: chom-app reaches it over the private LAN, and
    # this machine through the public address's forwarded port.
    ssh(config, observability, "systemd-run --unit=probe-9090 python3 -m http.server 9090"
        " --directory /etc")
    private = f"http://{cloud.CHOM_PRIVATE_IPS[0]}:9090/hostname"
    assert wait_for(lambda: ssh(config, app, f"curl -sf {private}", check=False
                                ).stdout.strip() == "chom-observability", 20)
    with urllib.request.urlopen(f"http://{observability}:9090/hostname", timeout=10) as answer:
        assert answer.read().decode().strip() == "chom-observability"

    listed = {r.name: r for r in cloud.status(work_dir)}
    for role, address in zip(cloud.CHOM_ROLES, (observability, app), strict=True):
        line = listed[f"machine {cloud.chom_machine(role)}"]
        assert line.status == "running" and f"public {address}" in line.reason
        assert "ssh ready" in line.reason
    stopped = {r.name for r in cloud.down(work_dir) if r.status == "changed"}
    assert {f"machine {cloud.chom_machine(role)}" for role in cloud.CHOM_ROLES} <= stopped
    assert not [r for r in cloud.status(work_dir) if r.name.startswith("machine ")]


def test_a_vpc_of_its_own_behind_a_jump_with_a_load_balancer(work_dir: Path, tmp_path: Path) -> None:
    """CSO's shape: VPC 10.1.0.0/16, a jump server with an Elastic IP in a public subnet, two role
    servers in private subnets reached only with `ssh -J`, and an ALB on 8102 in front of them."""
    env = {**environ(6), balancers.NETWORK_VARIABLE: f"127.{_OCTET}.254.0/24"}
    cloud.up(work_dir, env)
    aws = cloud.environment(work_dir)

    def client(service: str):
        return boto3.client(service, endpoint_url=aws["AWS_ENDPOINT_URL"], region_name=cloud.REGION,
                            verify=aws["AWS_CA_BUNDLE"], aws_access_key_id="x",
                            aws_secret_access_key="y")

    ec2, elbv2 = client("ec2"), client("elbv2")
    key = cloud.paths(work_dir).key
    ec2.import_key_pair(KeyName="cso", PublicKeyMaterial=key.with_suffix(".pub").read_bytes())
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    subnets = {cidr: ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=f"us-east-1{zone}"
                                       )["Subnet"]["SubnetId"]
               for cidr, zone in (("10.1.0.0/18", "a"), ("10.1.64.0/18", "b"),
                                  ("10.1.128.0/18", "a"), ("10.1.192.0/18", "b"))}
    group = ec2.create_security_group(GroupName="cso", Description="cso", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
        for port in (22, 8102)])

    def run(subnet: str) -> dict:
        return ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, KeyName="cso",
                                 SubnetId=subnets[subnet], SecurityGroupIds=[group])["Instances"][0]

    jump, roles = run("10.1.0.0/18"), [run("10.1.128.0/18"), run("10.1.192.0/18")]
    allocation = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(InstanceId=jump["InstanceId"], AllocationId=allocation["AllocationId"])
    jump_address = allocation["PublicIp"]
    role_ips = [r["PrivateIpAddress"] for r in roles]
    assert all(ip.startswith(("10.1.128.", "10.1.192.")) for ip in role_ips)

    def ready() -> bool:
        lines = {r.name: r for r in cloud.status(work_dir)}
        return all(lines.get(f"machine {i['InstanceId']}") and "ssh ready" in
                   lines[f"machine {i['InstanceId']}"].reason for i in [jump, *roles])

    assert wait_for(ready, 120), (cloud.paths(work_dir).root / "instances.log").read_text()
    config = tmp_path / "ssh_config"  # ec2-user, with the key pair's key (the operator's)
    config.write_text(
        f"Host *\n  User ec2-user\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {tmp_path / 'known_hosts'}\n  StrictHostKeyChecking accept-new\n"
        "  BatchMode yes\n  ConnectTimeout 10\n")

    # The role servers: their VPC's prefix, reached through the jump and only so.
    for role, ip in zip(roles, role_ips, strict=True):
        shown = ssh(config, ip, "hostname; ip -o -4 addr show dev eth0", jump=jump_address).stdout
        assert shown.split()[0] == role["InstanceId"] and f"inet {ip}/16 " in shown
        started = time.monotonic()
        with pytest.raises(OSError) as refused:
            socket.create_connection((ip, 22), timeout=10)
        assert refused.value.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)
        assert time.monotonic() - started < 1.0  # at once: the unreachable route, not a timeout
    lans = json.loads((cloud.paths(work_dir).root / "machines.json").read_text())["network"]["lans"]
    routes = subprocess.run(["ip", "route", "show", "type", "unreachable", "10.1.0.0/16"],
                            capture_output=True, text=True, check=True).stdout
    assert f"metric {lans['10.1.0.0/16']['metric']}" in routes
    # Another VPC's machines are out of reach, both ways, even with an address borrowed from the
    # other's prefix (a machine cannot add one itself: no CAP_NET_ADMIN; the test adds it from
    # outside): the two LANs are separate bridges.
    edge = cloud.edge_addresses(env)[0]
    probe = "timeout 5 bash -c 'echo > /dev/tcp/{}/22' && echo reached || echo unreachable"
    assert ssh(config, jump_address, probe.format(role_ips[0])).stdout.strip() == "reached"
    assert ssh(config, role_ips[0], probe.format(f"{cloud.EDGE_PRIVATE_NET}1"), jump=jump_address
               ).stdout.strip() == "unreachable"
    edge_netns = cloud.machines_of(cloud.paths(work_dir)).netns(cloud.edge_machine(edge))
    borrowed = ["ip", "-n", edge_netns, "addr", "{}", "10.1.255.250/16", "dev", "eth0"]
    subprocess.run([a.format("add") for a in borrowed], check=True)
    try:
        assert ssh(config, edge, probe.format(role_ips[0])).stdout.strip() == "unreachable"
    finally:
        subprocess.run([a.format("del") for a in borrowed], check=True)

    # The load balancer: a loopback address of its own, passing TCP to the running targets.
    public = [subnets["10.1.0.0/18"], subnets["10.1.64.0/18"]]
    balancer = elbv2.create_load_balancer(Name="cso", Subnets=public, Type="application")["LoadBalancers"][0]
    target_group = elbv2.create_target_group(Name="cso-frontend", Protocol="HTTP", Port=8102, VpcId=vpc,
                                             TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=target_group, Targets=[{"Id": r["InstanceId"]} for r in roles])
    elbv2.create_listener(LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP", Port=8102,
                          DefaultActions=[{"Type": "forward", "TargetGroupArn": target_group}])
    for ip in role_ips:
        ssh(config, ip, "sudo -n systemd-run --unit=probe-8102 python3 -m http.server 8102"
            " --directory /etc", jump=jump_address)
    address = cloud.load_balancer_address(work_dir, balancer["DNSName"])
    assert address.startswith(f"127.{_OCTET}.254.")

    def answer() -> str:
        try:
            with urllib.request.urlopen(f"http://{address}:8102/hostname", timeout=5) as response:
                return response.read().decode().strip()
        except OSError:
            return ""

    answered: set[str] = set()

    def every_target_answered() -> bool:  # in turn: each request to the next running target
        answered.add(answer())
        return answered >= {r["InstanceId"] for r in roles}

    assert wait_for(every_target_answered, 30), answered
    line = {r.name: r for r in cloud.status(work_dir)}["load balancer cso"]
    assert line.status == "running" and line.reason.startswith(f"{address}:8102 -> ")
    assert all(f"{ip}:8102" in line.reason for ip in role_ips) and balancer["DNSName"] in line.reason

    # One target stops: the other answers every request.
    ec2.stop_instances(InstanceIds=[roles[0]["InstanceId"]])
    assert wait_for(lambda: f"{role_ips[0]}:8102" not in
                    {r.name: r for r in cloud.status(work_dir)}["load balancer cso"].reason, 30)
    assert [answer() for _ in range(4)] == [roles[1]["InstanceId"]] * 4

    # down: the forward and the routes it made are gone.
    forward = cloud.balancers_of(cloud.paths(work_dir)).recorded()[balancer["LoadBalancerArn"]]
    pid = forward["listeners"]["8102"]["pid"]
    stopped = [r for r in cloud.down(work_dir) if r.status == "changed"]
    assert any(r.name == "load balancer cso" and f"{address}:8102" in r.reason for r in stopped)
    assert "removed unreachable 10.1.0.0/16" in [r.reason for r in stopped if r.name == "route"]
    assert not is_alive(pid, balancers.FORWARDER_MODULE)
    assert answer() == ""
    assert f"metric {lans['10.1.0.0/16']['metric']}" not in subprocess.run(
        ["ip", "route", "show", "type", "unreachable", "10.1.0.0/16"],
        capture_output=True, text=True, check=True).stdout
    assert cloud.balancers_of(cloud.paths(work_dir)).recorded() == {}
    assert not [r for r in cloud.status(work_dir) if r.name.startswith("load balancer")]
