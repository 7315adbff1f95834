"""Pre-flight checks (`deploy doctor STACK ENV`, and first in every apply of a stack with a
[doctor] table): is this machine ready to deploy, and is every server ready to be deployed to?
Nothing is changed anywhere.

Here: the tools the stack needs on PATH, git that runs, the SSH key and the env file readable
by the operator alone. On every host, logged in as the bootstrap user (a bare server has no
deploy user yet), in one round trip (commands.doctor_probe): sudo without a password (or root),
the OS, free disk, the commands the stack needs, the clock, and the TCP connections the host
must be able to open. Hosts are checked in parallel; an unreachable one fails its `reachable`
check and its other checks are reported not run.
"""

from __future__ import annotations

import re
import shlex
import shutil
import stat
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from deployer import process, validate
from deployer.config import EnvConfig, Settings
from deployer.errors import DeployerError, Interrupted
from deployer.hosts import commands as cmd
from deployer.hosts.address import Host
from deployer.logs import RunLog
from deployer.results import Check, DoctorResult, Progress
from deployer.stacks import DoctorSpec, Stack

LOCAL = "local"
REACH_TIMEOUT = 3.0  # seconds for each TCP connection a host tries
PROBE_TIMEOUT = 60.0  # the whole probe of one host, once connected
# What a check says when the probe gave no answer for it: absent("free space for /").
Absent = Callable[[str], str]


@dataclass(frozen=True)
class ReachTarget:
    """One [[doctor.reach]] as one host tries it: `problem` says why it is not tried."""

    name: str  # the check's name: "reach db_address:5432"
    address: str
    port: int
    problem: str = ""


def run(settings: Settings, stack: Stack, env: EnvConfig, *, log: RunLog, progress: Progress,
        outputs: Mapping[str, object] | None = None,
        accept_new_host_keys: bool = False) -> DoctorResult:
    """Every check of the stack's [doctor] table (its defaults without one): this machine's
    first, then every host of every role, in parallel. Read-only.

    A failed check is data (`DoctorResult.failed`), not an exception; what cannot be checked at
    all (hosts from Terraform outputs before the first apply) raises ConfigError.
    """
    from deployer.hosts import fleet  # paramiko and Fabric load only when hosts are checked

    spec = stack.doctor or DoctorSpec()
    checks = local_checks(settings, env, spec, log)
    targets = [(view, host) for view, hosts in fleet.role_hosts(stack, env, outputs or {},
                                                                login="bootstrap")
               for host in hosts] if stack.roles else []
    if targets:
        each_role = {view.role: view.hosts.parallel for view, _ in targets if view.hosts}
        width = max(1, min(len(targets), sum(each_role.values())))
        progress(f"doctor: checking {len(targets)} host(s), {width} at a time")
        checks += _check_hosts(settings, env, spec, targets, width, log, progress,
                               accept_new_host_keys)
    return DoctorResult(tuple(replace(c, detail=log.masker.mask(c.detail)) for c in checks))


def _check_hosts(settings: Settings, env: EnvConfig, spec: DoctorSpec,
                 targets: list[tuple[Stack, Host]], width: int, log: RunLog, progress: Progress,
                 accept_new: bool) -> list[Check]:
    def one(target: tuple[Stack, Host]) -> list[Check]:
        view, host = target
        found = check_host(settings, view, env, host, spec, log=log, accept_new=accept_new)
        failed = [c.name for c in found if c.ok is False]
        progress(f"[{host}] doctor: " + (f"FAILED {', '.join(failed)}" if failed
                                         else f"{len(found)} checks passed"))
        return found

    with ThreadPoolExecutor(max_workers=width) as pool:
        futures = [pool.submit(one, t) for t in targets]
        try:
            return [c for f in futures for c in f.result()]
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()
            raise Interrupted("interrupted: the pre-flight checks stopped; nothing was changed"
                              " anywhere") from None


