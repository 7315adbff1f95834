"""Stack files: the shipped stacks load, and every mistake in a stack file is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.errors import ConfigError
from deployer.stacks import load_stack, parse_stack, stack_names

REPO = Path(__file__).resolve().parent.parent


def test_shipped_stacks_load() -> None:
    assert stack_names(REPO) == ["dashboard", "edge", "shared"]
    dashboard = load_stack(REPO, "dashboard")
    assert dashboard.terraform is not None and dashboard.terraform.root == "terraform/dashboard"
    assert dashboard.hosts is not None and dashboard.hosts.source == "terraform"
    edge = load_stack(REPO, "edge")
    assert edge.terraform is None
    assert edge.hosts is not None and edge.hosts.source == "env"
    for name in stack_names(REPO):
        stack = load_stack(REPO, name)
        if stack.terraform:
            assert (REPO / stack.terraform.root).is_dir(), stack.terraform.root


def test_unknown_stack_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown stack 'web' .*; stacks: dashboard, edge, shared"):
        load_stack(REPO, "web")


def test_every_problem_in_a_stack_file_is_named() -> None:
    data = {
        "terrafrom": {},
        "variables": {"required": ["a"], "secrets": ["b"]},
        "hosts": {"source": "dns"},
        "app": {"repo_variable": "repo", "ref_variable": "a", "root": "app",
                "health": [{"name": "h"}], "keep_releases": 0},
    }
    with pytest.raises(ConfigError) as err:
        parse_stack("x", Path("x.toml"), data)
    assert err.value.problems == (
        "x.toml: unknown key 'terrafrom'",
        "x.toml: hosts.source must be 'terraform' or 'env', not 'dns'",
        "x.toml: app.health[0] needs exactly one of 'command' or 'url'",
        "x.toml: app.keep_releases must be at least 1",
        "x.toml: variables.secrets names 'b', which is neither required nor optional",
        "x.toml: app.repo_variable names 'repo', which is not declared in [variables]",
    )
