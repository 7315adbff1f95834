"""Existing servers made ready for releases: the deploy user, trust between hosts, and each
role's packages, directories, system files and systemd units.

Probe → act → say why, item by item: every package, directory, file and unit is reported
`installed`, `changed` or `already present`, and a file that changed reloads only the units that
use it. The shell they run is built in commands.py (`user_command`, `probe_command`, ...), like
every other command deployer runs on a host; `ensure_*` run it over one connection.

    ensure_user(remote, deploy_user, public_key)          as the bootstrap login
    ensure_provisioned(remote, role, rendered)            as the deploy user (sudo -n)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployer import templates
from deployer.errors import HostError
from deployer.hosts import commands as cmd
from deployer.hosts.release import parse_kv
from deployer.results import CHANGED, UNCHANGED, StepResult
from deployer.stacks import Provision

if TYPE_CHECKING:
    from deployer.hosts.connection import Remote

UNIT_DIR = "/etc/systemd/system"


def sudo_for(remote: Remote) -> str:
    """How this login runs a command as root: itself when it is root, else `sudo -n` (never a
    password prompt: a login without passwordless sudo fails at once)."""
    return "" if remote.host.user == "root" else f"{cmd.SUDO} "


# --- rendering (pure) ------------------------------------------------------------------------

@dataclass(frozen=True)
class Wanted:
    """A role's provisioning for one host, rendered: path → (content, mode, owner, reload)."""

    packages: tuple[str, ...]
    dirs: tuple[tuple[str, str, str], ...]  # (path, mode, owner)
    files: Mapping[str, tuple[bytes, str, str, tuple[str, ...]]]
    units: Mapping[str, tuple[bytes, bool]]  # name → (unit file, start)


def owner_of(owner: str, deploy_user: str) -> str:
    return deploy_user if owner == "deploy" else owner


def render(spec: Provision, project: Path, ctx: Mapping[str, Any], deploy_user: str) -> Wanted:
    files = {}
    for f in spec.files:
        data = (templates.render_file(project / f.template, ctx, f.format).encode() if f.template
                else (project / f.source).read_bytes())
        files[f.path] = (data, f.mode, owner_of(f.owner, deploy_user), f.reload)
    units = {u.name: (templates.render_file(project / u.template, ctx).encode(), u.start)
             for u in spec.units}
    dirs = tuple((d.path, d.mode, owner_of(d.owner, deploy_user)) for d in spec.dirs)
    return Wanted(spec.packages, dirs, files, units)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- runners ---------------------------------------------------------------------------------

def ensure_user(remote: Remote, user: str, public_key: str) -> list[StepResult]:
    """As the bootstrap login: the deploy user, its sudo rule and the operator's key."""
    done = remote.run(cmd.user_command(user, public_key, sudo_for(remote)), timeout=120,
                      what=f"create user {user}")
    if not done.ok:
        raise HostError(f"{remote.host}: creating the deploy user {user} failed:"
                        f" {remote.log.masker.mask(done.last_line)}")
    said = parse_kv(done.stdout)
    words = {"created": "created", "changed": "sudo rule written", "added": "operator key added"}
    return [
        StepResult(f"user {user}", CHANGED if said.get("user") == "created" else UNCHANGED,
                   "created, with a home and bash" if said.get("user") == "created" else "exists"),
        StepResult(f"sudo {user}", CHANGED if said.get("sudo") == "changed" else UNCHANGED,
                   words["changed"] if said.get("sudo") == "changed" else "NOPASSWD rule present"),
        StepResult(f"key {user}", CHANGED if said.get("key") == "added" else UNCHANGED,
                   words["added"] if said.get("key") == "added" else "operator key present"),
    ]


def host_key(remote: Remote, user: str) -> tuple[str, StepResult]:
    """`user`'s own public key on this host (made when missing)."""
    done = remote.run(cmd.host_key_command(user, sudo_for(remote)), timeout=60,
                      what=f"key of {user}")
    lines = done.stdout.strip().splitlines()
    if not done.ok or len(lines) < 2 or not lines[-1].startswith("ssh-"):
        raise HostError(f"{remote.host}: making {user}'s key failed:"
                        f" {remote.log.masker.mask(done.last_line)}")
    made = lines[0] == "made=yes"
    return lines[-1], StepResult(f"ssh key {user}", CHANGED if made else UNCHANGED,
                                 "generated (ed25519)" if made else "exists")


def check_trust(remote: Remote, address: str, target: str) -> StepResult:
    done = remote.run(cmd.trust_check_command(address), timeout=60, what=f"ssh to {target}")
    if not done.ok:
        raise HostError(f"{remote.host}: SSH to {target} ({address}) without a password failed:"
                        f" {remote.log.masker.mask(done.last_line)}")
    return StepResult(f"ssh to {target}", UNCHANGED, f"works without a password ({address})")


