"""The instance watcher's decisions, against a fake EC2 API and a fake fleet (no root, no moto):
which instances become machines, at which addresses, on which VPC's LAN, with which ports, and
when one stops. The real thing runs in tests/test_acceptance.py (scenario 13) and
tests/test_sandbox_cloud.py (a VPC of its own, behind a jump, with a load balancer)."""

from __future__ import annotations

import base64
import ipaddress
from pathlib import Path

from deployer.results import CHANGED, StepResult
from deployer.sandbox import instances


class FakeEC2:
    def __init__(self) -> None:
        self.instances: list[dict] = []
        self.addresses: list[dict] = []
        self.groups = {"sg-1": {"GroupId": "sg-1", "IpPermissions": [
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22},
            {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080},
            {"IpProtocol": "tcp", "FromPort": 7000, "ToPort": 7000},
            {"IpProtocol": "udp", "FromPort": 53, "ToPort": 53}]}}
        self.user_data: dict[str, str] = {}
        self.vpcs = {"vpc-shared": ["10.20.0.0/16"], "vpc-cso": ["10.1.0.0/16", "10.2.0.0/16"],
                     "vpc-default": ["172.31.0.0/16"]}

    def describe_vpcs(self, VpcIds):  # noqa: N803  # boto3's spelling
        return {"Vpcs": [{"VpcId": v, "CidrBlock": self.vpcs[v][0], "CidrBlockAssociationSet": [
            {"CidrBlock": b, "CidrBlockState": {"State": "associated"}} for b in self.vpcs[v]]}
            for v in VpcIds]}

    def describe_addresses(self):
        return {"Addresses": self.addresses}

    def get_paginator(self, _name):
        ec2 = self

        class Pages:
            def paginate(self, Filters):  # noqa: N803  # boto3's spelling
                running = [i for i in ec2.instances if i["State"] == "running"]
                return [{"Reservations": [{"Instances": running}]}]

        return Pages()

    def describe_security_groups(self, GroupIds):  # noqa: N803  # boto3's spelling
        return {"SecurityGroups": [self.groups[g] for g in GroupIds]}

    def describe_key_pairs(self, KeyNames, IncludePublicKey):  # noqa: N803  # boto3's spelling
        return {"KeyPairs": [{"PublicKey": f"ssh-ed25519 AAAA {KeyNames[0]}\n"}]}

    def describe_instance_attribute(self, InstanceId, Attribute):  # noqa: N803  # boto3's spelling
        value = self.user_data.get(InstanceId)
        return {"UserData": {"Value": base64.b64encode(value.encode()).decode()} if value else {}}

    def run(self, iid: str, ip: str, eip: str | None = None, vpc: str = "vpc-shared") -> None:
        self.instances.append({"InstanceId": iid, "PrivateIpAddress": ip, "State": "running",
                               "KeyName": "demo", "SecurityGroups": [{"GroupId": "sg-1"}],
                               "VpcId": vpc})
        if eip:
            self.addresses.append({"InstanceId": iid, "PublicIp": eip})


class FakeMachines:
    network = ipaddress.ip_network("10.20.0.0/16")

    def __init__(self) -> None:
        self.machines: dict[str, dict] = {}
        self.calls: list[tuple] = []

    def recorded(self):
        return dict(self.machines)

    def is_running(self, name):
        return name in self.machines

    def start(self, name, private_ip, public_address=None, **kw):
        self.calls.append(("start", name, private_ip, public_address, kw))
        self.machines[name] = {"private_ip": private_ip, "public_address": public_address,
                               "ports": sorted({22, *kw["ports"]}) if public_address else [],
                               "network": kw["network"]}
        return StepResult(f"machine {name}", CHANGED, "first boot")

    def stop(self, name):
        self.calls.append(("stop", name))
        self.machines.pop(name, None)
        return StepResult(f"machine {name}", CHANGED, "stopped")


def reconcile(ec2: FakeEC2, fleet: FakeMachines) -> list[str]:
    lines: list[str] = []
    instances.reconcile(ec2, fleet, [Path("/s/app.git")], lines.append, set())
    return lines


