"""Load balancers become loopback forwards: what the watcher reads from moto (the session's real
endpoint) and the forwards it keeps (real forwarder processes, real sockets on loopback). The
whole path, into machines of a VPC, runs in tests/test_sandbox_cloud.py."""

from __future__ import annotations

import http.server
import ipaddress
import os
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from deployer.errors import ConfigError
from deployer.process import is_alive
from deployer.sandbox import balancers, cloud, endpoint, instances
from deployer.sandbox.balancers import Balancers, Listener, Target

from conftest import wait_for

_OCTET = int(os.environ.get("DEPLOYER_TEST_HOST_OCTET", "0"))


def test_listeners_follow_the_forward_action_to_the_running_targets(
        aws_endpoint: endpoint.Endpoint) -> None:
    ec2, elbv2, acm = (boto3.client(s, endpoint_url=aws_endpoint.url, region_name="us-east-1",
                                    verify=str(aws_endpoint.ca_bundle), aws_access_key_id="x",
                                    aws_secret_access_key="y") for s in ("ec2", "elbv2", "acm"))
    name = "t" + uuid.uuid4().hex[:8]  # the session's moto is shared: names of this test's own
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=f"us-east-1{zone}"
                                 )["Subnet"]["SubnetId"]
               for cidr, zone in (("10.1.128.0/18", "a"), ("10.1.192.0/18", "b"))]
    up, other, stopped = (ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                                            SubnetId=subnet)["Instances"][0]
                          for subnet in (subnets[0], subnets[1], subnets[1]))
    arn = elbv2.create_load_balancer(Name=name, Subnets=subnets, Type="application"
                                     )["LoadBalancers"][0]["LoadBalancerArn"]
    by_id = elbv2.create_target_group(Name=f"{name}-a", Protocol="HTTP", Port=8102, VpcId=vpc,
                                      TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=by_id, Targets=[
        {"Id": up["InstanceId"]}, {"Id": stopped["InstanceId"]}, {"Id": other["InstanceId"], "Port": 8103}])
    ec2.stop_instances(InstanceIds=[stopped["InstanceId"]])  # registered, then stopped
    by_ip = elbv2.create_target_group(Name=f"{name}-b", Protocol="HTTP", Port=9000, VpcId=vpc,
                                      TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=by_ip, Targets=[{"Id": up["PrivateIpAddress"]}])
    certificate = acm.request_certificate(DomainName=f"{name}.example.com")["CertificateArn"]
    elbv2.create_listener(  # CSO's: Cognito's login, then the frontends
        LoadBalancerArn=arn, Protocol="HTTPS", Port=8102, Certificates=[{"CertificateArn": certificate}],
        DefaultActions=[
            {"Type": "authenticate-cognito", "Order": 1, "AuthenticateCognitoConfig": {
                "UserPoolArn": "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_x",
                "UserPoolClientId": "client", "UserPoolDomain": "login"}},
            {"Type": "forward", "Order": 2, "TargetGroupArn": by_id}])
    elbv2.create_listener(LoadBalancerArn=arn, Protocol="HTTP", Port=80, DefaultActions=[
        {"Type": "forward", "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": by_ip}]}}])

    running = instances.running_instances(ec2)
    assert running[up["InstanceId"]].network == "10.1.0.0/16"
    found = {listener.port: listener for listener in balancers.listeners(elbv2, running)
             if listener.balancer == arn}
    assert set(found) == {80, 8102}
    assert (found[8102].name, found[8102].dns_name, found[8102].protocol) == (
        name, f"{name}-1.us-east-1.elb.amazonaws.com", "HTTPS")
    assert set(found[8102].targets) == {  # the stopped instance is not a target
        Target(up["InstanceId"], up["PrivateIpAddress"], 8102),
        Target(other["InstanceId"], other["PrivateIpAddress"], 8103)}
    assert found[80].targets == (Target(up["InstanceId"], up["PrivateIpAddress"], 9000),)


class Named(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802  # http.server's spelling
        body = self.server.name.encode()  # type: ignore[attr-defined]  # set below
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[dict[str, int]]:
    """Two HTTP servers on 127.0.0.1 answering their own name: {name: port}."""
    started = []
    for name in ("a", "b"):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Named)
        server.name = name  # type: ignore[attr-defined]  # what Named answers
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
    yield {s.name: s.server_address[1] for s in started}  # type: ignore[attr-defined]
    for server in started:
        server.shutdown()
        server.server_close()


def get(address: str, port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/", timeout=5) as answer:
            return answer.read().decode()
    except OSError:
        return ""


def test_a_forward_passes_tcp_to_the_targets_in_turn_and_skips_a_dead_one(
        tmp_path: Path, servers: dict[str, int]) -> None:
    # The targets' "namespace" is the forwarder's own (this machine's): only loopback is dialled.
    fleet = Balancers(tmp_path / "sandbox", network=ipaddress.ip_network(f"127.{_OCTET}.249.0/28"),
                      netns_of=lambda _: Path("/proc/self/ns/net"))
    dead = endpoint.free_port()  # nothing listens there: a target whose machine is stopped
    web = Listener("arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/web/1", "web",
                   "web-1.us-east-1.elb.amazonaws.com", 8102, "HTTPS",
                   (Target("i-a", "127.0.0.1", servers["a"]), Target("i-dead", "127.0.0.1", dead),
                    Target("i-b", "127.0.0.1", servers["b"])))
    try:
        first = fleet.reconcile([web])
        assert [(r.name, r.status) for r in first] == [("load balancer web", "changed")]
        address = fleet.address_of("WEB-1.us-east-1.elb.amazonaws.com.")  # DNS: no case, a dot
        assert address and ipaddress.ip_address(address) in fleet.network
        assert f"forwarding {address}:8102" in first[0].reason
        answers = [get(address, 8102) for _ in range(6)]  # the dead one's turn goes to the next
        assert set(answers) == {"a", "b"} and "" not in answers, answers
        assert [r.status for r in fleet.reconcile([web])] == ["unchanged"]  # a second pass
        (line,) = fleet.status()
        assert (line.name, line.status) == ("load balancer web", "running")
        assert line.reason == (f"{address}:8102 -> 127.0.0.1:{servers['a']} (i-a), 127.0.0.1:{dead}"
                               f" (i-dead), 127.0.0.1:{servers['b']} (i-b) (HTTPS passed through;"
                               " web-1.us-east-1.elb.amazonaws.com)")

        pid = fleet.recorded()[web.balancer]["listeners"]["8102"]["pid"]
        only_b = Listener(**{**web.__dict__, "targets": (Target("i-b", "127.0.0.1", servers["b"]),)})
        changed = fleet.reconcile([only_b])  # new targets: the same process reads them
        assert changed[0].reason == f"targets 127.0.0.1:{servers['b']} (i-b)"
        assert fleet.recorded()[web.balancer]["listeners"]["8102"]["pid"] == pid
        assert [get(address, 8102) for _ in range(3)] == ["b", "b", "b"]

        gone = fleet.reconcile([])  # the load balancer was deleted
        assert [(r.status, r.reason) for r in gone] == [
            ("changed", f"load balancer deleted: stopped {address}:8102")]
        assert wait_for(lambda: not is_alive(pid, balancers.FORWARDER_MODULE), 10)
        assert get(address, 8102) == "" and fleet.address_of(web.dns_name) is None
    finally:
        fleet.stop_all()


def test_the_address_of_a_balancer_that_is_not_forwarded_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="forwards no load balancer named nowhere-1"):
        cloud.load_balancer_address(tmp_path, "nowhere-1.us-east-1.elb.amazonaws.com", timeout=0)
