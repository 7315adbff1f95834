"""Host addresses as the operator writes them (`user@host[:port]`), parsed before anything runs.

Light on purpose (no SSH library): config validation parses every host list and gateway here,
before the engine starts and before any connection is made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from deployer.errors import ConfigError

_HOST = re.compile(r"^(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?"
                   r"(?P<address>[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9a-fA-F:.]+\])"
                   r"(?::(?P<port>\d{1,5}))?$")
# What separates the entries of a host list in an env file.
_SEPARATORS = re.compile(r"[\s,]+")


@dataclass(frozen=True)
class Host:
    user: str
    address: str
    port: int = 22

    def __str__(self) -> str:
        shown = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.user}@{shown}" + (f":{self.port}" if self.port != 22 else "")


def parse_host(text: str, *, default_user: str, default_port: int = 22) -> Host:
    """`ec2-user@10.0.0.5:2222` → Host. Raises ValueError for anything else; an IPv6 address
    goes in brackets (`[fd00::5]:22`).

    >>> parse_host("edge-1", default_user="ec2-user")
    Host(user='ec2-user', address='edge-1', port=22)
    >>> parse_host("root@[fd00::5]:2222", default_user="ec2-user")
    Host(user='root', address='fd00::5', port=2222)
    """
    match = _HOST.match(text.strip())
    if not match:
        hint = " (put an IPv6 address in brackets: [fd00::5])" if text.count(":") > 1 else ""
        raise ValueError(f"{_shown(text)} is not user@host[:port]{hint}")
    port = int(match["port"] or default_port)
    if not 0 < port < 65536:
        raise ValueError(f"{_shown(text)}: port {port} is out of range (1-65535)")
    return Host(match["user"] or default_user, match["address"].strip("[]"), port)


def parse_host_list(raw: str, *, default_user: str, default_port: int = 22,
                    ) -> tuple[list[Host], list[str]]:
    """Every entry of a space- or comma-separated list, and what is wrong with the others (a
    malformed entry, the same host twice, no entry at all).

    >>> parse_host_list("a, b:2222 a", default_user="u")[1]
    ["'a' is listed twice"]
    """
    hosts: list[Host] = []
    problems: list[str] = []
    for entry in (e for e in _SEPARATORS.split(raw) if e):
        try:
            host = parse_host(entry, default_user=default_user, default_port=default_port)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if any((h.address, h.port) == (host.address, host.port) for h in hosts):
            problems.append(f"{_shown(entry)} is listed twice")
        else:
            hosts.append(host)
    if not hosts and not problems:
        problems.append("lists no hosts (user@host[:port] ...)")
    return hosts, problems


def _shown(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def gateway_for(text: str, *, default_user: str, where: str) -> Host | None:
    """The jump host an env value or output names, or None when it names none."""
    if not text:
        return None
    try:
        return parse_host(text, default_user=default_user)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
