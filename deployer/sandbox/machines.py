"""Sandbox machines: small real Debian machines (mmdebstrap + systemd-nspawn, systemd as PID 1).

    image = ensure_base_image()                       # built once, cached outside git
    machines = Machines(Path(".deployer/sandbox"), image=image.path, cidr="10.77.0.0/16")
    machines.start("jump", "10.77.0.1", public_address="127.0.177.1", authorized_keys=key)
    machines.start("app", "10.77.0.2", authorized_keys=key, user_data="touch /home/ec2-user/.ok")
    machines.stop_all()                                # every mount, netns, route, cgroup it made

Each machine is an overlay mount (lower: the cached base image; upper/work: the machine's own
directories) booted by `systemd-nspawn --boot` under a small supervisor that boots it again when
it reboots (nspawn exits 133 on `systemctl reboot`). Facts this relies on, measured here:

- PID 1 of this machine is not systemd, so nspawn runs with `--register=no --keep-unit` (else
  "Failed to open system bus"), and the supervisor moves itself into a cgroup of its own in the
  unified and the name=systemd hierarchies before starting nspawn, or two machines would share
  payload/init.scope.
- Networking: every machine has its own network namespace with one veth (eth0) whose peer sits on
  a bridge inside a namespace of the sandbox's own (the "hub"): machines reach each other on the
  private CIDR, and nothing else. A machine may live on another LAN (`start(network=...)`: an
  instance's VPC CIDR): it then has its address with that prefix length, on a bridge of that
  CIDR's own in the hub. Bridges are separate layer-2 segments and the hub has no address, so
  nothing carries a packet from one LAN to another (and a machine has no route beyond its own
  prefix): the VPCs are as isolated as on AWS, but for two VPCs of the very same CIDR, which
  share a bridge. This machine's root namespace gets an `unreachable` route for every LAN that
  has had a machine (until stop_all), so a connection to a private address fails at once ("No
  route to host") instead of leaving through the default route. A machine with a public address
  (a 127.x.y.z address, like moto's Elastic IPs) gets a forwarder (deployer/sandbox/forwarder.py)
  listening on that address, port 22, which dials the machine's own sshd from inside its
  namespace: the host side needs no routable address. A private-only machine is reached with
  `ssh -J` through such a jump machine. A machine cannot change its own addresses or routes:
  nspawn gives it no CAP_NET_ADMIN.
- Packages: the image carries a Debian repository of its own (REPO_PACKAGES, nginx, with every
  dependency the image lacks, fetched from the mirror at build time), and it is apt's only
  source: a machine has no network, yet `apt-get install nginx` works there as on a server.
- Everything made is recorded in `machines.json` under the sandbox directory before it is used,
  and `stop`/`stop_all` remove exactly what is recorded (plus namespaces and mounts whose names
  carry this sandbox's tag, which only this sandbox makes). Files stay (a stopped machine keeps
  its disk, like a stopped EC2 instance).
"""

from __future__ import annotations

import contextlib
import email.utils
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deployer import process
from deployer.errors import DeployerError
from deployer.process import is_alive, running, start_time, stop_pid
from deployer.results import CHANGED, UNCHANGED, StepResult
from deployer.sandbox import forwarder
from deployer.secrets import Masker

IMAGE_CACHE = Path("/var/cache/deployer/images")
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"  # the mirror this machine's apt already uses
PACKAGES = ("openssh-server", "systemd", "systemd-sysv", "dbus", "iproute2", "python3", "git",
            "curl", "sudo")
# Not installed, but in the image's own package repository (with every dependency the image
# lacks): a machine has no network, yet `apt-get install nginx` works on it as on a real server.
REPO_PACKAGES = ("nginx",)
REPO_DIR = "/var/lib/deployer/debs"  # inside the image
UNSAFE_IO = "force-unsafe-io"  # the build only: mmdebstrap keeps it in the image, the image drops it
# Bump when the image's post-processing changes: the image's directory name changes with it.
IMAGE_RECIPE = 3
IMAGE_MARKER = ".deployer-image"  # written last, before the rename: the image is complete

CGROUP_ROOTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/systemd"))
NETNS_DIR = Path("/run/netns")
PROPAGATE_DIR = Path("/run/systemd/nspawn/propagate")  # nspawn's own, per machine name
REBOOT_EXIT = 133  # systemd-nspawn's exit code when the machine asked for a reboot
FORWARDER_MARKER = "deployer.sandbox.forwarder"
USER_DATA_DONE = "/var/lib/deployer/user-data.done"
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")

USER_DATA_UNIT = """\
# Written by deployer's sandbox: runs the instance's user_data once, as cloud-init would.
[Unit]
Description=deployer sandbox: run user_data once
After=network.target ssh.service
ConditionPathExists=!{done}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/var/lib/deployer/run-user-data

[Install]
WantedBy=multi-user.target
"""

USER_DATA_RUNNER = """\
#!/bin/sh
# Run user_data as root with its output in /var/log/user-data.log, and record that it ran
# (and how it ended): it never runs again on this machine, whatever the outcome.
/var/lib/deployer/user-data >/var/log/user-data.log 2>&1
rc=$?
echo "exit=$rc finished=$(date -u +%Y-%m-%dT%H:%M:%SZ)" > {done}
exit $rc
"""

# The image's only package source. trusted=yes (no signature on its Release file) is acceptable:
# every .deb in it was fetched by apt from the Debian mirror at build time and verified then
# against the mirror's signed Release file; Release and Packages only carry those files' hashes
# into the image, where apt checks every .deb against them again.
REPO_SOURCES = f"""\
# Written by deployer's sandbox: machines have no network; this repository is in the image.
deb [trusted=yes] file:{REPO_DIR} ./
"""

SSHD_DROP_IN = """\
# Written by deployer's sandbox: only the host key generated for this machine.
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
MaxStartups 200:30:400
MaxSessions 100
"""


class MachineError(DeployerError):
    """A sandbox machine could not be built, started or stopped."""


# Each machine's systemd holds about 7 inotify instances (measured: 6.7), and the kernel's
# default limit is 128 per user, shared by every root process here: 17 machines was the most
# that booted (the next one's PID 1 exits with "Failed to create control group inotify object:
# Too many open files"). Raised as container hosts do; never lowered.
INOTIFY_LIMIT = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_INSTANCES = 1024


