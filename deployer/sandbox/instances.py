"""Instance emulation: `python -m deployer.sandbox.instances ROOT URL CA_BUNDLE ENDPOINT_PID`.

Runs until its endpoint stops (or it is stopped). Every second it lists the EC2 instances of that
endpoint. A running instance with an Elastic IP (moto's are 127.x.y.z) gets an sshd on that
address, reachable exactly as the real instance would be: its own host key and $HOME, the
instance key pair's public key in authorized_keys. "Booting" is emulated by writing the ready
marker `.setup_complete` in that $HOME BOOT_SECONDS later; the instance's user_data is not run.
An instance that stops, is terminated or loses its address loses its sshd.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

BOOT_SECONDS = 2.0
POLL_SECONDS = 1.0
READY_MARKER = ".setup_complete"


def running_instances(ec2) -> dict[str, dict[str, str]]:
    """{address: {"instance": id, "key": public key}} for running instances with a loopback EIP."""
    addresses = ec2.describe_addresses()["Addresses"]
    by_instance = {a["InstanceId"]: a["PublicIp"] for a in addresses if a.get("InstanceId")}
    if not by_instance:
        return {}
    found = {}
    reservations = ec2.describe_instances(
        InstanceIds=list(by_instance),
        Filters=[{"Name": "instance-state-name", "Values": ["running"]}])["Reservations"]
    for reservation in reservations:
        for instance in reservation["Instances"]:
            address = by_instance[instance["InstanceId"]]
            if not address.startswith("127."):
                continue  # never bind or connect outside loopback
            key = ""
            if instance.get("KeyName"):
                pairs = ec2.describe_key_pairs(KeyNames=[instance["KeyName"]], IncludePublicKey=True)
                key = pairs["KeyPairs"][0].get("PublicKey", "").strip()
            found[address] = {"instance": instance["InstanceId"], "key": key}
    return found


def reconcile(ec2, hosts_dir: Path, booting: dict[str, float], log) -> None:
    """One pass: start, finish booting, or stop emulated instances to match the endpoint."""
    from deployer.sandbox.sshd import SandboxHost

    wanted = running_instances(ec2)
    for address, info in wanted.items():
        host = SandboxHost(hosts_dir / address, address)
        role_file = host.directory / "role"
        marker = host.home / READY_MARKER
        if host.is_running() and role_file.exists() and info["instance"] in role_file.read_text():
            if address in booting and time.monotonic() >= booting[address]:
                del booting[address]
                marker.write_text(json.dumps({"instance": info["instance"], "emulated": True}) + "\n")
                log(f"{info['instance']}: ready ({marker})")
            continue
        host.stop()
        host.directory.mkdir(parents=True, exist_ok=True)
        role_file.write_text(f"instance {info['instance']}\n")
        marker.unlink(missing_ok=True)  # a new instance boots afresh
        host.start(authorized_keys=info["key"])
        booting[address] = time.monotonic() + BOOT_SECONDS
        log(f"{info['instance']}: sshd on {address}:22; booting")
    for role_file in hosts_dir.glob("*/role"):
        address = role_file.parent.name
        if role_file.read_text().startswith("instance") and address not in wanted:
            host = SandboxHost(role_file.parent, address)
            if host.stop():
                log(f"{address}: instance gone; sshd stopped")
            (host.home / READY_MARKER).unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    """`instances ROOT URL CA_BUNDLE ENDPOINT_PID`: watch that endpoint, and stop with it."""
    import boto3

    from deployer.process import is_alive

    root, url, ca_bundle, endpoint_pid = Path(argv[0]), argv[1], argv[2], int(argv[3])
    ec2 = boto3.client("ec2", endpoint_url=url, region_name="us-east-1", verify=ca_bundle,
                       aws_access_key_id="sandbox", aws_secret_access_key="sandbox-secret")

    def log(text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)  # noqa: T201  # the watcher's own log file

    log(f"watching for instances at {url} (endpoint pid {endpoint_pid})")
    booting: dict[str, float] = {}
    while is_alive(endpoint_pid, "deployer.sandbox.endpoint"):
        try:
            reconcile(ec2, root / "hosts", booting, log)
        except Exception as exc:  # noqa: BLE001  # a daemon: report and keep watching
            log(f"error: {exc}")
        time.sleep(POLL_SECONDS)
    log(f"endpoint pid {endpoint_pid} is gone; the watcher stops with it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