def ensure_provisioned(remote: Remote, wanted: Wanted) -> list[StepResult]:
    """Packages, directories, files and units of one host, each probed and acted on only when
    needed. Round trips: probe, packages (when missing), one per changed file, units."""
    sudo = sudo_for(remote)
    names = [p.split("=", 1)[0] for p in wanted.packages]
    unit_paths = {f"{UNIT_DIR}/{name}.service": name for name in wanted.units}
    paths = [d[0] for d in wanted.dirs] + list(wanted.files) + list(unit_paths)
    # As root: the files it compares may be root's alone (a password file, 0600).
    found = parse_kv(remote.run(cmd.as_root(cmd.probe_command(names, paths, list(wanted.units)), sudo),
                                timeout=60, what="probe provisioning").stdout)
    results: list[StepResult] = []

    missing = []
    for package, name in zip(wanted.packages, names, strict=True):
        have = found.get(f"pkg:{name}", "")
        pinned = package.split("=", 1)[1] if "=" in package else ""
        if have and (not pinned or _version_matches(have, pinned)):
            results.append(StepResult(f"package {name}", UNCHANGED, f"already present {have}"))
        else:
            missing.append((package, name, have))
    if missing:
        done = remote.run(cmd.install_packages_command([p for p, _, _ in missing], sudo), timeout=900,
                          what="apt-get install")
        if not done.ok:
            raise HostError(f"{remote.host}: installing {', '.join(n for _, n, _ in missing)}"
                            f" failed: {remote.log.masker.mask(done.last_line)}")
        now = parse_kv(remote.run(cmd.probe_command([n for _, n, _ in missing], [], []), timeout=60,
                                  what="probe packages").stdout)
        for _, name, had in missing:
            version = now.get(f"pkg:{name}", "?")
            results.append(StepResult(f"package {name}", CHANGED,
                                      f"upgraded {had} → {version}" if had else f"installed {version}"))

    for path, mode, owner in wanted.dirs:
        have = found.get(f"path:{path}", "")
        if have.split(" ")[1:] == [mode.lstrip("0") or "0", owner]:
            results.append(StepResult(f"dir {path}", UNCHANGED, "already present"))
        else:
            remote.run(cmd.dir_command(path, mode, owner, sudo), timeout=30, check=True,
                       what=f"mkdir {path}")
            results.append(StepResult(f"dir {path}", CHANGED,
                                      "created" if not have else f"set {mode} {owner}"))

    reload: list[str] = []
    for path, (data, mode, owner, uses) in wanted.files.items():
        if _put_if_changed(remote, path, data, mode, owner, found.get(f"path:{path}", ""), sudo):
            reload += [u for u in uses if u not in reload]
            why = f"; reloads {', '.join(uses)}" if uses else ""
            results.append(StepResult(f"file {path}", CHANGED,
                                      ("written" if not found.get(f"path:{path}") else "updated") + why))
        else:
            results.append(StepResult(f"file {path}", UNCHANGED, "already present"))

    changed_units, enable, start = [], [], []
    for name, (data, wants_start) in wanted.units.items():
        path = f"{UNIT_DIR}/{name}.service"
        if _put_if_changed(remote, path, data, "0644", "root", found.get(f"path:{path}", ""), sudo):
            changed_units.append(name)
        enabled, _, active = found.get(f"unit:{name}", " ").partition(" ")
        if wants_start and enabled != "enabled":
            enable.append(name)
        if wants_start and active != "active":
            start.append(name)
    restart = [n for n in changed_units if n not in start and wanted.units[n][1]]
    reload = [u for u in reload if u not in start and u not in restart]
    reloaded: list[str] = []
    if changed_units or enable or start or restart or reload:
        done = remote.run(cmd.units_command(bool(changed_units), enable, start, restart, reload, sudo),
                          timeout=300, what="systemctl")
        if not done.ok:
            raise HostError(f"{remote.host}: systemctl failed: {remote.log.masker.mask(done.last_line)}")
        reloaded = [line.split("=", 1)[1] for line in done.stdout.splitlines()
                    if line.startswith("reloaded=")]
    for name in wanted.units:
        did = [w for w, names in (("installed" if not found.get(f"path:{UNIT_DIR}/{name}.service")
                                   else "updated", changed_units), ("enabled", enable),
                                  ("started", start), ("restarted", restart)) if name in names]
        results.append(StepResult(f"unit {name}", CHANGED if did else UNCHANGED,
                                  ", ".join(did) if did else "already present and running"
                                  if wanted.units[name][1] else "already present"))
    for name in reloaded:
        results.append(StepResult(f"reload {name}", CHANGED, "a file it uses changed"))
    return results


def _version_matches(have: str, pinned: str) -> bool:
    """`1.22.*` pins a prefix; anything else the exact version."""
    return have.startswith(pinned[:-1]) if pinned.endswith("*") else have == pinned


def _put_if_changed(remote: Remote, path: str, data: bytes, mode: str, owner: str, have: str,
                    sudo: str) -> bool:
    digest, _, rest = have.partition(" ")
    if digest == _digest(data) and rest == f"{mode.lstrip('0') or '0'} {owner}":
        return False
    tmp = f"{remote.home}/.deploy-upload-{_digest(path.encode())[:12]}"
    remote.put([(tmp, data, 0o600)])  # never readable by others on the way: it may be secret
    remote.run(cmd.install_file_command(tmp, path, mode, owner, sudo), timeout=60, check=True,
               what=f"install {path}")
    return True

