"""One host's deploy as data: the names of the steps to run, in order, worked out from the app,
what the probe found on the host and what the host should have. Pure, no I/O: `deploy plan`
prints the list, the runner (`release.deploy_host`) executes it step by step, and
tests/test_hosts_planner.py asserts it exactly for every branch.

Step names:
- `break_lock` (the probe found a lock whose holder is gone), `lock`;
- `fetch` (a clone at the new commit) or `copy` (the current release, for a config-only
  change), `link_shared`, `upload`;
- `<point>:<name>` for the app's own steps (`before_deploy`, `build`, `migrate`,
  `before_switch`, `after_switch`), `install:<script>`, `health:before_switch`;
- `switch`, then `restart:<unit>` or `reload:<unit>` for each service, `health:after_switch`
  (an app with no service and nothing after the switch runs `health` before `switch`);
- `prune`, `audit`, `unlock`.

A deploy with nothing to change is `health` alone (or nothing), and when that check fails, its
`repair`: lock, the install and services again, `health`, audit, unlock.

After a failure, once the lock is held (`failure_tail`): `audit`, the app's `on_failure:<name>`
steps, `restore` (the previous release current again, reinstalled, its services restarted and
its checks run, all but the before_switch ones) when there is one and the failed step may have
touched what runs, and `unlock`. Ctrl-C runs the same tail without the `on_failure` steps. A
release directory that could not be built gets only `audit` and `unlock`.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployer.stacks import AppSpec, HealthCheck

NONE, CONFIG, COMMIT, ROLLBACK = "none", "config", "commit", "rollback"


@dataclass(frozen=True)
class Found:
    """What the probe found on the host."""

    current: str = ""  # the current release's name; "" before the first deploy
    fingerprint: str = ""  # the current release's
    sha: str = ""  # the current release's commit, from its manifest
    lock: str = ""  # who holds the deploy lock; "" when nobody does
    lock_stale: bool = False  # held by a process of this machine that no longer runs


@dataclass(frozen=True)
class HostPlan:
    change: str  # NONE, CONFIG, COMMIT or ROLLBACK
    steps: tuple[str, ...]
    previous: str = ""  # the release `restore` brings back after a failure
    # NONE only: what runs when the current release fails its health check (a repair)
    repair: tuple[str, ...] = ()


def plan_host(app: AppSpec, found: Found, *, fingerprint: str, sha: str, lead: bool = True,
              ) -> HostPlan:
    """The steps a deploy of commit `sha` (whose files and units hash to `fingerprint`) runs
    on a host where the probe found `found`. `lead`: this host runs the app's `once` steps.

    >>> plan_host(AppSpec("r", "f", "app"), Found("r1", "fp", "abc"), fingerprint="fp2", sha="abc").steps
    ('lock', 'copy', 'upload', 'install:install.sh', 'switch', 'prune', 'audit', 'unlock')
    """
    if found.current and found.fingerprint == fingerprint:
        health = ("health",) if app.health else ()
        services = tuple(f"{s.on_change}:{s.name}" for s in app.services)
        repair = ("lock", f"install:{app.install}", *services, "health", "audit", "unlock")
        return HostPlan(NONE, health, found.current, repair if app.health else ())
    change = CONFIG if found.current and found.sha == sha else COMMIT
    steps = ["break_lock"] if found.lock and found.lock_stale else []
    steps += ["lock", "copy" if change == CONFIG else "fetch"]
    steps += ["link_shared"] if app.shared_paths or app.shared_files else []
    steps += ["upload"]

    def named(point: str) -> list[str]:
        return [f"{point}:{s.name}" for s in app.steps_at(point) if lead or not s.once]

    steps += named("before_deploy") + [f"install:{app.install}"] + named("build") + named("migrate")
    steps += named("before_switch")
    steps += ["health:before_switch"] if _checks(app, "before_switch") else []
    if app.services or app.steps_at("after_switch") or _checks(app, "after_switch"):
        steps += ["switch"] + [f"{s.on_change}:{s.name}" for s in app.services]
        steps += named("after_switch")
        steps += ["health:after_switch"] if _checks(app, "", "after_switch") else []
    else:  # nothing runs from `current`: checks without an `at` test the release, then it goes live
        steps += ["health"] if _checks(app, "") else []
        steps += ["switch"]
    return HostPlan(change, (*steps, "prune", "audit", "unlock"), found.current)


def plan_rollback(app: AppSpec, current: str) -> HostPlan:
    """`deploy rollback` from release `current`, built from the same steps: the lock, the
    switch to the target, its install script and services again (they run from `current`),
    every health check, audit, unlock. When the checks fail, `restore` switches back to
    `current` (see `failure_tail`).

    >>> plan_rollback(AppSpec("r", "f", "app"), "r2").steps
    ('lock', 'switch', 'install:install.sh', 'audit', 'unlock')
    """
    services = tuple(f"{s.on_change}:{s.name}" for s in app.services)
    checks = ("health",) if app.health else ()
    return HostPlan(ROLLBACK, ("lock", "switch", f"install:{app.install}", *services, *checks,
                               "audit", "unlock"), current)


def _checks(app: AppSpec, *points: str) -> bool:
    return any(c.at in points for c in app.health)


def checks_of(app: AppSpec, step: str) -> tuple[HealthCheck, ...]:
    """The checks a `health…` step runs: `health:before_switch` those at before_switch,
    `health:after_switch` those at after_switch or without an `at`, `health` those without."""
    points = {"health:before_switch": ("before_switch",), "health:after_switch": ("", "after_switch")}
    return tuple(c for c in app.health if c.at in points.get(step, ("",)))


_STAGING = ("fetch", "copy", "link_shared", "upload")  # building the release directory


def failure_tail(app: AppSpec, plan: HostPlan, failed: str, *, cancelled: bool = False,
                 ) -> tuple[str, ...]:
    """What runs after step `failed` failed (or, `cancelled`, after Ctrl-C stopped it): nothing
    when the lock was never taken; audit and unlock when the release directory could not be
    built; else audit, the app's on_failure steps (not on Ctrl-C), restore (unless only
    `before_deploy` steps ran, which leave what runs alone) when there is a release to go back
    to, and unlock.

    >>> app = AppSpec("r", "f", "app")
    >>> failure_tail(app, HostPlan(COMMIT, (), "r0"), "install:install.sh")
    ('audit', 'restore', 'unlock')
    >>> failure_tail(app, HostPlan(COMMIT, (), "r0"), "lock")
    ()
    """
    if failed in ("break_lock", "lock"):
        return ()
    if plan.change == ROLLBACK:
        return (*(("restore",) if plan.previous else ()), "audit", "unlock")
    if failed in _STAGING:  # no release directory to run the app's steps in
        return ("audit", "unlock")
    tail = ["audit"]
    tail += [] if cancelled else [f"on_failure:{s.name}" for s in app.steps_at("on_failure")]
    touched = failed.split(":", 1)[0] not in ("before_deploy",)
    tail += ["restore"] if touched and plan.previous else []
    return (*tail, "unlock")


def run_order(app: AppSpec, plan: HostPlan, *, fails: str = "", cancelled: str = "",
              ) -> tuple[str, ...]:
    """Every step a run of `plan` takes, in order, when step `fails` fails, or Ctrl-C comes
    during step `cancelled` ("" for neither): the plan up to that step, then its failure tail.
    A NONE plan whose health check fails runs its repair."""
    stop = fails or cancelled
    if plan.change == NONE:
        return plan.steps + (plan.repair if stop == "health" else ())
    if not stop:
        return plan.steps
    if stop not in plan.steps:
        raise ValueError(f"{stop!r} is not a step of this plan: {', '.join(plan.steps)}")
    done = plan.steps[:plan.steps.index(stop) + 1]
    return done + failure_tail(app, plan, stop, cancelled=bool(cancelled))
