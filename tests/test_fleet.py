"""Phases, roles and batches on real sshd hosts: the order phases run in, roles in parallel
within a phase, resuming after a failure, rolling batches with a canary and a failure budget.
The stacks are pure TOML (tests/data/tiers.toml, rolling.toml)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.hosts.fleet import batch_sizes
from deployer.stacks import Phase

from conftest import REPO, Project, result_of


@pytest.mark.parametrize(("count", "phase", "sizes"), [
    (6, Phase("p", (), batch="2"), [2, 2, 2]),
    (6, Phase("p", (), batch="2", canary=1), [1, 2, 2, 1]),
    (10, Phase("p", (), batch="25%"), [3, 3, 3, 1]),
    (3, Phase("p", (), batch="100%"), [3]),
    (5, Phase("p", ()), [5]),
    (1, Phase("p", (), canary=3), [1]),
    (0, Phase("p", (), batch="2", canary=1), []),
])
def test_batch_sizes(count: int, phase: Phase, sizes: list[int]) -> None:
    assert batch_sizes(count, phase) == sizes
    assert sum(sizes) == count


def stack_project(project: Project, stack: str, origin: str, key: Path, hosts: dict[str, list],
                  fail: list = ()) -> None:
    project.add_stack(stack)
    (project.path / "testdata").symlink_to(REPO / "tests" / "data")
    project.environ["DEPLOYER_SSH_KEY"] = str(key)
    lines = [f"{var}=\"{' '.join(f'root@{h.address}' for h in hs)}\"" for var, hs in hosts.items()]
    lines += [f"git_repo={origin}", "git_ref=main", f"fail_hosts=\"{' '.join(h.address for h in fail)}\""]
    project.write_env("stage", "\n".join(lines) + "\n")


def times(host) -> dict[str, tuple[float, float]]:
    seen: dict[str, list[float]] = {}
    for line in (host.home / "times").read_text().splitlines():
        role, _, stamp = line.split()
        seen.setdefault(role, []).append(float(stamp))
    return {role: (stamps[-2], stamps[-1]) for role, stamps in seen.items()}


def by_host(result: dict) -> dict[str, str]:
    return {h["host"]: h["status"] for h in result["fleet"]["hosts"]}


@pytest.mark.slow
def test_phases_in_order_roles_in_parallel_and_a_rerun_resumes(project: Project, ssh_hosts,
                                                                tier_origin, operator_key) -> None:
    jump, mq, keystone, frontend, backend = ssh_hosts(5)
    roles = {"jump_hosts": [jump], "mq_hosts": [mq], "keystone_hosts": [keystone],
             "frontend_hosts": [frontend], "backend_hosts": [backend]}
    stack_project(project, "tiers", tier_origin, operator_key, roles, fail=[backend])
    first = project.deploy("tiers", "stage", "--accept-new-host-keys", "--json")
    assert first.returncode == 1, first.stdout + first.stderr
    status = by_host(result_of(first))
    assert status == {f"root@{h.address}": "changed" for h in (jump, mq, keystone, frontend)} | {
        f"root@{backend.address}": "failed"}
    for phase in ("phase setup:", "phase data:", "phase services:"):
        assert phase in first.stderr
    assert "phase data: 2/2 hosts done, 0 failed, 0 waiting" in first.stderr
    assert "phase services: 2/2 hosts done, 1 failed, 0 waiting" in first.stderr
    (j,), (m,), (k,) = times(jump).values(), times(mq).values(), times(keystone).values()
    (f,) = times(frontend).values()
    assert j[1] < m[0] and j[1] < k[0]  # setup finished before data started
    assert m[0] < k[1] and k[0] < m[1]  # rabbitmq and keystone ran at the same time
    assert max(m[1], k[1]) < f[0]  # data finished before services started

    stack_project_env = project.path / "deployments" / "env-stage"
    stack_project_env.write_text(stack_project_env.read_text().replace(
        f'fail_hosts="{backend.address}"', 'fail_hosts=""'))
    again = project.deploy("tiers", "stage", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    status = by_host(result_of(again))
    # fail_hosts is rendered on every host, so the earlier phases see a config change; what
    # matters is that the release everywhere is one, and that the backend now passes.
    assert status[f"root@{backend.address}"] == "changed"
    third = project.deploy("tiers", "stage", "--json")
    assert set(by_host(result_of(third)).values()) == {"unchanged"}
    names = {(h.home / "tier" / "current").readlink() for h in (jump, mq, keystone, frontend, backend)}
    assert len(names) == 1, names


@pytest.mark.slow
@pytest.mark.parametrize(("failing", "expected"), [
    ([0], ["failed"] + ["skipped"] * 5),  # the canary fails: nothing else starts
    ([1, 2], ["changed", "failed", "failed", "skipped", "skipped", "skipped"]),  # 2/6 > 20%
    ([3], ["changed", "changed", "changed", "failed", "changed", "changed"]),  # 1/6 <= 20%
])
def test_rolling_batches_with_a_canary_and_a_failure_budget(
        project: Project, ssh_hosts, tier_origin, operator_key, failing: list[int],
        expected: list[str]) -> None:
    hosts = ssh_hosts(6)
    stack_project(project, "rolling", tier_origin, operator_key, {"web_hosts": hosts},
                  fail=[hosts[i] for i in failing])
    run = project.deploy("rolling", "stage", "--accept-new-host-keys", "--json")
    assert run.returncode == 1, run.stdout + run.stderr
    status = by_host(result_of(run))
    assert [status[f"root@{h.address}"] for h in hosts] == expected
    if "skipped" in expected:
        assert "phase web stopped after" in run.stderr
    for host, state in zip(hosts, expected, strict=True):
        assert (host.home / "times").exists() == (state != "skipped")


def test_graph_prints_phases_roles_and_hosts_as_mermaid(project: Project, tier_origin,
                                                        operator_key) -> None:
    class Host:  # the graph resolves hosts from the env file; nothing connects
        def __init__(self, address: str):
            self.address = address

    roles = {"jump_hosts": [Host("10.1.0.10")], "mq_hosts": [Host("10.1.128.5"), Host("10.1.192.5")],
             "keystone_hosts": [Host("10.1.128.6")], "frontend_hosts": [Host("10.1.128.7")],
             "backend_hosts": [Host("10.1.128.8")]}
    stack_project(project, "tiers", tier_origin, operator_key, roles)
    project.environ.pop("AWS_ENDPOINT_URL")  # private addresses: not the sandbox's business here
    done = project.deploy("graph", "tiers", "stage")
    assert done.returncode == 0, done.stderr
    assert done.stdout == """\
flowchart LR
  subgraph phase_1["1. setup"]
    role_jump["jump<br/>root@10.1.0.10"]
  end
  subgraph phase_2["2. data"]
    role_rabbitmq["rabbitmq<br/>root@10.1.128.5<br/>root@10.1.192.5"]
    role_keystone["keystone<br/>root@10.1.128.6"]
  end
  subgraph phase_3["3. services"]
    role_frontend["frontend<br/>root@10.1.128.7"]
    role_backend["backend<br/>root@10.1.128.8"]
  end
  phase_1 --> phase_2 --> phase_3
"""
    assert not (project.path / ".deployer" / "logs").exists()  # nothing ran