def ensure_inotify_instances(limit: Path = INOTIFY_LIMIT, wanted: int = INOTIFY_INSTANCES) -> StepResult:
    """The kernel's inotify instances per user at least `wanted`, so machines can boot."""
    what = "kernel inotify instances"
    try:
        found = int(limit.read_text().split()[0])
    except (OSError, ValueError, IndexError) as exc:
        raise MachineError(f"cannot read {limit}: {exc}") from None
    if found >= wanted:
        return StepResult(what, UNCHANGED, f"{limit.name} = {found}")
    try:
        limit.write_text(f"{wanted}\n")
    except OSError as exc:
        raise MachineError(f"{limit.name} is {found}: about {found // 7 - 2} machines can boot;"
                           f" raise it (sysctl -w fs.inotify.max_user_instances={wanted}): {exc}") from None
    return StepResult(what, CHANGED, f"{limit.name} {found} -> {wanted} (each machine's systemd"
                                     f" holds about 7; {found} allowed about {found // 7 - 2} machines)")


# --- the base image ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseImage:
    path: Path
    result: StepResult


def image_name(suite: str = SUITE, mirror: str = MIRROR, packages: Sequence[str] = PACKAGES,
               repo_packages: Sequence[str] = REPO_PACKAGES) -> str:
    """The cache directory's name: what it holds is in the name, so a recipe change never reuses
    (nor deletes under a running machine) an image built another way.

    >>> image_name().startswith("bookworm-")
    True
    >>> image_name(repo_packages=()) != image_name()
    True
    """
    recipe = json.dumps([IMAGE_RECIPE, suite, mirror, sorted(packages), sorted(repo_packages)])
    return f"{suite}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def bootstrap_argv(target: Path, suite: str = SUITE, mirror: str = MIRROR,
                   packages: Sequence[str] = PACKAGES) -> list[str]:
    """mmdebstrap, not debootstrap: the same minbase tree in 45 s instead of 100 s here (apt
    resolves the dependencies, dpkg skips its fsyncs: the image is synced once, at the end).

    >>> bootstrap_argv(Path("/tmp/x"), packages=("sudo", "git"))[:4]
    ['mmdebstrap', '--variant=minbase', '--include=sudo,git', '--dpkgopt=force-unsafe-io']
    >>> bootstrap_argv(Path("/tmp/x"))[4:]
    ['bookworm', '/tmp/x', 'http://deb.debian.org/debian']
    """
    return ["mmdebstrap", "--variant=minbase", f"--include={','.join(packages)}",
            f"--dpkgopt={UNSAFE_IO}", suite, str(target), mirror]


