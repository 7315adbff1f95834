"""Instances become machines: `python -m deployer.sandbox.instances ROOT URL CA_BUNDLE ENDPOINT_PID IMAGE`.

Runs until its endpoint stops (or it is stopped). Every second it lists the EC2 instances of that
endpoint and makes the sandbox's machines (deployer/sandbox/machines.py) match them:

- a running instance is a machine named after it, at its PrivateIpAddress (moto hands those out
  from the subnet) with the prefix length of its VPC's CIDR (the block holding that address), on
  a LAN of that CIDR's own: the machines of one VPC reach each other, those of other VPCs are on
  other bridges with no route between (machines.py); `ec2-user` lets in the instance key pair's
  public key, and the instance's `user_data` runs once at first boot (the ready marker is
  user_data's to write, as on EC2);
- an instance with an Elastic IP (moto's are 127.x.y.z) is reachable on that address, on port 22
  and on every single TCP port its security groups open for ingress; one without is private:
  only other machines reach it (`ssh -J` through one that has a public address);
- a machine whose instance stopped, was terminated or lost (or changed) its Elastic IP is
  stopped (one that still runs boots again at once, its disk kept, at the addresses it has now);
  an Elastic IP associated with a running instance's machine is forwarded without a restart;
- every elbv2 load balancer's listener is forwarded from a loopback address of its own to the
  running targets of its forward action (deployer/sandbox/balancers.py).
"""

from __future__ import annotations

import base64
import ipaddress
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from deployer.results import CHANGED, FAILED

POLL_SECONDS = 1.0
INSTANCE_PREFIX = "i-"  # machines named after instances; the others (edge hosts) are not ours


@dataclass(frozen=True)
class Instance:
    instance: str
    private_ip: str
    public_address: str | None
    ports: tuple[int, ...] = ()
    key_name: str = ""
    groups: tuple[str, ...] = field(default=(), compare=False)
    network: str = ""  # the CIDR block of its VPC that holds private_ip; "" when none does
    vpc: str = ""

    @property
    def forwarded(self) -> list[int]:
        """What machines.start records for it: 22 and its open ports, when it has an address."""
        return sorted({22, *self.ports}) if self.public_address else []


def ingress_ports(groups: list[dict]) -> tuple[int, ...]:
    """The single TCP ports the security groups open for ingress (ranges are not forwarded).

    >>> ingress_ports([{"IpPermissions": [{"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080},
    ...     {"IpProtocol": "tcp", "FromPort": 1000, "ToPort": 2000}, {"IpProtocol": "-1"}]}])
    (8080,)
    """
    ports = set()
    for group in groups:
        for rule in group.get("IpPermissions", []):
            if rule.get("IpProtocol") in ("tcp", "6") and rule.get("FromPort") == rule.get("ToPort"):
                if isinstance(rule.get("FromPort"), int) and 0 < rule["FromPort"] < 65536:
                    ports.add(rule["FromPort"])
    return tuple(sorted(ports))


def vpc_network(blocks: list[str], private_ip: str) -> str:
    """The VPC CIDR block that holds `private_ip` ("" when none does).

    >>> vpc_network(["10.1.0.0/16", "10.2.0.0/16"], "10.2.128.10")
    '10.2.0.0/16'
    >>> vpc_network(["10.1.0.0/16"], "172.31.0.9")
    ''
    """
    address = ipaddress.ip_address(private_ip)
    return next((b for b in blocks if address in ipaddress.ip_network(b)), "")


def vpc_blocks(ec2, vpc_ids: list[str]) -> dict[str, list[str]]:
    """{VPC id: its associated IPv4 CIDR blocks, the primary first}."""
    if not vpc_ids:
        return {}
    found = {}
    for vpc in ec2.describe_vpcs(VpcIds=vpc_ids)["Vpcs"]:
        blocks = [vpc["CidrBlock"]] if vpc.get("CidrBlock") else []
        blocks += [a["CidrBlock"] for a in vpc.get("CidrBlockAssociationSet", [])
                   if a.get("CidrBlockState", {}).get("State", "associated") == "associated"
                   and a["CidrBlock"] not in blocks]
        found[vpc["VpcId"]] = blocks
    return found


def running_instances(ec2) -> dict[str, Instance]:
    """{instance id: Instance} for every running instance."""
    addresses = ec2.describe_addresses()["Addresses"]
    by_instance = {a["InstanceId"]: a["PublicIp"] for a in addresses
                   if a.get("InstanceId") and a.get("PublicIp", "").startswith("127.")}
    found: dict[str, Instance] = {}
    paginator = ec2.get_paginator("describe_instances")
    pages = paginator.paginate(Filters=[{"Name": "instance-state-name", "Values": ["running"]}])
    instances = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
    group_ids = sorted({g["GroupId"] for i in instances for g in i.get("SecurityGroups", [])})
    groups = {}
    if group_ids:
        groups = {g["GroupId"]: g for g in ec2.describe_security_groups(GroupIds=group_ids)["SecurityGroups"]}
    blocks = vpc_blocks(ec2, sorted({i["VpcId"] for i in instances if i.get("VpcId")}))
    for instance in instances:
        if not instance.get("PrivateIpAddress"):
            continue
        mine = [groups[g["GroupId"]] for g in instance.get("SecurityGroups", []) if g["GroupId"] in groups]
        vpc = instance.get("VpcId", "")
        found[instance["InstanceId"]] = Instance(
            instance["InstanceId"], instance["PrivateIpAddress"], by_instance.get(instance["InstanceId"]),
            ingress_ports(mine), instance.get("KeyName", ""),
            network=vpc_network(blocks.get(vpc, []), instance["PrivateIpAddress"]), vpc=vpc)
    return found


