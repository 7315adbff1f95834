"""Pure host builders and parsers: exact strings, no SSH."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.config import EnvConfig
from deployer.errors import ConfigError
from deployer.hosts import commands as cmd
from deployer.hosts.connection import Host, parse_host
from deployer.hosts.fleet import resolve_hosts
from deployer.hosts.release import parse_kv
from deployer.stacks import HostsSpec, Stack


@pytest.mark.parametrize(("text", "host"), [
    ("edge-1", Host("ec2-user", "edge-1", 22)),
    ("root@127.0.10.1", Host("root", "127.0.10.1", 22)),
    ("ops@10.0.0.5:2222", Host("ops", "10.0.0.5", 2222)),
    ("ops@[2001:db8::1]:2200", Host("ops", "2001:db8::1", 2200)),
])
def test_parse_host(text: str, host: Host) -> None:
    assert parse_host(text, default_user="ec2-user") == host


@pytest.mark.parametrize("text", ["", "a b", "user@", "host:99999", "user@host:port"])
def test_parse_host_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_host(text, default_user="u")


def test_host_str() -> None:
    assert str(Host("root", "127.0.0.2")) == "root@127.0.0.2"
    assert str(Host("root", "h", 2222)) == "root@h:2222"


def env(values: dict[str, str]) -> EnvConfig:
    return EnvConfig("stage", Path("deployments/env-stage"), values, frozenset())


EDGE = Stack("edge", Path("edge.toml"), hosts=HostsSpec(source="env", variable="edge_hosts", user="ec2-user"))
DASH = Stack("dashboard", Path("dashboard.toml"),
             hosts=HostsSpec(source="terraform", output="host_address", user_output="ssh_user"))


def test_hosts_from_the_env_file() -> None:
    hosts = resolve_hosts(EDGE, env({"edge_hosts": "a, root@b:2200\n  c"}), {})
    assert [str(h) for h in hosts] == ["ec2-user@a", "root@b:2200", "ec2-user@c"]


def test_bad_host_entries_are_all_named() -> None:
    with pytest.raises(ConfigError) as err:
        resolve_hosts(EDGE, env({"edge_hosts": "ok x@ y:0"}), {})
    assert err.value.problems == (
        "deployments/env-stage: edge_hosts: 'x@' is not user@host[:port]",
        "deployments/env-stage: edge_hosts: 'y:0': port 0 is out of range",
    )


def test_hosts_from_terraform_outputs() -> None:
    hosts = resolve_hosts(DASH, env({}), {"host_address": "127.1.2.3", "ssh_user": "ec2-user"})
    assert hosts == [Host("ec2-user", "127.1.2.3", 22)]
    with pytest.raises(ConfigError, match="output 'host_address' is empty; apply the stack first"):
        resolve_hosts(DASH, env({}), {})


def test_builders() -> None:
    assert cmd.ready_check(".setup_complete") == 'test -f "$HOME"/.setup_complete'
    assert cmd.acquire_lock("/h/app", "me pid=1") == (
        "mkdir -p /h/app && if mkdir /h/app/.deploy-lock 2>/dev/null; then printf '%s\\n' "
        "'me pid=1' > /h/app/.deploy-lock/info; else cat /h/app/.deploy-lock/info 2>/dev/null"
        " || echo unknown; exit 3; fi")
    assert cmd.switch_current("/h/app", "20260101-abc") == (
        "ln -sfn releases/20260101-abc /h/app/.current.tmp && mv -T /h/app/.current.tmp /h/app/current")
    assert cmd.run_script("/h/r", "install.sh", {"B": "2", "A": "x y"}) == (
        "cd /h/r && chmod +x install.sh && env A='x y' B=2 ./install.sh")
    assert cmd.remove_releases("/h/app", []) == "true"
    assert cmd.remove_releases("/h/app", ["a", "b"]) == "rm -rf /h/app/releases/a /h/app/releases/b"
    assert cmd.health_url("http://127.0.0.1:8080/health").startswith(
        "if command -v curl >/dev/null; then curl -fsS -m 5 -o /dev/null http://127.0.0.1:8080/health;")


def test_paths_are_quoted() -> None:
    assert cmd.release_lock("/h/my app; rm -rf /") == "rm -rf '/h/my app; rm -rf /'/.deploy-lock"


def test_parse_kv() -> None:
    assert parse_kv("state=present\ncurrent=releases/x\nlock=\n") == {
        "state": "present", "current": "releases/x", "lock": ""}


def test_begin_release_takes_the_lock_lists_then_stages() -> None:
    assert cmd.begin_release("/h/app", "me", ["git clone x", "mkdir -p y"]) == (
        f"{cmd.acquire_lock('/h/app', 'me')} && ( {cmd.list_releases('/h/app')} )"
        " && { ( { git clone x; } && { mkdir -p y; } ) || exit 4; }")

