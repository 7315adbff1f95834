"""The host planner (deployer/hosts/planner.py): the exact steps for every branch of a deploy,
no SSH. That the runner takes exactly these steps on a real host is tested in
tests/test_hosts.py (the lifecycle stack's steps log)."""

from __future__ import annotations

import pytest

from deployer.hosts.planner import (
    COMMIT,
    CONFIG,
    NONE,
    Found,
    HostPlan,
    failure_tail,
    plan_host,
    plan_rollback,
    run_order,
)
from deployer.stacks import AppSpec, HealthCheck, ServiceSpec, Step

SHA, OTHER = "a" * 40, "b" * 40
# CHOM's release flow: every lifecycle point, a shared dir and file, checks on both sides of the
# switch, the app's own unit restarted and the host's nginx reloaded.
CHOM = AppSpec(
    "repo", "ref", "/var/www/chom", shared_paths=("storage",), shared_files=(".env",),
    steps=(Step("backup", "before_deploy", "b"), Step("build", "build", "c"),
           Step("migrate", "migrate", "m", once=True), Step("optimize", "before_switch", "o"),
           Step("warm", "after_switch", "w"), Step("notify", "on_failure", "n", local=True),
           Step("restore database", "on_failure", "r")),
    health=(HealthCheck("built", command="test -f x", at="before_switch"),
            HealthCheck("app", url="http://127.0.0.1/health", at="after_switch")),
    services=(ServiceSpec("chom-app", "u.j2"), ServiceSpec("nginx", on_change="reload")))
PLAIN = AppSpec("repo", "ref", "app", health=(HealthCheck("up", url="http://127.0.0.1/h"),))
LIVE = Found("r1", "fp1", SHA)  # a host on release r1 of commit SHA

FULL = ("lock", "fetch", "link_shared", "upload", "before_deploy:backup", "install:install.sh",
        "build:build", "migrate:migrate", "before_switch:optimize", "health:before_switch", "switch",
        "restart:chom-app", "reload:nginx", "after_switch:warm", "health:after_switch", "prune",
        "audit", "unlock")


def test_first_deploy_clones_and_runs_every_step() -> None:
    plan = plan_host(CHOM, Found(), fingerprint="fp2", sha=SHA)
    assert (plan.change, plan.steps, plan.previous) == (COMMIT, FULL, "")
    assert run_order(CHOM, plan) == FULL


def test_a_new_commit_on_a_host_with_a_release() -> None:
    plan = plan_host(CHOM, LIVE, fingerprint="fp2", sha=OTHER)
    assert (plan.change, plan.steps, plan.previous) == (COMMIT, FULL, "r1")


def test_unchanged_runs_the_checks_and_repairs_when_they_fail() -> None:
    plan = plan_host(CHOM, LIVE, fingerprint="fp1", sha=SHA)
    assert (plan.change, plan.steps) == (NONE, ("health",))
    assert run_order(CHOM, plan, fails="health") == (
        "health", "lock", "install:install.sh", "restart:chom-app", "reload:nginx", "health",
        "audit", "unlock")
    bare = AppSpec("repo", "ref", "app")
    assert plan_host(bare, LIVE, fingerprint="fp1", sha=SHA) == HostPlan(NONE, (), "r1", ())


def test_config_only_copies_the_current_release() -> None:
    plan = plan_host(PLAIN, LIVE, fingerprint="fp2", sha=SHA)
    assert (plan.change, plan.steps) == (CONFIG, (
        "lock", "copy", "upload", "install:install.sh", "health", "switch", "prune", "audit", "unlock"))


def test_a_lock_held_stops_before_anything_changes() -> None:
    plan = plan_host(PLAIN, Found("r1", "fp1", SHA, lock="ci@runner pid=7"), fingerprint="fp2", sha=SHA)
    assert plan.steps[0] == "lock" and run_order(PLAIN, plan, fails="lock") == ("lock",)


def test_a_stale_lock_is_broken_first() -> None:
    found = Found("r1", "fp1", SHA, lock="me@here pid=99999", lock_stale=True)
    plan = plan_host(PLAIN, found, fingerprint="fp2", sha=SHA)
    assert plan.steps[:3] == ("break_lock", "lock", "copy")


def test_install_fails_runs_on_failure_steps_then_restores() -> None:
    plan = plan_host(CHOM, LIVE, fingerprint="fp2", sha=OTHER)
    assert run_order(CHOM, plan, fails="install:install.sh") == (
        "lock", "fetch", "link_shared", "upload", "before_deploy:backup", "install:install.sh",
        "audit", "on_failure:notify", "on_failure:restore database", "restore", "unlock")


@pytest.mark.parametrize("check", ["health:before_switch", "health:after_switch"])
def test_a_failed_check_before_or_after_the_switch_restores(check: str) -> None:
    plan = plan_host(CHOM, LIVE, fingerprint="fp2", sha=OTHER)
    ran = run_order(CHOM, plan, fails=check)
    assert ran == FULL[:FULL.index(check) + 1] + (
        "audit", "on_failure:notify", "on_failure:restore database", "restore", "unlock")


def test_a_failure_with_no_release_before_has_nothing_to_restore() -> None:
    plan = plan_host(CHOM, Found(), fingerprint="fp2", sha=SHA)
    assert run_order(CHOM, plan, fails="health:after_switch")[-4:] == (
        "audit", "on_failure:notify", "on_failure:restore database", "unlock")


def test_a_failed_backup_or_clone_leaves_what_runs_alone() -> None:
    plan = plan_host(CHOM, LIVE, fingerprint="fp2", sha=OTHER)
    assert run_order(CHOM, plan, fails="before_deploy:backup")[-5:] == (
        "before_deploy:backup", "audit", "on_failure:notify", "on_failure:restore database", "unlock")
    assert run_order(CHOM, plan, fails="fetch") == ("lock", "fetch", "audit", "unlock")


def test_cancelled_skips_on_failure_steps_and_restores_once_the_install_ran() -> None:
    plan = plan_host(CHOM, LIVE, fingerprint="fp2", sha=OTHER)
    assert run_order(CHOM, plan, cancelled="install:install.sh") == (
        *FULL[:FULL.index("install:install.sh") + 1], "audit", "restore", "unlock")
    assert run_order(CHOM, plan, cancelled="upload") == (
        "lock", "fetch", "link_shared", "upload", "audit", "unlock")
    assert failure_tail(CHOM, plan, "lock", cancelled=True) == ()


def test_once_steps_run_on_the_lead_host_only() -> None:
    follower = plan_host(CHOM, LIVE, fingerprint="fp2", sha=OTHER, lead=False)
    assert follower.steps == tuple(s for s in FULL if s != "migrate:migrate")


def test_a_step_not_in_the_plan_is_refused() -> None:
    with pytest.raises(ValueError, match="'deploy' is not a step of this plan"):
        run_order(PLAIN, plan_host(PLAIN, LIVE, fingerprint="fp2", sha=SHA), fails="deploy")


def test_rollback_is_built_from_the_same_steps_and_switches_back_when_unhealthy() -> None:
    plan = plan_rollback(CHOM, "r2")
    assert plan.steps == ("lock", "switch", "install:install.sh", "restart:chom-app", "reload:nginx",
                          "health", "audit", "unlock")
    assert run_order(CHOM, plan, fails="health") == (*plan.steps[:6], "restore", "audit", "unlock")
    assert failure_tail(CHOM, plan_rollback(CHOM, ""), "health") == ("audit", "unlock")
