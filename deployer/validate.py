"""Pure validators for values that reach a host's command line: each returns an error text
(what is wrong, without repeating the value) or None when the value is fine.

Config validation calls them to refuse a bad env file before anything runs; the host builders
quote every value anyway, so these are the second wall, not the only one.

>>> git_ref("main") is None
True
>>> git_ref("--upload-pack=touch")
"must not start with '-'"
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

_SHA = re.compile(r"[0-9a-f]{40}")
# git check-ref-format: characters no ref name may contain (besides control characters).
_REF_FORBIDDEN = ("~", "^", ":", "?", "*", "[", "\\")
# `<transport>::<address>` makes git run git-remote-<transport>; `ext::` runs any command.
_TRANSPORT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*::")
_URL = re.compile(r"(?P<scheme>https|ssh)://(?:(?P<user>[^@/]*)@)?(?P<host>\[[^\]/]*\]|[^/:\[\]]*)"
                  r"(?::(?P<port>[^/]*))?(?P<path>/.*)?")
_SCP = re.compile(r"(?P<user>[^@/:]+)@(?P<host>\[[^\]/]+\]|[^/:\[\]]+):(?P<path>.*)")
_RELEASE = re.compile(r"[0-9]{17}-[0-9a-f]{7}")


def _bad_char(value: str) -> str | None:
    for ch in value:
        if ch.isspace():
            return "must not contain whitespace"
        if unicodedata.category(ch) == "Cc":
            return "must not contain control characters"
    return None


def git_ref(value: str) -> str | None:
    """A branch or tag name by `git check-ref-format --allow-onelevel` rules (and never an
    option), or a full 40-hex commit sha."""
    if not value:
        return "is empty"
    if _SHA.fullmatch(value):
        return None
    if value.startswith("-"):
        return "must not start with '-'"
    if bad := _bad_char(value):
        return bad
    for ch in _REF_FORBIDDEN:
        if ch in value:
            return f"must not contain {ch!r}"
    if ".." in value:
        return "must not contain '..'"
    if "@{" in value:
        return "must not contain '@{'"
    if value == "@":
        return "must not be '@'"
    if value.startswith("/") or value.endswith("/") or "//" in value:
        return "must not start or end with '/' or contain '//'"
    if value.endswith("."):
        return "must not end with '.'"
    for part in value.split("/"):
        if part.startswith("."):
            return "no '/'-separated part may start with '.'"
        if part.endswith(".lock"):
            return "no '/'-separated part may end with '.lock'"
    return None


def git_repo(value: str) -> str | None:
    """A repository URL git may fetch from: https://, ssh://, file:// or scp-like
    user@host:path. Never an option, never a remote helper (`ext::`, `fd::`)."""
    if not value:
        return "is empty"
    if value.startswith("-"):
        return "must not start with '-'"
    if bad := _bad_char(value):
        return bad
    if _TRANSPORT.match(value):
        return "must not name a git transport helper (<transport>::<address>, e.g. ext:: or fd::)"
    if value.startswith("file://"):
        rest = value.removeprefix("file://")
        if not rest:
            return "has no path after file://"
        return "must not start with '-' after file://" if rest.startswith("-") else None
    if url := _URL.fullmatch(value):
        host = url["host"]
        if not host:
            return f"has no host after {url['scheme']}://"
        if host.startswith("-") or (url["user"] or "").startswith("-"):
            return "host and user must not start with '-'"
        if url["port"] is not None and not url["port"].isdigit():
            return "port must be a number"
        return None
    if "://" in value:
        return "must use https://, ssh:// or file:// (or user@host:path)"
    if scp := _SCP.fullmatch(value):
        if scp["host"].startswith("-") or scp["user"].startswith("-"):
            return "host and user must not start with '-'"
        if not scp["path"]:
            return "has no path after user@host:"
        return None
    return "must be an https://, ssh:// or file:// URL, or user@host:path"


def release_name(value: str) -> str | None:
    """A release directory name as deployer/hosts/release.py makes them:
    `<UTC time to the millisecond, 17 digits>-<7-hex short sha>`."""
    if not _RELEASE.fullmatch(value):
        return "is not a release name (<17-digit UTC time>-<7-hex sha>, e.g. 20261118110640250-0123456)"
    return None


_LABEL = r"[A-Za-z0-9][A-Za-z0-9-]{0,62}"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?")


def host_address(value: str) -> bool:
    """An IP address or a DNS name: something a host may be asked to connect to, never an
    option (no leading '-') or anything a shell reads.

    >>> host_address("10.20.251.1"), host_address("mentat.example.com"), host_address("-oProxy=x")
    (True, True, False)
    """
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return bool(_HOST_NAME.fullmatch(value))
