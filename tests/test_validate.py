"""deployer/validate.py: every rule, with the exact text a user sees."""

from __future__ import annotations

import time

import pytest

from deployer import validate
from deployer.hosts.release import release_name as make_release_name

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(("value", "error"), [
    ("main", None),
    ("v1.2.3", None),
    ("feature/login-form", None),
    ("release_2026.11", None),
    ("héllo", None),  # git allows non-ASCII ref names
    (SHA, None),
    ("", "is empty"),
    ("-main", "must not start with '-'"),
    ("--upload-pack=touch /tmp/x", "must not start with '-'"),
    ("a b", "must not contain whitespace"),
    ("main\n", "must not contain whitespace"),
    ("a\tb", "must not contain whitespace"),
    ("a\x01b", "must not contain control characters"),
    ("a\x7fb", "must not contain control characters"),
    ("a~1", "must not contain '~'"),
    ("a^", "must not contain '^'"),
    ("a:b", "must not contain ':'"),
    ("a?", "must not contain '?'"),
    ("a*", "must not contain '*'"),
    ("a[1]", "must not contain '['"),
    ("a\\b", "must not contain '\\\\'"),
    ("a..b", "must not contain '..'"),
    ("a@{1}", "must not contain '@{'"),
    ("@", "must not be '@'"),
    ("/main", "must not start or end with '/' or contain '//'"),
    ("main/", "must not start or end with '/' or contain '//'"),
    ("a//b", "must not start or end with '/' or contain '//'"),
    ("main.", "must not end with '.'"),
    (".hidden", "no '/'-separated part may start with '.'"),
    ("a/.b", "no '/'-separated part may start with '.'"),
    ("main.lock", "no '/'-separated part may end with '.lock'"),
    ("a.lock/b", "no '/'-separated part may end with '.lock'"),
    ("$(touch_x)", None),  # a legal branch name: every builder quotes it, nothing evaluates it
])
def test_git_ref(value: str, error: str | None) -> None:
    assert validate.git_ref(value) == error


@pytest.mark.parametrize(("value", "error"), [
    ("https://github.com/org/app.git", None),
    ("https://user@git.example.com:8443/org/app.git", None),
    ("ssh://git@github.com/org/app.git", None),
    ("ssh://git@[2001:db8::1]:2222/org/app.git", None),
    ("git@github.com:org/app.git", None),
    ("deploy@[2001:db8::1]:app.git", None),
    ("file:///srv/git/app.git", None),
    ("", "is empty"),
    ("-uhttps://x", "must not start with '-'"),
    ("--upload-pack=touch /tmp/x", "must not start with '-'"),
    ("https://host/a b", "must not contain whitespace"),
    ("https://host/a\nb", "must not contain whitespace"),
    ("https://host/a\x00", "must not contain control characters"),
    ("ext::sh -c touch% /tmp/x", "must not contain whitespace"),
    ("ext::sh", "must not name a git transport helper (<transport>::<address>, e.g. ext:: or fd::)"),
    ("fd::17", "must not name a git transport helper (<transport>::<address>, e.g. ext:: or fd::)"),
    ("http://host/app.git", "must use https://, ssh:// or file:// (or user@host:path)"),
    ("git://host/app.git", "must use https://, ssh:// or file:// (or user@host:path)"),
    ("https:///app.git", "has no host after https://"),
    ("ssh://-oProxyCommand=touch%20x/app", "host and user must not start with '-'"),
    ("ssh://-u@host/app", "host and user must not start with '-'"),
    ("https://host:port/app", "port must be a number"),
    ("git@-oProxyCommand=x:app", "host and user must not start with '-'"),
    ("git@host:", "has no path after user@host:"),
    ("file://", "has no path after file://"),
    ("file://-x", "must not start with '-' after file://"),
    ("/srv/git/app.git", "must be an https://, ssh:// or file:// URL, or user@host:path"),
    ("host:app.git", "must be an https://, ssh:// or file:// URL, or user@host:path"),
])
def test_git_repo(value: str, error: str | None) -> None:
    assert validate.git_repo(value) == error


RELEASE_ERROR = "is not a release name (<17-digit UTC time>-<7-hex sha>, e.g. 20261118110640250-0123456)"


@pytest.mark.parametrize(("value", "error"), [
    ("20261118110640250-0123456", None),
    ("", RELEASE_ERROR),
    ("20261123062027-f237594", RELEASE_ERROR),  # seconds only: not what release.py makes
    ("20261118110640250-0123456/..", RELEASE_ERROR),
    ("../20261118110640250-0123456", RELEASE_ERROR),
    ("20261118110640250-ABCDEF0", RELEASE_ERROR),
    ("20261118110640250-0123456\n", RELEASE_ERROR),
    ("-20261118110640250-0123456", RELEASE_ERROR),
    ("20261118110640250-0123456;touch x", RELEASE_ERROR),
    ("current", RELEASE_ERROR),
])
def test_release_name(value: str, error: str | None) -> None:
    assert validate.release_name(value) == error


def test_every_generated_release_name_is_valid() -> None:
    for now in (0.0, 1795000000.25, time.time(), 4102444800.999):
        assert validate.release_name(make_release_name(SHA, now)) is None