def ensure_base_image(cache: Path = IMAGE_CACHE, *, suite: str = SUITE, mirror: str = MIRROR,
                      packages: Sequence[str] = PACKAGES,
                      repo_packages: Sequence[str] = REPO_PACKAGES,
                      environ: Mapping[str, str] | None = None,
                      on_line: Callable[[str], None] | None = None) -> BaseImage:
    """The base image, built once per machine: mmdebstrap into a temporary directory, strip what
    must differ per machine (SSH host keys, machine-id), add the local package repository of
    `repo_packages` (see add_local_repository), then rename it into place, so a half-built
    image is never used. `changed` when it was built now, `unchanged` when cached."""
    final = cache / image_name(suite, mirror, packages, repo_packages)
    if (final / IMAGE_MARKER).exists():
        return BaseImage(final, StepResult("base image", UNCHANGED, f"cached at {final}"))
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / f".{final.name}.lock"):
        if (final / IMAGE_MARKER).exists():  # another process built it while we waited
            return BaseImage(final, StepResult("base image", UNCHANGED, f"cached at {final}"))
        for stale in cache.glob(f".{final.name}.tmp-*"):  # a build that died: never used
            _remove_tree(stale)
        tmp = cache / f".{final.name}.tmp-{os.getpid()}"
        started = time.monotonic()
        env = dict(environ if environ is not None else os.environ)
        try:
            process.run(bootstrap_argv(tmp, suite, mirror, packages), env=env, masker=Masker(),
                        on_line=on_line)
            (tmp / "etc" / "dpkg" / "dpkg.cfg.d" / "99mmdebstrap").unlink(missing_ok=True)
            for key in (tmp / "etc" / "ssh").glob("ssh_host_*"):
                key.unlink()
            (tmp / "etc" / "machine-id").write_text("")
            for deb in (tmp / "var" / "cache" / "apt" / "archives").glob("*.deb"):
                deb.unlink()
            add_local_repository(tmp, repo_packages, env, on_line)
            os.sync()  # dpkg wrote without fsync: the image is on disk before its marker says so
            (tmp / IMAGE_MARKER).write_text(json.dumps(
                {"suite": suite, "mirror": mirror, "packages": list(packages),
                 "repo_packages": list(repo_packages), "recipe": IMAGE_RECIPE,
                 "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
            if final.exists():  # a directory without the marker: an image built some other way
                raise MachineError(f"{final} exists but is not a complete image; remove it")
            tmp.rename(final)
        except BaseException:
            _remove_tree(tmp)
            raise
    return BaseImage(final, StepResult("base image", CHANGED,
                                       f"built {final} in {time.monotonic() - started:.0f}s"))


def add_local_repository(root: Path, packages: Sequence[str], environ: Mapping[str, str],
                         on_line: Callable[[str], None] | None = None) -> None:
    """A package repository inside the image at `root` (mmdebstrap's output, its sources still
    the mirror): the .debs of `packages` and of every dependency the image lacks, in REPO_DIR
    with a Packages index, and apt pointed only at it, lists updated. `packages` stay not
    installed: a machine installs them itself, offline, as a server would from the mirror.

    apt runs in the image by chroot, which needs no mount: `--download-only` runs no maintainer
    script (so no policy-rc.d either), and apt reads no /proc on this path (measured)."""
    env = {**environ, "DEBIAN_FRONTEND": "noninteractive"}

    def chroot(*argv: str, quiet: bool = False) -> process.Completed:
        return process.run(["chroot", str(root), *argv], env=env, masker=Masker(),
                           on_line=None if quiet else on_line)

    repo = root / REPO_DIR.lstrip("/")
    repo.mkdir(parents=True, exist_ok=True)
    archives = root / "var" / "cache" / "apt" / "archives"
    if packages:
        chroot("apt-get", "update")  # the mirror, as mmdebstrap left the sources
        # Recommends too (apt's default): the repository then holds what `apt-get install` on a
        # machine asks for, as on a real server; apt fetches only what is not installed.
        chroot("apt-get", "install", "--download-only", "--yes", *packages)
        for deb in sorted(archives.glob("*.deb")):
            deb.rename(repo / deb.name)
    stanzas, found = [], set()
    for deb in sorted(repo.glob("*.deb")):
        control = chroot("dpkg-deb", "--field", f"{REPO_DIR}/{deb.name}", quiet=True).output
        found.update(line.split(":", 1)[1].strip() for line in control.splitlines()
                     if line.startswith("Package:"))
        stanzas.append(packages_stanza(control, deb.name, deb.read_bytes()))
    missing = sorted(set(packages) - found)
    if missing:  # already in the image (say, also in PACKAGES): nothing to install from here
        raise MachineError(f"the image's repository lacks {', '.join(missing)}: already installed?")
    index = "\n".join(stanzas).encode()
    (repo / "Packages").write_bytes(index)
    (repo / "Release").write_text(release_text(index, email.utils.formatdate(usegmt=True)))
    sources = root / "etc" / "apt" / "sources.list"
    sources.write_text(REPO_SOURCES)
    for other in (root / "etc" / "apt" / "sources.list.d").glob("*"):
        other.unlink()
    chroot("apt-get", "update")  # the repository's lists; the mirror's go (they are not used)
    chroot("apt-get", "clean")
    installed = [p for p in packages if _dpkg_installed(root, p)]
    if installed:
        raise MachineError(f"{', '.join(installed)} got installed in the image; it must not be")


def packages_stanza(control: str, filename: str, data: bytes) -> str:
    """A Packages index entry: the .deb's control fields (`dpkg-deb --field`) and where it is.

    >>> print(packages_stanza("Package: x\\nVersion: 1\\n", "x_1_all.deb", b"deb"), end="")
    ... # doctest: +ELLIPSIS
    Package: x
    Version: 1
    Filename: ./x_1_all.deb
    Size: 3
    MD5sum: ...
    SHA256: ...
    """
    return (f"{control.strip()}\nFilename: ./{filename}\nSize: {len(data)}\n"
            f"MD5sum: {hashlib.md5(data).hexdigest()}\n"  # noqa: S324  # apt's own index field
            f"SHA256: {hashlib.sha256(data).hexdigest()}\n")


def release_text(index: bytes, date: str) -> str:
    """A flat repository's Release: the Packages file's hash, so apt reads exactly that file (no
    probing for compressed variants) and checks it; without a Date apt warns on every update.

    >>> release_text(b"", "Thu, 03 Dec 2026 02:49:28 GMT").splitlines()[-1].split()[1:]
    ['0', 'Packages']
    """
    return f"Date: {date}\nSHA256:\n {hashlib.sha256(index).hexdigest()} {len(index)} Packages\n"


def _dpkg_installed(root: Path, package: str) -> bool:
    """dpkg's record in the image at `root` says `package` is installed."""
    try:
        status = (root / "var" / "lib" / "dpkg" / "status").read_text()
    except OSError:
        return False
    for stanza in status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line)
        if fields.get("Package") == package and fields.get("Status", "").endswith(" installed"):
            return True
    return False


def _remove_tree(path: Path) -> None:
    """rm -r, after unmounting anything a dead mmdebstrap left mounted inside (proc, sys, dev)."""
    for mount in sorted(_mounts_under(path), reverse=True):
        process.run(["umount", "-l", mount], env=dict(os.environ), masker=Masker(), ok_codes=(0, 32))
    shutil.rmtree(path, ignore_errors=True)


# --- pure builders ----------------------------------------------------------------------------


def overlay_mount_argv(lower: Path, upper: Path, work: Path, target: Path) -> list[str]:
    """
    >>> overlay_mount_argv(Path("/i"), Path("/m/upper"), Path("/m/work"), Path("/m/root"))
    ['mount', '-t', 'overlay', 'overlay', '-o', 'lowerdir=/i,upperdir=/m/upper,workdir=/m/work', '/m/root']
    """
    return ["mount", "-t", "overlay", "overlay", "-o",
            f"lowerdir={lower},upperdir={upper},workdir={work}", str(target)]


def nspawn_argv(name: str, root: Path, netns: str, binds: Sequence[Path] = ()) -> list[str]:
    """Boot `root` with systemd as PID 1 in the network namespace `netns`. The machine name
    nspawn knows is the namespace's (unique on this machine: nspawn keeps per-name state in
    /run/systemd/nspawn/propagate/<name>); the hostname is `name`.

    `binds` are directories of this machine shown read-only at the same path inside (the
    sandbox's git origin, so a `file://` URL means the same on every machine).

    >>> nspawn_argv("app", Path("/m/root"), "dm1-app")[:5]
    ['systemd-nspawn', '--directory=/m/root', '--boot', '--machine=dm1-app', '--hostname=app']
    >>> nspawn_argv("app", Path("/m/root"), "dm1-app", [Path("/s/app.git")])[-1]
    '--bind-ro=/s/app.git'
    """
    return ["systemd-nspawn", f"--directory={root}", "--boot", f"--machine={netns}",
            f"--hostname={name}",
            # PID 1 of this machine is not systemd: no machined to register with, no scope units.
            "--register=no", "--keep-unit",
            f"--network-namespace-path={NETNS_DIR / netns}",
            "--console=read-only", "--link-journal=no", "--resolv-conf=off",
            *(f"--bind-ro={path}" for path in binds)]


# The supervisor: a few hundred KiB of sh rather than a Python interpreter per machine. It joins
# the machine's cgroups before nspawn starts, so nspawn and everything it boots inherit them;
# boots the machine again when it reboots (nspawn exits 133); and forwards one SIGTERM to nspawn,
# which powers the machine off cleanly (a second SIGTERM would make nspawn kill it at once).
SUPERVISOR = """\
n=$1; shift
while [ "$n" -gt 0 ]; do echo $$ > "$1/cgroup.procs" || exit 1; shift; n=$((n - 1)); done
stopping=0 child= forwarded=
forward() {
  if [ -n "$child" ] && [ "$forwarded" != "$child" ]; then
    forwarded=$child; kill -TERM "$child" 2>/dev/null
  fi
}
trap 'stopping=1; forward' TERM INT HUP
while :; do
  "$@" &
  child=$!
  [ "$stopping" = 0 ] || forward
  while :; do
    wait "$child"; code=$?
    kill -0 "$child" 2>/dev/null || break
  done
  if [ "$stopping" = 1 ] || [ "$code" != 133 ]; then exit "$code"; fi
  echo "deployer: machine rebooted (exit 133); booting it again"
done
"""


def supervisor_argv(machine_dir: Path, cgroups: Sequence[Path], nspawn: Sequence[str]) -> list[str]:
    """`sh -c SUPERVISOR`; $0 is the machine's directory, so `ps` (and is_alive) can tell whose.

    >>> supervisor_argv(Path("/m"), [Path("/cg/a")], ["systemd-nspawn", "--boot"])[3:]
    ['/m', '1', '/cg/a', 'systemd-nspawn', '--boot']
    """
    return ["/bin/sh", "-c", SUPERVISOR, str(machine_dir), str(len(cgroups)),
            *(str(c) for c in cgroups), *nspawn]


def hub_argvs(hub: str, bridge: str) -> list[list[str]]:
    """The sandbox's own namespace with a bridge and no address: the machines' private LAN.

    >>> hub_argvs("dm1_hub", "br0")[1]
    ['ip', '-n', 'dm1_hub', 'link', 'add', 'br0', 'type', 'bridge']
    """
    return [["ip", "netns", "add", hub], *bridge_argvs(hub, bridge)]


def bridge_argvs(hub: str, bridge: str) -> list[list[str]]:
    """One more LAN (a VPC's) in the hub: a bridge of its own, no address, nothing between it
    and the other bridges (the hub has no address and forwards nothing at layer 3).

    >>> bridge_argvs("dm1_hub", "br3f2a")  # doctest: +NORMALIZE_WHITESPACE
    [['ip', '-n', 'dm1_hub', 'link', 'add', 'br3f2a', 'type', 'bridge'],
     ['ip', '-n', 'dm1_hub', 'link', 'set', 'br3f2a', 'up']]
    """
    return [["ip", "-n", hub, "link", "add", bridge, "type", "bridge"],
            ["ip", "-n", hub, "link", "set", bridge, "up"]]


def lan_network(cidr: str) -> ipaddress.IPv4Network:
    """A LAN the machines may live on: a private IPv4 network, as a VPC's CIDR is (never
    loopback, link-local or public: the host's `unreachable` route for it must not shadow those).

    >>> lan_network("10.1.0.0/16")
    IPv4Network('10.1.0.0/16')
    >>> lan_network("127.1.0.0/16")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    deployer.sandbox.machines.MachineError: a machine LAN is a private IPv4 network ..., not 127.1.0.0/16
    """
    try:
        network = ipaddress.ip_network(cidr)
    except ValueError as exc:
        raise MachineError(f"not a network: {cidr!r} ({exc})") from exc
    private = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
    if not isinstance(network, ipaddress.IPv4Network) or not any(
            network.subnet_of(p) for p in private):
        raise MachineError("a machine LAN is a private IPv4 network (10/8, 172.16/12, 192.168/16),"
                           f" not {cidr}")
    return network


def unreachable_route_argv(action: str, cidr: str, metric: int) -> list[str]:
    """
    >>> unreachable_route_argv("add", "10.77.0.0/16", 4242)
    ['ip', 'route', 'add', 'unreachable', '10.77.0.0/16', 'metric', '4242']
    """
    return ["ip", "route", action, "unreachable", cidr, "metric", str(metric)]


def machine_net_argvs(netns: str, hub: str, bridge: str, veth: str, mac: str,
                      interface: str) -> list[list[str]]:
    """A namespace for the machine, wired to the hub's bridge by a veth pair whose ends both live
    in sandbox namespaces (nothing appears in this machine's root namespace). eth0 keeps `mac`
    across restarts, as a real NIC would: with a new one, the other machines' ARP caches would
    point at a dead address for seconds.

    >>> machine_net_argvs("dm1-app", "dm1_hub", "br0", "vabc", "02:00:00:00:00:01", "10.77.0.2/16")[1]
    ... # doctest: +NORMALIZE_WHITESPACE
    ['ip', '-n', 'dm1_hub', 'link', 'add', 'vabc', 'type', 'veth', 'peer', 'name', 'eth0',
     'address', '02:00:00:00:00:01', 'netns', 'dm1-app']
    """
    return [["ip", "netns", "add", netns],
            ["ip", "-n", hub, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
             "address", mac, "netns", netns],
            ["ip", "-n", hub, "link", "set", veth, "master", bridge, "up"],
            ["ip", "-n", netns, "addr", "add", interface, "dev", "eth0"],
            ["ip", "-n", netns, "link", "set", "eth0", "up"],
            ["ip", "-n", netns, "link", "set", "lo", "up"]]


def useradd_argv(root: Path, user: str) -> list[str]:
    """The login user, made by the image's own useradd; `*`: no password, yet not locked.

    >>> useradd_argv(Path("/m/root"), "ec2-user")[:3]
    ['chroot', '/m/root', 'useradd']
    """
    return ["chroot", str(root), "useradd", "--create-home", "--shell", "/bin/bash",
            "--groups", "sudo", "--password", "*", user]


def hosts_file(name: str) -> str:
    """sudo resolves the machine's own name; without `127.0.1.1 <name>` it complains."""
    return (f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n")


def sandbox_tag(directory: Path) -> str:
    """A short tag naming everything this sandbox makes (netns, cgroups), from its directory."""
    return hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:6]


# --- the machines -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MachineStatus:
    name: str
    status: str  # running | stopped
    private_ip: str
    public_address: str = ""
    ssh_ready: bool = False
    supervisor_pid: int = 0


class Machines:
    """The machines of one sandbox directory. Every method may run in a fresh process: what runs
    and what was made is in `<directory>/machines.json`."""

    BRIDGE = "br0"

    def __init__(self, directory: Path, *, image: Path | None = None, cidr: str = "10.77.0.0/16",
                 environ: Mapping[str, str] | None = None):
        self.directory = directory.resolve()
        self.image = image
        self.network = ipaddress.ip_network(cidr)
        self.environ = dict(environ if environ is not None else os.environ)
        self.tag = sandbox_tag(self.directory)
        self.prefix = f"dm{self.tag}"
        self.hub = f"{self.prefix}_hub"  # `_` never appears in a machine's name
        self._masker = Masker()

    # paths and names

    @property
    def state_path(self) -> Path:
        return self.directory / "machines.json"

    def machine_dir(self, name: str) -> Path:
        return self.directory / "machines" / name

    def root(self, name: str) -> Path:
        return self.machine_dir(name) / "root"

    def netns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def cgroups(self, name: str) -> list[Path]:
        return [base / f"deployer-{self.tag}" / name for base in CGROUP_ROOTS]

    def bridge(self, network: ipaddress.IPv4Network) -> str:
        """The hub's bridge of the LAN `network`: br0 for the sandbox's own CIDR, one per other
        CIDR (a VPC's), named after it (15 characters at most, as every interface name)."""
        if network == self.network:
            return self.BRIDGE
        return "br" + hashlib.sha256(str(network).encode()).hexdigest()[:10]

    # state

    @contextlib.contextmanager
    def _state(self) -> Iterator[dict]:
        """The state, locked against other processes, written back when the block ends."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with _locked(self.directory / "machines.lock"):
            try:
                state = json.loads(self.state_path.read_text())
            except (OSError, ValueError):
                state = {}
            state.setdefault("tag", self.tag)
            state.setdefault("machines", {})
            try:
                yield state
            finally:
                self._write(state)

    def _write(self, state: dict) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.replace(self.state_path)

    def _run(self, argv: Sequence[str], ok_codes: Sequence[int] = (0,)) -> process.Completed:
        return process.run(argv, env=self.environ, masker=self._masker, ok_codes=ok_codes)

    # start

    def start(self, name: str, private_ip: str, public_address: str | None = None, *,
              authorized_keys: str = "", login_user: str = "ec2-user", user_data: str | None = None,
              ports: Sequence[int] = (), binds: Sequence[Path] = (),
              network: str | None = None, wait: bool = True, timeout: float = 60.0) -> StepResult:
        """Boot machine `name` (a running one is left alone: `unchanged`).

        `network` is the LAN it lives on (an instance's VPC CIDR): `private_ip` with that prefix
        length, on a bridge of that CIDR's own (the sandbox's `cidr` when not given). Machines
        of one CIDR reach each other; a machine of another CIDR is on another bridge, with no
        route between the two. This machine gets an `unreachable` route for every such CIDR.

        Before the first boot the machine gets its own machine-id, SSH host key, hostname,
        `login_user` with passwordless sudo and `authorized_keys`, and, when given, `user_data`:
        a script run once, as root, at first boot (recorded in /var/lib/deployer/user-data.done).
        `wait` waits until its sshd answers (through the public address when it has one).
        The public address forwards port 22 and every port of `ports` into the machine (a running
        machine whose `ports` changed gets a new forwarder); `binds` are this machine's
        directories shown read-only inside (see nspawn_argv), fixed at boot.
        """
        if not _NAME.match(name):
            raise MachineError(f"machine names are [a-z][a-z0-9-]{{0,30}}, not {name!r}")
        lan = self.network if network is None else lan_network(network)
        address = ipaddress.ip_address(private_ip)
        if address not in lan or address in (lan.network_address, lan.broadcast_address):
            raise MachineError(f"{private_ip} is not a host address of {lan}")
        if public_address is not None and not public_address.startswith("127."):
            raise MachineError(f"public addresses live on loopback only, not {public_address}")
        forwarded = sorted({22, *(int(p) for p in ports)}) if public_address else []
        ensure_inotify_instances()
        with self._state() as state:
            known = state["machines"].get(name)
            if known and is_alive(known.get("supervisor", 0), str(self.machine_dir(name))):
                if (public_address and not known.get("public_address")
                        and known["private_ip"] == private_ip):
                    # A public address arrives (an Elastic IP associated): as on EC2, the
                    # machine keeps running and is reachable there from now on.
                    if _answers(public_address, 22):
                        raise MachineError(f"{public_address}:22 already answers, and not for"
                                           " this sandbox")
                    known["public_address"] = public_address
                    known["ports"] = []  # the forwarder is started below
                if (known["private_ip"], known.get("public_address"),
                        known.get("network", str(self.network))) != (private_ip, public_address, str(lan)):
                    raise MachineError(
                        f"machine {name} runs with {known['private_ip']}"
                        f" / {known.get('public_address')} on {known.get('network', self.network)};"
                        " stop it before changing its addresses")
                reason = "already running"
                alive = is_alive(known.get("forwarder", 0), FORWARDER_MARKER)
                if public_address and (not alive or known.get("ports", [22]) != forwarded):
                    if alive:
                        stop_pid(known["forwarder"], FORWARDER_MARKER)
                    known["ports"] = forwarded
                    self._write(state)
                    known["forwarder"] = self._start_forwarder(name, private_ip, public_address,
                                                               forwarded)
                    reason = (f"already running; forwarding {public_address} ports"
                              f" {','.join(map(str, forwarded))}")
                result = StepResult(f"machine {name}", UNCHANGED if reason == "already running"
                                    else CHANGED, reason)
            else:
                if known:  # recorded but not running (crashed, or this machine rebooted)
                    self._teardown(state, name)
                result = self._boot(state, name, private_ip, public_address, authorized_keys,
                                    login_user, user_data, forwarded, binds, lan)
        if wait:
            self.wait_until_ready(name, timeout)
        return result

    def _boot(self, state: dict, name: str, private_ip: str, public_address: str | None,
              authorized_keys: str, login_user: str, user_data: str | None,
              forwarded: Sequence[int] = (22,), binds: Sequence[Path] = (),
              lan: ipaddress.IPv4Network | None = None) -> StepResult:
        lan = lan or self.network
        if self.image is None or not (self.image / IMAGE_MARKER).exists():
            raise MachineError(f"no complete base image at {self.image}; run ensure_base_image()")
        if public_address and _answers(public_address, 22):
            raise MachineError(f"{public_address}:22 already answers, and not for this sandbox")
        bridge = self._ensure_network(state, lan)
        entry = state["machines"][name] = {
            "private_ip": private_ip, "public_address": public_address, "made": [],
            "ports": list(forwarded) if public_address else [], "network": str(lan)}
        made: list[list[str]] = entry["made"]  # what to undo, in the order it was made
        try:
            mdir = self.machine_dir(name)
            for sub in ("upper", "work", "root"):
                (mdir / sub).mkdir(parents=True, exist_ok=True)
            root = self.root(name)
            made.append(["mount", str(root)])
            self._write(state)
            self._run(overlay_mount_argv(self.image, mdir / "upper", mdir / "work", root))
            first_boot = not (mdir / "prepared").exists()
            if first_boot:
                self._prepare(name, login_user, user_data)
            self._install_keys(name, login_user, authorized_keys)
            self._trust_binds(name, binds)

            netns = self.netns(name)
            veth = "v" + hashlib.sha256(name.encode()).hexdigest()[:12]
            made.append(["netns", netns])
            self._write(state)
            interface = f"{private_ip}/{lan.prefixlen}"
            digest = hashlib.sha256(f"{self.tag}/{name}".encode()).hexdigest()
            mac = "02:" + ":".join(digest[i:i + 2] for i in range(0, 10, 2))  # locally administered
            for argv in machine_net_argvs(netns, self.hub, bridge, veth, mac, interface):
                self._run(argv)

            made.append(["propagate", str(PROPAGATE_DIR / netns)])
            for cgroup in self.cgroups(name):
                cgroup.mkdir(parents=True, exist_ok=True)
                made.append(["cgroup", str(cgroup)])
            supervisor = process.start_background(
                supervisor_argv(mdir, self.cgroups(name), nspawn_argv(name, root, netns, binds)),
                env=self.environ, log_path=mdir / "nspawn.log")
            entry["supervisor"] = supervisor.pid
            self._write(state)
            if public_address:
                entry["forwarder"] = self._start_forwarder(name, private_ip, public_address,
                                                           forwarded)
        except BaseException:
            self._teardown(state, name)
            raise
        what = "first boot" if first_boot else "booted again (its disk kept)"
        via = (f"; public {public_address} ports {','.join(map(str, forwarded))}" if public_address
               else "; private only")
        return StepResult(f"machine {name}", CHANGED, f"{what} at {private_ip}/{lan.prefixlen}{via}")

    def _start_forwarder(self, name: str, private_ip: str, public_address: str,
                         ports: Sequence[int] = (22,)) -> int:
        proc = process.start_background(
            [sys.executable, "-m", FORWARDER_MARKER, public_address,
             str(NETNS_DIR / self.netns(name)), private_ip, *(str(p) for p in ports)],
            env=self.environ, log_path=self.machine_dir(name) / "forwarder.log")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log = (self.machine_dir(name) / "forwarder.log").read_text(errors="replace")
                raise MachineError(f"the forwarder for {public_address} exited: {log.splitlines()[-1:]}")
            if all(_listens(public_address, p) for p in ports):
                return proc.pid
            time.sleep(0.02)
        raise MachineError(f"the forwarder for {public_address} did not listen within 10s")

    def _ensure_network(self, state: dict, lan: ipaddress.IPv4Network) -> str:
        """The hub namespace, the bridge of `lan` in it and this machine's unreachable route for
        `lan`; the bridge's name. The sandbox's own CIDR is recorded as `route`/`metric` and
        bridged on br0; every other LAN (a VPC's CIDR) under `lans`, each with its own bridge
        and route. All stay until stop_all(), which removes exactly those recorded."""
        net = state.setdefault("network", {})
        if net.get("route") and net["route"] != str(self.network):
            raise MachineError(f"this sandbox's machines live on {net['route']}, not {self.network};"
                               " stop_all() before changing it")
        if not net.get("hub") or not (NETNS_DIR / self.hub).exists():
            net["hub"] = self.hub
            self._write(state)
            if not (NETNS_DIR / self.hub).exists():
                for argv in hub_argvs(self.hub, self.BRIDGE):
                    self._run(argv)
        if lan == self.network:
            self._ensure_route(state, net, lan)
            return self.BRIDGE
        record = net.setdefault("lans", {}).setdefault(str(lan), {"bridge": self.bridge(lan)})
        self._write(state)
        if self._run(["ip", "-n", self.hub, "link", "show", "dev", record["bridge"]],
                     ok_codes=(0, 1)).returncode != 0:
            for argv in bridge_argvs(self.hub, record["bridge"]):
                self._run(argv)
        self._ensure_route(state, record, lan)
        return record["bridge"]

    def _ensure_route(self, state: dict, record: dict, lan: ipaddress.IPv4Network) -> None:
        """An unreachable route for `lan`, recorded (`route`, `metric`) before it is added."""
        if record.get("route") == str(lan) and self._has_route(lan, record.get("metric", 0)):
            return
        # Its own metric, so two sandboxes on one CIDR each add and remove only their own
        # route, and the CIDR stays unreachable while either of them runs.
        base = 3000 + int(self.tag, 16) % 60000
        for metric in range(base, base + 32):
            if self._has_route(lan, metric):
                continue
            record.update(route=str(lan), metric=metric)
            self._write(state)
            self._run(unreachable_route_argv("add", str(lan), metric))
            return
        raise MachineError(f"no free metric for the unreachable route of {lan}")

    def _has_route(self, lan: ipaddress.IPv4Network | str, metric: int) -> bool:
        out = self._run(["ip", "route", "show", "type", "unreachable", str(lan)]).output
        return any(line.split()[-2:] == ["metric", str(metric)] for line in out.splitlines())

    def _prepare(self, name: str, login_user: str, user_data: str | None) -> None:
        """What differs per machine, written through the overlay into its upper directory."""
        root = self.root(name)
        (root / "etc" / "machine-id").write_text(uuid.uuid4().hex + "\n")
        dbus_id = root / "var" / "lib" / "dbus" / "machine-id"  # the image's copy is shared
        if dbus_id.exists() or dbus_id.is_symlink():
            dbus_id.unlink()
            dbus_id.symlink_to("/etc/machine-id")
        (root / "etc" / "hostname").write_text(name + "\n")
        (root / "etc" / "hosts").write_text(hosts_file(name))
        key = root / "etc" / "ssh" / "ssh_host_ed25519_key"
        for old in key.parent.glob("ssh_host_ed25519_key*"):
            old.unlink()
        self._run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)])
        (root / "etc" / "ssh" / "sshd_config.d" / "deployer-sandbox.conf").write_text(SSHD_DROP_IN)
        getty = root / "etc" / "systemd" / "system" / "console-getty.service"
        if not getty.is_symlink():  # nobody types on a read-only console: mask its login prompt
            getty.symlink_to("/dev/null")
        if login_user != "root" and not _passwd_entry(root, login_user):
            self._run(useradd_argv(root, login_user))
            sudoers = root / "etc" / "sudoers.d" / f"90-{login_user}"
            sudoers.write_text(f"{login_user} ALL=(ALL) NOPASSWD:ALL\n")
            sudoers.chmod(0o440)
        if user_data is not None:
            lib = root / "var" / "lib" / "deployer"
            lib.mkdir(parents=True, exist_ok=True)
            script = user_data if user_data.startswith("#!") else "#!/bin/sh\n" + user_data
            (lib / "user-data").write_text(script if script.endswith("\n") else script + "\n")
            (lib / "user-data").chmod(0o700)
            (lib / "run-user-data").write_text(USER_DATA_RUNNER.format(done=USER_DATA_DONE))
            (lib / "run-user-data").chmod(0o755)
            units = root / "etc" / "systemd" / "system"
            (units / "deployer-user-data.service").write_text(USER_DATA_UNIT.format(done=USER_DATA_DONE))
            wants = units / "multi-user.target.wants"
            wants.mkdir(parents=True, exist_ok=True)
            link = wants / "deployer-user-data.service"
            if not link.is_symlink():
                link.symlink_to("/etc/systemd/system/deployer-user-data.service")
        (self.machine_dir(name) / "prepared").write_text(f"{login_user}\n")

    def _trust_binds(self, name: str, binds: Sequence[Path]) -> None:
        """A bind keeps its owner (root), and git refuses a repository another user owns
        ("detected dubious ownership"), so the login user could not clone the sandbox's origin:
        each bind is a safe.directory in the machine's own /etc/gitconfig."""
        gitconfig = self.root(name) / "etc" / "gitconfig"
        if binds:
            gitconfig.write_text("# Written by deployer's sandbox: its read-only binds.\n[safe]\n"
                                 + "".join(f"\tdirectory = {path}\n" for path in binds))
        elif gitconfig.exists():
            gitconfig.unlink()

    def _install_keys(self, name: str, login_user: str, authorized_keys: str) -> None:
        root = self.root(name)
        entry = _passwd_entry(root, login_user)
        if not entry:
            raise MachineError(f"machine {name} has no user {login_user}")
        uid, gid, home = int(entry[2]), int(entry[3]), entry[5]
        ssh_dir = root / home.lstrip("/") / ".ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys = ssh_dir / "authorized_keys"
        keys.write_text(authorized_keys.strip() + "\n" if authorized_keys.strip() else "")
        keys.chmod(0o600)
        for path in (ssh_dir, keys):
            os.chown(path, uid, gid)

    # readiness and status

    def is_ssh_ready(self, name: str) -> bool:
        """The machine's sshd answers on its private address, and on its public one if it has one."""
        try:
            entry = json.loads(self.state_path.read_text())["machines"][name]
        except (OSError, ValueError, KeyError):
            return False
        inside = forwarder.ssh_banner_in_netns(NETNS_DIR / self.netns(name), entry["private_ip"])
        if not inside or not entry.get("public_address"):
            return inside
        return _answers(entry["public_address"], 22)

    def wait_until_ready(self, name: str, timeout: float = 60.0) -> float:
        """Seconds until the machine's sshd answered; MachineError after `timeout`."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.is_ssh_ready(name):
                return time.monotonic() - started
            if not self.is_running(name):
                raise MachineError(f"machine {name} stopped while booting; see "
                                   f"{self.machine_dir(name) / 'console.log'}")
            time.sleep(0.05)
        raise MachineError(f"machine {name}: sshd did not answer within {timeout:.0f}s; see "
                           f"{self.machine_dir(name) / 'console.log'}")

    def recorded(self) -> dict[str, dict]:
        """What machines.json says about each machine (addresses, ports, pids), unlocked: a
        snapshot for a caller that then asks start() or stop(), which decide under the lock."""
        try:
            return dict(json.loads(self.state_path.read_text())["machines"])
        except (OSError, ValueError, KeyError):
            return {}

    def is_running(self, name: str) -> bool:
        try:
            entry = json.loads(self.state_path.read_text())["machines"][name]
        except (OSError, ValueError, KeyError):
            return False
        return is_alive(entry.get("supervisor", 0), str(self.machine_dir(name)))

    def status(self) -> tuple[MachineStatus, ...]:
        try:
            machines = json.loads(self.state_path.read_text())["machines"]
        except (OSError, ValueError, KeyError):
            return ()
        found = []
        for name, entry in sorted(machines.items()):
            running = is_alive(entry.get("supervisor", 0), str(self.machine_dir(name)))
            found.append(MachineStatus(
                name, "running" if running else "stopped", entry["private_ip"],
                entry.get("public_address") or "", running and self.is_ssh_ready(name),
                entry.get("supervisor", 0) if running else 0))
        return tuple(found)

    def pids(self, name: str) -> list[int]:
        """Every process of the machine: its supervisor, nspawn, and all inside (by cgroup)."""
        found: set[int] = set()
        for cgroup in self.cgroups(name):
            found.update(_cgroup_pids(cgroup))
        return sorted(found)

    # stop

    def stop(self, name: str, timeout: float = 20.0) -> StepResult:
        """Shut the machine down (orderly, then by force) and remove what was made for it."""
        with self._state() as state:
            if name not in state["machines"]:
                return StepResult(f"machine {name}", UNCHANGED, "not running")
            was_running = self._teardown(state, name, timeout)
        return StepResult(f"machine {name}", CHANGED if was_running else UNCHANGED,
                          "stopped" if was_running else "was not running; cleaned up")

    def stop_all(self, timeout: float = 20.0) -> tuple[StepResult, ...]:
        """Stop every machine, then remove the hub namespace, the route and the cgroups: every
        mount, namespace, veth, bridge, route and cgroup this sandbox made, and only those."""
        with self._state() as state:
            names = list(state["machines"])
            running = _signal_all(state, names, self)  # all shut down at once, not one by one
            results = []
            for name in names:
                self._teardown(state, name, timeout, signalled=True)
                was_running = name in running
                results.append(StepResult(f"machine {name}", CHANGED if was_running else UNCHANGED,
                                          "stopped" if was_running else "was not running"))
            # Anything carrying this sandbox's tag is ours even if a crash lost its record.
            for mount in sorted(_mounts_under(self.directory / "machines"), reverse=True):
                self._run(["umount", "-l", mount], ok_codes=(0, 32))
                results.append(StepResult("mount", CHANGED, f"unmounted stray {mount}"))
            for ns in self._our_netns():
                if ns != self.hub:
                    self._run(["ip", "netns", "delete", ns], ok_codes=(0, 1))
                    results.append(StepResult("netns", CHANGED, f"deleted stray {ns}"))
            net = state.pop("network", {})
            if (NETNS_DIR / self.hub).exists():
                self._run(["ip", "netns", "delete", self.hub])  # its bridge and veths go with it
                results.append(StepResult("network", CHANGED, f"deleted {self.hub} and its bridges"))
            for record in [net, *(net.get("lans") or {}).values()]:  # only the routes it added
                if record.get("route") and self._has_route(record["route"], record["metric"]):
                    self._run(unreachable_route_argv("del", record["route"], record["metric"]))
                    results.append(StepResult("route", CHANGED,
                                              f"removed unreachable {record['route']}"))
            for base in CGROUP_ROOTS:
                parent = base / f"deployer-{self.tag}"
                if parent.is_dir():
                    _remove_cgroup(parent)
        return tuple(results) or (StepResult("machines", UNCHANGED, "nothing was running"),)

    def _our_netns(self) -> list[str]:
        try:
            return sorted(p.name for p in NETNS_DIR.iterdir()
                          if p.name == self.hub or p.name.startswith(self.prefix + "-"))
        except OSError:
            return []

    def _teardown(self, state: dict, name: str, timeout: float = 20.0, signalled: bool = False) -> bool:
        """Stop machine `name` and undo what its record says was made. True if it was running."""
        entry = state["machines"].get(name, {})
        mdir = self.machine_dir(name)
        if entry.get("forwarder"):
            stop_pid(entry["forwarder"], FORWARDER_MARKER)
        supervisor = entry.get("supervisor", 0)
        started = start_time(supervisor)
        was_running = is_alive(supervisor, str(mdir))
        if was_running:
            if not signalled:  # once: nspawn takes a second SIGTERM as "kill it now"
                os.kill(supervisor, signal.SIGTERM)  # the supervisor asks nspawn for a poweroff
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and running(supervisor, started):
                time.sleep(0.05)
        cgroups = [Path(path) for kind, path in entry.get("made", []) if kind == "cgroup"]
        _kill_cgroups(cgroups)  # what an orderly shutdown left behind
        for kind, what in reversed(entry.get("made", [])):
            if kind == "mount" and what in _mounts_under(Path(what)):
                self._run(["umount", what], ok_codes=(0, 32))
                if what in _mounts_under(Path(what)):
                    self._run(["umount", "-l", what], ok_codes=(0, 32))
            elif kind == "netns" and (NETNS_DIR / what).exists():
                self._run(["ip", "netns", "delete", what])  # eth0 goes, and its peer on the bridge
            elif kind == "cgroup" and Path(what).is_dir():
                _remove_cgroup(Path(what))
            elif kind == "propagate" and Path(what).is_dir() and not _mounts_under(Path(what)):
                # nspawn leaves it when /run is not a tmpfs ("Attempted to remove disk file system")
                shutil.rmtree(what, ignore_errors=True)
        state["machines"].pop(name, None)
        self._write(state)
        return was_running


def _signal_all(state: dict, names: list[str], machines: Machines) -> set[str]:
    """SIGTERM every running machine's supervisor; the names of those that were running."""
    running = set()
    for name in names:
        supervisor = state["machines"][name].get("supervisor", 0)
        if is_alive(supervisor, str(machines.machine_dir(name))):
            os.kill(supervisor, signal.SIGTERM)
            running.add(name)
    return running


# --- helpers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path`, from /proc/mounts (octal escapes decoded)."""
    prefix = str(path)
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        point = line.split()[1].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix.rstrip("/") + "/"):
            found.append(point)
    return found


def _passwd_entry(root: Path, user: str) -> list[str] | None:
    try:
        for line in (root / "etc" / "passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == user and len(fields) >= 7:
                return fields
    except OSError:
        pass
    return None


def _cgroup_pids(cgroup: Path) -> set[int]:
    found: set[int] = set()
    if not cgroup.is_dir():
        return found
    for directory, _, _ in os.walk(cgroup):
        try:
            text = (Path(directory) / "cgroup.procs").read_text()
        except OSError:
            continue
        found.update(int(pid) for pid in text.split())
    return found


def _kill_cgroups(cgroups: list[Path], timeout: float = 10.0) -> None:
    """SIGKILL what is in `cgroups` until they are empty, then wait until each process killed
    has stopped running: it leaves its cgroup a moment before (see process.running)."""
    deadline = time.monotonic() + timeout
    killed: dict[int, str | None] = {}
    while True:
        pids = set().union(*(_cgroup_pids(c) for c in cgroups)) if cgroups else set()
        if not pids and not any(running(p, t) for p, t in killed.items()):
            return
        if time.monotonic() >= deadline:
            raise MachineError(f"processes in {cgroups[0]} survived SIGKILL for {timeout:.0f}s")
        for pid in pids:
            killed.setdefault(pid, start_time(pid))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05 if pids else 0.01)


def _remove_cgroup(cgroup: Path) -> None:
    """rmdir a cgroup and the cgroups inside it (the machine's systemd makes its own)."""
    for directory, _, _ in os.walk(cgroup, topdown=False):
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(directory)


def _answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1.0) as sock:
            sock.settimeout(1.0)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _listens(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False