def check_host(settings: Settings, stack: Stack, env: EnvConfig, host: Host, spec: DoctorSpec, *,
               log: RunLog, accept_new: bool = False) -> list[Check]:
    """One host's checks over one connection and one round trip (`stack` is the host's role)."""
    from deployer.hosts import fleet

    where = str(host)
    reach = reach_targets(spec, stack.role, env.values)
    tried = tuple((t.address, t.port) for t in reach if not t.problem)
    remote = None
    try:
        remote = fleet.remote_for(stack, env, settings, host, log, accept_new)
        remote.open()
        sent = time.time()
        done = remote.run(cmd.doctor_probe(spec.disk_path, spec.commands, tried, REACH_TIMEOUT),
                          timeout=PROBE_TIMEOUT, what="the pre-flight probe")
        received = time.time()
    except DeployerError as exc:
        return not_reached(where, spec, reach, str(exc))
    finally:
        if remote is not None:
            remote.close()
    answer = "" if done.ok else f" (the probe exited {done.code}: {done.last_line})"
    return [Check(where, "reachable", True, f"logged in as {host.user}"),
            *host_checks(where, spec, reach, parse_facts(done.stdout), sent=sent,
                         received=received, user=host.user, missing=answer)]


# --- here -----------------------------------------------------------------------------------


def local_checks(settings: Settings, env: EnvConfig, spec: DoctorSpec, log: RunLog) -> list[Check]:
    path = settings.environ.get("PATH", "")
    checks = []
    for tool in spec.tools:
        if tool != "git":
            found = shutil.which(tool, path=path)
            checks.append(Check(LOCAL, f"tool {tool}", found is not None,
                                found or f"{tool} is not on PATH; install it"))
    checks.append(git_check(settings, log))
    checks.append(ssh_key_check(settings.ssh_key))
    checks.append(env_file_check(env.path))
    return checks


def git_check(settings: Settings, log: RunLog) -> Check:
    """git on PATH, and `git --version` runs (a broken install fails here, not mid-deploy)."""
    git = shutil.which("git", path=settings.environ.get("PATH", ""))
    if git is None:
        return Check(LOCAL, "tool git", False, "git is not on PATH; install it")
    try:
        done = process.run([git, "--version"], env=settings.environ, masker=log.masker, log=log)
    except process.CommandFailed as exc:
        last = (exc.output.strip().splitlines() or ["no output"])[-1]
        return Check(LOCAL, "tool git", False, f"{git} --version exited {exc.returncode}: {last}")
    except OSError as exc:
        return Check(LOCAL, "tool git", False, f"{git} --version cannot run: {exc.strerror or exc}")
    return Check(LOCAL, "tool git", True, f"{done.output.strip()} ({git})")


def ssh_key_check(key: str) -> Check:
    """The key in DEPLOYER_SSH_KEY exists, this user can read it, and nobody else can (OpenSSH
    refuses such a key, and it should)."""
    if not key:
        return Check(LOCAL, "ssh key", None, "DEPLOYER_SSH_KEY is not set: the SSH agent's keys"
                                             " are used")
    path = Path(key)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        return Check(LOCAL, "ssh key", False, f"{key} (DEPLOYER_SSH_KEY): {exc.strerror or exc}")
    try:
        path.open("rb").close()
    except OSError as exc:
        return Check(LOCAL, "ssh key", False, f"{key} cannot be read: {exc.strerror or exc}")
    if mode & 0o077:
        return Check(LOCAL, "ssh key", False, f"{key} is mode {mode:04o}: others can read it;"
                                              f" run: chmod 600 {shlex.quote(key)}")
    return Check(LOCAL, "ssh key", True, f"{key} (mode {mode:04o})")


