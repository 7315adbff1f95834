"""Pure parts of one host's deploy (deployer/hosts/release.py): exact expectations, no SSH.
The steps themselves run against real sshd hosts in tests/test_hosts.py."""

from __future__ import annotations

import pytest

from deployer.errors import HostError
from deployer.hosts.address import Host
from deployer.hosts.release import Pin, exec_argv, release_name, releases_to_prune, resolve_sha, trips

SHA_A, SHA_B = "a" * 40, "b" * 40
HOST = Host("root", "127.0.0.1")


def test_resolve_sha_from_the_probe() -> None:
    assert resolve_sha(HOST, "r", SHA_B, {}) == SHA_B  # a full sha needs no lookup
    assert resolve_sha(HOST, "r", "main", {"refs_exit": "0", "refs": f"{SHA_A} refs/heads/main;"}) == SHA_A
    annotated = {"refs_exit": "0", "refs": f"{SHA_A} refs/tags/v1;{SHA_B} refs/tags/v1^{{}};"}
    assert resolve_sha(HOST, "r", "v1", annotated) == SHA_B  # the commit, not the tag object
    noisy = {"refs_exit": "0", "refs": f"warning: redirecting;{SHA_A} refs/heads/main;"}
    assert resolve_sha(HOST, "r", "main", noisy) == SHA_A
    with pytest.raises(HostError, match="git ref 'nope' is not in r"):
        resolve_sha(HOST, "r", "nope", {"refs_exit": "0", "refs": ""})
    with pytest.raises(HostError, match=r"git ls-remote r failed \(exit 128\): fatal: no repo"):
        resolve_sha(HOST, "r", "main", {"refs_exit": "128", "refs": "fatal: no repo;"})


def test_doomed_releases() -> None:
    listing = "r1 ok\nr2 failed\nr3 ok\nr4 ok\nr5 ok"
    assert releases_to_prune(listing, 2, "r5") == ["r1", "r3", "r2"]  # failed ones never count toward N
    assert releases_to_prune(listing, 5, "r5") == ["r2"]
    assert releases_to_prune("r1 ok\nr2 failed", 1, "r2") == []  # current is never removed
    assert releases_to_prune("", 5, "r1") == []


def test_release_names_sort_by_age_to_the_millisecond() -> None:
    first, second = release_name(SHA_A, 1795000000.001), release_name(SHA_A, 1795000000.002)
    assert first.endswith("001-aaaaaaa") and first < second
    assert release_name(SHA_A, 1795000000.999) < release_name(SHA_A, 1795000001.0)


def test_the_first_resolved_commit_is_the_fleets() -> None:
    pin = Pin()
    assert pin.sha == ""
    assert pin.fix(SHA_A) == SHA_A
    assert pin.fix(SHA_B) == SHA_A  # a later host that saw the branch move stays with the fleet
    assert pin.sha == SHA_A


@pytest.mark.parametrize(("exec_start", "argv"), [
    ("/usr/bin/env python3 edge_server/server.py", ["/usr/bin/env", "python3", "edge_server/server.py"]),
    ("/usr/bin/python3 'my app.py' --name \"a b\"", ["/usr/bin/python3", "my app.py", "--name", "a b"]),
    ("%h/bin/app --data=%h/data", ["/home/u/bin/app", "--data=/home/u/data"]),
    ("/bin/app $(touch x)", "uses $VARIABLE expansion"),
    ("/bin/app ${PORT}", "uses $VARIABLE expansion"),
    ("/bin/a ; /bin/b", "runs several commands (';')"),
    ("-/bin/app", "starts with the systemd prefix '-'"),
    ("@/bin/app app", "starts with the systemd prefix '@'"),
    ("/bin/app 'open", "cannot be split (No closing quotation)"),
    ("", "is empty"),
])
def test_exec_start_as_argv_for_the_nohup_fallback(exec_start: str, argv: list[str] | str) -> None:
    assert exec_argv(exec_start, "/home/u") == argv


def test_a_plan_runs_as_the_fewest_round_trips_that_keep_every_answer() -> None:
    steps = ("break_lock", "lock", "copy", "link_shared", "upload", "before_deploy:backup",
             "install:install.sh", "migrate:migrate", "health:before_switch", "switch",
             "restart:chom-app", "reload:nginx", "after_switch:warm", "health:after_switch",
             "prune", "audit", "unlock")
    assert trips(steps) == [
        ("break_lock",), ("lock", "copy", "link_shared"), ("upload",), ("before_deploy:backup",),
        ("install:install.sh",), ("migrate:migrate",), ("health:before_switch",),
        ("switch", "restart:chom-app", "reload:nginx"), ("after_switch:warm",),
        ("health:after_switch",), ("prune", "audit", "unlock")]
