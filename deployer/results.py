"""Results are data: small frozen dataclasses that steps return and only the CLI renders.

Statuses: `changed`, `unchanged`, `repaired`, `failed`, `skipped`. Every result says why in
`reason`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

CHANGED = "changed"
UNCHANGED = "unchanged"
FAILED = "failed"
REPAIRED = "repaired"  # nothing to deploy, but what ran was unhealthy and was restarted
PLANNED = "planned"  # `plan`: what a deploy would change on a host (nothing was changed)
SKIPPED = "skipped"
MISSING = "missing"  # a check found nothing there yet
OK = "ok"  # a check passed

# How the core reports progress without printing: the CLI passes a thread-safe callable.
Progress = Callable[[str], None]


def no_progress(_line: str) -> None:
    return None


@dataclass(frozen=True)
class StepResult:
    """One idempotent step: `ensure_versioning` → changed / unchanged: already enabled."""

    name: str
    status: str
    reason: str = ""


@dataclass(frozen=True)
class ResourceChange:
    address: str
    type: str
    action: str  # create | update | delete | replace


@dataclass(frozen=True)
class PlanSummary:
    changes: tuple[ResourceChange, ...]
    outputs_changed: bool = False

    @property
    def has_changes(self) -> bool:
        return bool(self.changes) or self.outputs_changed

    @property
    def counts(self) -> dict[str, int]:
        """Terraform's own arithmetic: a replacement is one add and one destroy."""
        c = Counter(ch.action for ch in self.changes)
        return {
            "add": c["create"] + c["replace"],
            "change": c["update"],
            "destroy": c["delete"] + c["replace"],
        }

    def by_type(self) -> dict[str, dict[str, int]]:
        """{"aws_instance": {"create": 1}, ...}, sorted by type."""
        out: dict[str, Counter[str]] = {}
        for ch in self.changes:
            out.setdefault(ch.type, Counter())[ch.action] += 1
        return {t: dict(sorted(c.items())) for t, c in sorted(out.items())}

    def destructive(self, types: tuple[str, ...]) -> tuple[ResourceChange, ...]:
        """Changes that would replace or destroy a resource of one of `types`."""
        return tuple(ch for ch in self.changes
                     if ch.type in types and ch.action in ("replace", "delete"))


@dataclass(frozen=True)
class EngineResult:
    engine: str  # "embedded 1.15.5"
    action: str  # plan | apply | destroy
    plan: PlanSummary
    applied: bool
    reason: str  # why apply ran or was skipped
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return CHANGED if self.applied else UNCHANGED


@dataclass(frozen=True)
class HostResult:
    """One host's deploy: what happened, on which release, and why."""

    host: str  # user@address[:port]
    status: str
    reason: str = ""
    release: str = ""
    fingerprint: str = ""
    steps: tuple[StepResult, ...] = ()
    locked: bool = False  # failed because another deploy holds the host's lock (exit 3)


@dataclass(frozen=True)
class FleetResult:
    hosts: tuple[HostResult, ...]

    @property
    def failed(self) -> tuple[HostResult, ...]:
        return tuple(h for h in self.hosts if h.status == FAILED)

    @property
    def changed(self) -> bool:
        return any(h.status in (CHANGED, REPAIRED) for h in self.hosts)

    @property
    def locked(self) -> tuple[HostResult, ...]:
        return tuple(h for h in self.hosts if h.locked)


@dataclass(frozen=True)
class RunResult:
    """One `deploy STACK ENV ACTION`: the engine phase, then the host phase."""

    stack: str
    env: str
    action: str
    engine: EngineResult | None = None
    fleet: FleetResult | None = None
    log_path: str = ""
    notes: tuple[str, ...] = ()
    # Around the hosts: pre-flight, kept secrets, and the checks at the end (services, URLs).
    checks: tuple[StepResult, ...] = ()
    access: tuple[tuple[str, str], ...] = ()  # (name, URL) printed at the end
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (self.fleet is None or not self.fleet.failed) and \
            not any(c.status == FAILED for c in self.checks)

    @property
    def changed(self) -> bool:
        return bool(self.engine and self.engine.applied) or bool(self.fleet and self.fleet.changed) \
            or any(c.status == CHANGED for c in self.checks)


@dataclass(frozen=True)
class Check:
    """One pre-flight check (`deploy doctor`): where it ran ("local" or user@host), what it
    checked, and how it went: ok True, failed False, None when it was not run (its host could
    not be reached), with why in `detail`."""

    where: str
    name: str
    ok: bool | None
    detail: str = ""

    @property
    def label(self) -> str:
        """`root@10.0.0.5 disk`, `local env file`: how a failure is named in one line."""
        return f"{self.where} {self.name}"


@dataclass(frozen=True)
class DoctorResult:
    checks: tuple[Check, ...]

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.ok is False)

    @property
    def ok(self) -> bool:
        return not self.failed


def to_data(result: Any) -> Any:
    """A result as JSON-ready data, with derived properties the reader needs."""
    data = asdict(result)
    if isinstance(result, RunResult):
        data["ok"] = result.ok
        data["changed"] = result.changed
    if isinstance(result, DoctorResult):
        data["ok"] = result.ok
        data["failed"] = [c.label for c in result.failed]
    return data
