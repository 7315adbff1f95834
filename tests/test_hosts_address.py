"""Host addresses as operators write them: exact parses, exact errors, and nothing else raised."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployer.hosts.address import Host, parse_host, parse_host_list


@pytest.mark.parametrize(("text", "host"), [
    ("edge-1", Host("ec2-user", "edge-1", 22)),
    ("root@10.0.0.5:2222", Host("root", "10.0.0.5", 2222)),
    ("[fd00::5]", Host("ec2-user", "fd00::5", 22)),
    ("deploy@[fd00::5]:2200", Host("deploy", "fd00::5", 2200)),
    ("a.b-c@host.example.com", Host("a.b-c", "host.example.com", 22)),
])
def test_parses(text: str, host: Host) -> None:
    assert parse_host(text, default_user="ec2-user") == host


@pytest.mark.parametrize(("text", "error"), [
    ("user@", "'user@' is not user@host[:port]"),
    ("@host", "'@host' is not user@host[:port]"),
    ("h:99999", "'h:99999': port 99999 is out of range (1-65535)"),
    ("h:0", "'h:0': port 0 is out of range (1-65535)"),
    ("h:abc", "'h:abc' is not user@host[:port]"),
    ("fd00::5", "'fd00::5' is not user@host[:port] (put an IPv6 address in brackets: [fd00::5])"),
    ("-oProxyCommand=x@h", "'-oProxyCommand=x@h' is not user@host[:port]"),
    ("u@-h", "'u@-h' is not user@host[:port]"),
    ("u@h;id", "'u@h;id' is not user@host[:port]"),
])
def test_refuses(text: str, error: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_host(text, default_user="ec2-user")
    assert str(err.value) == error


def test_a_list_names_every_problem() -> None:
    hosts, problems = parse_host_list("a, b:2222 a x@ a:22", default_user="u")
    assert hosts == [Host("u", "a", 22), Host("u", "b", 2222)]
    assert problems == ["'a' is listed twice", "'x@' is not user@host[:port]", "'a:22' is listed twice"]
    assert parse_host_list(" , ,", default_user="u") == ([], ["lists no hosts (user@host[:port] ...)"])


def test_ipv6_hosts_print_in_brackets() -> None:
    assert str(Host("root", "fd00::5", 2222)) == "root@[fd00::5]:2222"
    assert str(Host("root", "10.0.0.5")) == "root@10.0.0.5"


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80))
def test_parse_host_raises_only_value_errors(text: str) -> None:
    try:
        host = parse_host(text, default_user="u")
    except ValueError as exc:
        assert "\n" not in str(exc)
    else:
        assert 0 < host.port < 65536 and not host.address.startswith("-")


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=120))
def test_parse_host_list_never_raises(text: str) -> None:
    hosts, problems = parse_host_list(text, default_user="u")
    assert hosts or problems
    assert len({(h.address, h.port) for h in hosts}) == len(hosts)