def test_instances_become_machines_public_or_private() -> None:
    ec2, fleet = FakeEC2(), FakeMachines()
    ec2.run("i-1", "10.20.1.4", "127.1.2.3")
    ec2.run("i-2", "10.20.1.5")
    ec2.run("i-3", "172.31.0.9", vpc="vpc-default")  # another VPC: a machine on its own LAN
    ec2.run("i-4", "192.168.0.9", vpc="vpc-cso")  # in none of its VPC's blocks: no machine
    ec2.user_data["i-1"] = "#!/bin/bash\ntouch /home/ec2-user/.setup_complete\n"
    lines = reconcile(ec2, fleet)
    starts = {c[1]: c for c in fleet.calls if c[0] == "start"}
    assert set(starts) == {"i-1", "i-2", "i-3"}
    _, _, ip, public, kw = starts["i-1"]
    assert (ip, public, kw["ports"]) == ("10.20.1.4", "127.1.2.3", (22, 7000, 8080))
    assert kw["network"] == "10.20.0.0/16" and starts["i-3"][4]["network"] == "172.31.0.0/16"
    assert kw["user_data"] == "#!/bin/bash\ntouch /home/ec2-user/.setup_complete\n"
    assert kw["authorized_keys"] == "ssh-ed25519 AAAA demo"
    assert kw["binds"] == [Path("/s/app.git")] and kw["wait"] is False
    assert starts["i-2"][3] is None and starts["i-2"][4]["user_data"] is None
    assert "i-4: private IP 192.168.0.9 is in no CIDR block of its VPC vpc-cso; no machine" in lines


def test_a_second_pass_changes_nothing() -> None:
    ec2, fleet = FakeEC2(), FakeMachines()
    ec2.run("i-1", "10.20.1.4", "127.1.2.3")
    reconcile(ec2, fleet)
    fleet.calls.clear()
    reconcile(ec2, fleet)
    assert fleet.calls == []


def test_a_lost_elastic_ip_or_a_terminated_instance_stops_the_machine() -> None:
    ec2, fleet = FakeEC2(), FakeMachines()
    ec2.run("i-1", "10.20.1.4", "127.1.2.3")
    ec2.run("i-2", "10.20.1.5")
    fleet.machines["edge-127-0-10-1"] = {"private_ip": "10.20.250.1", "public_address": "127.0.10.1"}
    reconcile(ec2, fleet)
    fleet.calls.clear()
    ec2.addresses.clear()  # i-1's Elastic IP is gone
    ec2.instances[1]["State"] = "terminated"
    reconcile(ec2, fleet)
    assert ("stop", "i-1") in fleet.calls and ("stop", "i-2") in fleet.calls
    assert fleet.machines["i-1"]["public_address"] is None  # back, private only
    assert "i-2" not in fleet.machines
    assert "edge-127-0-10-1" in fleet.machines  # not the watcher's


def test_an_elastic_ip_that_arrives_does_not_stop_the_machine() -> None:
    ec2, fleet = FakeEC2(), FakeMachines()
    ec2.run("i-1", "10.20.1.4")  # Terraform associates the address after the instance runs
    reconcile(ec2, fleet)
    ec2.addresses.append({"InstanceId": "i-1", "PublicIp": "127.1.2.3"})
    fleet.calls.clear()
    reconcile(ec2, fleet)
    assert [c[:4] for c in fleet.calls] == [("start", "i-1", "10.20.1.4", "127.1.2.3")]


def test_a_newly_opened_port_is_forwarded() -> None:
    ec2, fleet = FakeEC2(), FakeMachines()
    ec2.run("i-1", "10.20.1.4", "127.1.2.3")
    reconcile(ec2, fleet)
    ec2.groups["sg-1"]["IpPermissions"].append({"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443})
    fleet.calls.clear()
    reconcile(ec2, fleet)
    assert [c[4]["ports"] for c in fleet.calls if c[0] == "start"] == [(22, 443, 7000, 8080)]


def test_an_instance_lives_on_the_vpc_block_that_holds_its_address() -> None:
    ec2, fleet = FakeEC2(), FakeMachines()
    ec2.run("i-jump", "10.1.0.4", "127.1.2.3", vpc="vpc-cso")
    ec2.run("i-role", "10.2.128.9", vpc="vpc-cso")  # the VPC's secondary block
    reconcile(ec2, fleet)
    assert {c[1]: (c[2], c[4]["network"]) for c in fleet.calls} == {
        "i-jump": ("10.1.0.4", "10.1.0.0/16"), "i-role": ("10.2.128.9", "10.2.0.0/16")}
    fleet.calls.clear()
    reconcile(ec2, fleet)
    assert fleet.calls == []  # a second pass changes nothing


def test_a_machine_recorded_on_another_lan_boots_again_on_its_vpcs() -> None:
    ec2, fleet = FakeEC2(), FakeMachines()
    ec2.run("i-1", "10.1.0.4", vpc="vpc-cso")
    fleet.machines["i-1"] = {"private_ip": "10.1.0.4", "public_address": None, "ports": [],
                             "network": "10.1.0.0/24"}
    reconcile(ec2, fleet)
    assert [c[:2] for c in fleet.calls] == [("stop", "i-1"), ("start", "i-1")]
    assert fleet.machines["i-1"]["network"] == "10.1.0.0/16"