def env_file_check(path: Path) -> Check:
    """The env file holds secrets: only its owner may read it (0600; 0400 is fine too)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        return Check(LOCAL, "env file", False, f"{path}: {exc.strerror or exc}")
    if mode & 0o077:
        return Check(LOCAL, "env file", False,
                     f"{path} is mode {mode:04o}: it holds secrets, and group or others can read"
                     f" it; run: chmod 600 {shlex.quote(str(path))}")
    return Check(LOCAL, "env file", True, f"{path} (mode {mode:04o})")


# --- on a host: what to try, and what the probe's answer means (pure) ------------------------


def reach_targets(spec: DoctorSpec, role: str, values: Mapping[str, str]) -> tuple[ReachTarget, ...]:
    """The [[doctor.reach]] entries of `role`, each with its address from the env file; one
    that is empty, or neither an IP address nor a host name, is not tried (and fails).

    >>> from deployer.stacks import Reach
    >>> spec = DoctorSpec(reach=(Reach("app", "db_address", 5432), Reach("db", "app_address")))
    >>> reach_targets(spec, "app", {"db_address": "10.0.0.7"})
    (ReachTarget(name='reach db_address:5432', address='10.0.0.7', port=5432, problem=''),)
    >>> reach_targets(spec, "app", {"db_address": "-oProxyCommand=sh"})[0].problem
    'db_address in the env file is not an IP address or a host name; not tried'
    """
    found = []
    for reach in spec.reach:
        if reach.from_role != role:
            continue
        value = values.get(reach.to_variable, "").strip()
        problem = ""
        if not value:
            problem = f"{reach.to_variable} is empty in the env file; nothing to connect to"
        elif not validate.host_address(value):
            problem = (f"{reach.to_variable} in the env file is not an IP address or a host name;"
                       " not tried")
        found.append(ReachTarget(f"reach {reach.to_variable}:{reach.port}", value, reach.port,
                                 problem))
    return tuple(found)


def parse_facts(stdout: str) -> dict[str, str]:
    """The probe's key=value lines; anything else a login prints (a banner, a shell's chatter)
    is ignored, and the first value of a key wins.

    >>> parse_facts("Welcome!\\nsudo=root\\nos_id=debian\\nsudo=yes\\n")
    {'sudo': 'root', 'os_id': 'debian'}
    """
    facts: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and _FACT.fullmatch(key):
            facts.setdefault(key, value.strip())
    return facts


_FACT = re.compile(r"clock_start|clock_end|sudo|os_id|os_version|disk_kb|command:[A-Za-z0-9._+-]+"
                   r"|reach\.\d+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def clock_offset(sent: float, received: float, start: float, end: float) -> float:
    """How far the host's clock is ahead of ours (negative: behind), NTP's way: the host read
    its clock at `start` and `end` of a round trip that we sent at `sent` and got back at
    `received`; the network's delay is taken as the same both ways.

    >>> clock_offset(100.0, 100.2, 107.05, 107.15)  # 0.05 s each way, 0.1 s on the host
    7.0
    """
    return round(((start - sent) + (end - received)) / 2, 6)


def not_reached(where: str, spec: DoctorSpec, reach: tuple[ReachTarget, ...],
                why: str) -> list[Check]:
    """A host that could not be reached: that check fails, and the others were not run."""
    names = ["sudo", *(["os"] if spec.os else []), "disk", *(f"command {c}" for c in spec.commands),
             "clock", *(t.name for t in reach)]
    return [Check(where, "reachable", False, why),
            *(Check(where, name, None, "the host was not reached") for name in names)]


def host_checks(where: str, spec: DoctorSpec, reach: tuple[ReachTarget, ...],
                facts: Mapping[str, str], *, sent: float, received: float, user: str = "",
                missing: str = "") -> list[Check]:
    """What the probe's `facts` mean, check by check, in the order `not_reached` lists them.
    `missing` is added to the detail of a check the probe gave no answer for."""

    def absent(what: str) -> str:
        return f"the probe gave no {what}{missing}"

    checks = [_sudo(where, facts.get("sudo"), user, absent)]
    if spec.os:
        checks.append(_os(where, spec, facts, absent))
    checks.append(_disk(where, spec, facts.get("disk_kb"), absent))
    for name in spec.commands:
        found = facts.get(f"command:{name}")
        detail = ("installed" if found == "yes" else
                  f"{name} is not installed (not on the login's PATH)" if found == "no" else
                  absent(f"answer for {name}"))
        checks.append(Check(where, f"command {name}", found == "yes", detail))
    checks.append(_clock(where, spec, facts, sent, received, absent))
    tried = [t for t in reach if not t.problem]
    for target in reach:
        if target.problem:
            checks.append(Check(where, target.name, False, target.problem))
        else:
            answer = facts.get(f"reach.{tried.index(target)}")
            checks.append(_reach(where, target, answer, absent))
    return checks


def _sudo(where: str, answer: str | None, user: str, absent: Absent) -> Check:
    if answer is None:
        return Check(where, "sudo", False, absent("answer about sudo"))
    if answer == "root":
        return Check(where, "sudo", True, "root: no sudo needed")
    if answer == "yes":
        return Check(where, "sudo", True, "sudo -n true works")
    who = user or "the login user"
    if answer == "missing":
        return Check(where, "sudo", False, f"sudo is not installed, and {who} is not root")
    why = answer.removeprefix("no").strip() or "no reason given"
    return Check(where, "sudo", False, f"sudo -n true failed ({why}): {who} needs sudo without a"
                                       " password, or log in as root")


def _os(where: str, spec: DoctorSpec, facts: Mapping[str, str], absent: Absent) -> Check:
    os_id = facts.get("os_id", "").strip("\"'").lower()
    version = facts.get("os_version", "").strip("\"'").lower()
    if not os_id:
        return Check(where, "os", False, absent("ID from /etc/os-release"))
    got = f"{os_id} {version}".strip()
    for wanted in spec.os:
        parts = wanted.lower().split()
        if parts and parts[0] == os_id and (len(parts) == 1 or " ".join(parts[1:]) == version):
            return Check(where, "os", True, got)
    return Check(where, "os", False, f"{got}, not one of: {', '.join(spec.os)} (doctor.os)")


def _disk(where: str, spec: DoctorSpec, kb: str | None, absent: Absent) -> Check:
    if kb is None or not kb.isdigit():
        return Check(where, "disk", False, absent(f"free space for {spec.disk_path} (does it exist?)"))
    free = int(kb) // 1024
    if free < spec.min_free_mb:
        return Check(where, "disk", False, f"{free} MB free on {spec.disk_path}, under the"
                                            f" {spec.min_free_mb} MB needed (doctor.min_free_mb)")
    return Check(where, "disk", True, f"{free} MB free on {spec.disk_path} (needs {spec.min_free_mb} MB)")


def _clock(where: str, spec: DoctorSpec, facts: Mapping[str, str], sent: float, received: float,
           absent: Absent) -> Check:
    start = _NUMBER.match(facts.get("clock_start", ""))
    end = _NUMBER.match(facts.get("clock_end", ""))
    if not start or not end:
        return Check(where, "clock", False, absent("time (date +%s)"))
    offset = clock_offset(sent, received, float(start[0]), float(end[0]))
    said = f"{abs(offset):.1f}s {'ahead of' if offset >= 0 else 'behind'} this machine"
    if abs(offset) > spec.max_clock_skew:
        return Check(where, "clock", False, f"{said}, more than {spec.max_clock_skew:g}s"
                                             " (doctor.max_clock_skew); sync its clock (NTP)")
    return Check(where, "clock", True, f"{said} (max {spec.max_clock_skew:g}s)")


def _reach(where: str, target: ReachTarget, answer: str | None, absent: Absent) -> Check:
    to = f"{target.address}:{target.port}"
    if answer is None:
        return Check(where, target.name, False, absent(f"answer for {to}"))
    if answer in ("ok", "exit 0"):
        return Check(where, target.name, True, f"{to} connected")
    if answer == "untested":
        return Check(where, target.name, False, f"{to} not tried: the host has neither python3 nor"
                                                 " bash with timeout to try it")
    if answer == "exit 124":
        return Check(where, target.name, False, f"{to}: no connection within {REACH_TIMEOUT:g}s")
    if answer.startswith("exit "):
        return Check(where, target.name, False, f"{to}: cannot connect (bash /dev/tcp {answer})")
    return Check(where, target.name, False, f"{to}: {answer.removeprefix('error ').strip()}")