def boot_inputs(ec2, instance: Instance) -> tuple[str, str | None]:
    """The key pair's public key and the user_data script (None when the instance has none)."""
    key = ""
    if instance.key_name:
        pairs = ec2.describe_key_pairs(KeyNames=[instance.key_name], IncludePublicKey=True)
        key = pairs["KeyPairs"][0].get("PublicKey", "").strip()
    value = ec2.describe_instance_attribute(InstanceId=instance.instance, Attribute="userData"
                                            ).get("UserData", {}).get("Value")
    user_data = base64.b64decode(value).decode("utf-8", errors="replace") if value else None
    return key, user_data


def reconcile(ec2, machines, binds: list[Path], log, skipped: set[str]) -> dict[str, Instance]:
    """One pass: boot, re-address or stop machines to match the endpoint's instances; the
    running instances."""
    from deployer.sandbox.machines import MachineError

    wanted = running_instances(ec2)
    recorded = machines.recorded()
    for iid, instance in sorted(wanted.items()):
        if not instance.network:
            if iid not in skipped:
                skipped.add(iid)
                log(f"{iid}: private IP {instance.private_ip} is in no CIDR block of its VPC"
                    f" {instance.vpc or '(none)'}; no machine")
            continue
        entry = recorded.get(iid)
        running = bool(entry) and machines.is_running(iid)
        lan = entry.get("network", str(machines.network)) if entry else ""
        if running and (entry["private_ip"], entry.get("public_address"), lan) == (
                instance.private_ip, instance.public_address, instance.network) and (
                entry.get("ports", []) == instance.forwarded or not instance.public_address):
            continue
        if running and (entry["private_ip"] != instance.private_ip or lan != instance.network or (
                entry.get("public_address") not in (None, instance.public_address))):
            # Its Elastic IP went or moved: down, then up again at what it has now. (An address
            # that arrives needs no restart: start() adds the forwarder to the running machine.)
            machines.stop(iid)
            log(f"{iid}: address changed ({entry.get('public_address') or 'none'} ->"
                f" {instance.public_address or 'none'}); machine stopped")
        key, user_data = boot_inputs(ec2, instance)
        try:
            result = machines.start(iid, instance.private_ip, instance.public_address,
                                    authorized_keys=key, user_data=user_data, ports=instance.ports,
                                    binds=binds, network=instance.network, wait=False)
        except MachineError as exc:  # this instance's problem: the others still get machines
            if f"{iid}: {exc}" not in skipped:
                skipped.add(f"{iid}: {exc}")
                log(f"{iid}: no machine: {exc}")
            continue
        log(f"{iid}: {result.status}: {result.reason}")
    for name in sorted(recorded):
        if name.startswith(INSTANCE_PREFIX) and name not in wanted:
            result = machines.stop(name)
            log(f"{name}: instance gone; machine {result.reason}")
    return wanted


def balance(elbv2, balancers, running: dict[str, Instance], log, reported: dict[str, str]) -> None:
    """One pass over the load balancers: their forwards match the endpoint's listeners and the
    running targets. A change is logged; a failure once per reason."""
    from deployer.sandbox.balancers import listeners

    avoid = {i.public_address for i in running.values() if i.public_address}
    for result in balancers.reconcile(listeners(elbv2, running), avoid=avoid):
        if result.status == CHANGED or (result.status == FAILED
                                        and reported.get(result.name) != result.reason):
            log(f"{result.name}: {result.status}: {result.reason}")
        reported[result.name] = result.reason


def main(argv: list[str]) -> int:
    """`instances ROOT URL CA_BUNDLE ENDPOINT_PID IMAGE [BALANCER_NETWORK]`: watch that
    endpoint, and stop with it."""
    import boto3

    from deployer.process import is_alive
    from deployer.sandbox.balancers import BALANCER_NETWORK, Balancers
    from deployer.sandbox.cloud import CIDR, Paths
    from deployer.sandbox.machines import NETNS_DIR, Machines

    root, url, ca_bundle, endpoint_pid, image = (Path(argv[0]), argv[1], argv[2], int(argv[3]),
                                                 Path(argv[4]))
    network = ipaddress.ip_network(argv[5] if len(argv) > 5 else BALANCER_NETWORK)
    ec2, elbv2 = (boto3.client(service, endpoint_url=url, region_name="us-east-1", verify=ca_bundle,
                               aws_access_key_id="sandbox", aws_secret_access_key="sandbox-secret")
                  for service in ("ec2", "elbv2"))
    machines = Machines(root, image=image, cidr=CIDR)
    balancers = Balancers(root, network=network, netns_of=lambda iid: NETNS_DIR / machines.netns(iid))
    binds = [Paths(root).app_origin]

    def log(text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)  # noqa: T201  # the watcher's own log file

    log(f"watching for instances at {url} (endpoint pid {endpoint_pid}); machines on their VPCs'"
        f" CIDRs ({CIDR} for the edge hosts and CHOM's); load balancers on {network}")
    skipped: set[str] = set()
    reported: dict[str, str] = {}
    while is_alive(endpoint_pid, "deployer.sandbox.endpoint"):
        try:
            running = reconcile(ec2, machines, binds, log, skipped)
        except Exception as exc:  # noqa: BLE001  # a daemon: report and keep watching
            log(f"error: {type(exc).__name__}: {exc}")
        else:  # targets are dialled in their machines: only once the machines match
            try:
                balance(elbv2, balancers, running, log, reported)
            except Exception as exc:  # noqa: BLE001  # a daemon: report and keep watching
                log(f"load balancers: error: {type(exc).__name__}: {exc}")
        time.sleep(POLL_SECONDS)
    log(f"endpoint pid {endpoint_pid} is gone; the watcher stops with it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
