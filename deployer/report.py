"""Renders results for humans or as JSON. The only module that prints.

Progress goes to stderr, whole lines at a time under a lock (parallel hosts never interleave
mid-line); results go to stdout.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from deployer.results import (
    FAILED,
    PLANNED,
    Check,
    DoctorResult,
    FleetResult,
    RunResult,
    StepResult,
    to_data,
)

_lock = threading.Lock()

JSON_VERSION = 1  # of the --json envelope; bumped when a key of it goes or changes meaning
_envelope: dict[str, Any] | None = None  # the running command's, while --json is on


def progress(line: str) -> None:
    """Thread-safe progress line on stderr."""
    with _lock:
        sys.stderr.write(line.rstrip("\n") + "\n")
        sys.stderr.flush()


def quiet(_line: str) -> None:
    return None


def error(message: str) -> None:
    """One error per line, each prefixed, on stderr (and in the --json envelope's errors)."""
    with _lock:
        if _envelope is not None:
            _envelope["errors"].append(message)
        for line in message.splitlines() or [""]:
            sys.stderr.write(f"error: {line}\n")
        sys.stderr.flush()


@contextmanager
def json_envelope(command: str) -> Iterator[None]:
    """--json: the command's result goes to stdout once, when it ends, in one shape for every
    command, so a pipeline reads `ok` and `data` without knowing which command ran:

        {"version": 1, "command": "status", "ok": true, "exit_code": 0, "data": ..., "errors": []}

    `ok` is exit code 0; `data` is what the command emitted (null when it stopped before a
    result); `errors` are the messages stderr got too. Progress stays on stderr."""
    global _envelope
    _envelope = {"data": None, "errors": []}
    code: int = 1  # an exception that is not an exit: the wrapper turns it into one
    try:
        yield
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        raise
    finally:
        with _lock:
            found, _envelope = _envelope, None
            sys.stdout.write(json.dumps(
                {"version": JSON_VERSION, "command": command, "ok": code == 0, "exit_code": code,
                 "data": found["data"], "errors": found["errors"]},
                indent=2, sort_keys=True, default=str) + "\n")
            sys.stdout.flush()


def emit_json(data: Any) -> None:
    """The command's one result, into the envelope json_envelope writes when the command ends."""
    with _lock:
        if _envelope is None or _envelope["data"] is not None:
            raise RuntimeError("emit_json: one result per command, inside json_envelope")
        _envelope["data"] = data


def line(text: str = "") -> None:
    with _lock:
        sys.stdout.write(text + "\n")


def run_result(result: RunResult, *, as_json: bool) -> None:
    if as_json:
        emit_json(to_data(result))
        return
    line(f"{result.stack}/{result.env} {result.action}")
    if result.engine is not None:
        e = result.engine
        from deployer.pipeline import describe_plan

        line(f"  engine   {e.engine}: {e.reason}")
        line(f"  plan     {describe_plan(e.plan)}")
        for name, value in sorted(e.outputs.items()):
            if isinstance(value, str | int | float):
                line(f"  output   {name} = {value}")
            elif isinstance(value, dict) and name.endswith("_commands"):  # ssh commands per role
                for key, items in sorted(value.items()):
                    for item in items if isinstance(items, list) else [items]:
                        line(f"  output   {name}.{key} = {item}")
    before = [c for c in result.checks if c.name in ("pre-flight", "secrets")]
    for c in before:
        line(f"  {c.name + ' ':<9}{c.status:<9} {c.reason}".rstrip())
    if result.fleet is not None:
        fleet(result.fleet)
    for c in result.checks:
        if c not in before:
            line(f"  check    {c.name}  {c.status:<9} {c.reason}".rstrip())
    for note in result.notes:
        line(f"  note     {note}")
    for name, url in result.access:
        line(f"  url      {name}: {url}")
    if result.seconds:
        line(f"  time     {result.seconds:.1f} s")
    line(f"  log      {result.log_path}")
    line(_verdict(result))


def _verdict(result: RunResult) -> str:
    if result.fleet is not None and result.fleet.failed:
        names = ", ".join(h.host for h in result.fleet.failed)
        return f"FAILED on {len(result.fleet.failed)} host(s): {names}"
    if failed := [c.name for c in result.checks if c.status == FAILED]:
        return f"FAILED: {', '.join(failed)}"
    hosts_would = result.fleet is not None and any(h.status == PLANNED for h in result.fleet.hosts)
    if result.action == "plan" and (
            (result.engine is not None and result.engine.plan.has_changes) or hosts_would):
        return "OK: plan has changes; run with `apply` to make them"
    return "OK: changes applied" if result.changed else "OK: no changes"


def fleet(result: FleetResult) -> None:
    width = max((len(h.host) for h in result.hosts), default=0)
    for h in result.hosts:
        shown = h.release and h.status != FAILED and h.release not in h.reason
        detail = h.reason + (f" (release {h.release})" if shown else "")
        line(f"  host     {h.host:<{width}}  {h.status:<9} {detail}".rstrip())


def steps(results: tuple[StepResult, ...], *, as_json: bool, title: str) -> None:
    if as_json:
        emit_json({"title": title, "steps": [to_data(s) for s in results]})
        return
    line(title)
    width = max((len(s.name) for s in results), default=0)
    for s in results:
        line(f"  {s.name:<{width}}  {s.status:<9} {s.reason}".rstrip())


def doctor(result: DoctorResult, *, as_json: bool) -> None:
    """The pre-flight checks as a table (where, check, result, detail), then one line naming
    every failed check."""
    if as_json:
        emit_json(to_data(result))
        return
    rows = [("WHERE", "CHECK", "RESULT", "DETAIL"),
            *((c.where, c.name, _outcome(c), c.detail) for c in result.checks)]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = "  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths, strict=False))
        line(f"{cells}  {row[3]}".rstrip())
    not_run = sum(c.ok is None for c in result.checks)
    if result.failed:
        line(f"doctor: FAILED {len(result.failed)} of {len(result.checks)} checks: "
             + ", ".join(c.label for c in result.failed))
    else:
        line(f"doctor: OK, {len(result.checks) - not_run} checks passed"
             + (f", {not_run} not run" if not_run else ""))


def _outcome(check: Check) -> str:
    return "not run" if check.ok is None else "ok" if check.ok else "FAILED"


def mapping(title: str, data: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        emit_json(data)
        return
    line(title)
    for key, value in data.items():
        line(f"  {key} = {value}")


def demo_result(result, *, as_json: bool) -> None:
    """The main job's summary: every stack, then how to reach what was deployed."""
    if as_json:
        emit_json(to_data(result))
        return
    steps(result.sandbox, as_json=False, title="sandbox")
    steps(result.state, as_json=False, title="state")
    for run in result.runs:
        run_result(run, as_json=False)
    line()
    line(f"env file:   {result.env_file}")
    if result.dashboard_url:
        line(f"dashboard:  {result.dashboard_url}")
    if result.ssh_command:
        line(f"ssh:        {result.ssh_command}")
    line("demo: " + ("changes applied" if result.changed else "no changes anywhere")
         if result.ok else "demo: FAILED (see above)")


def mermaid(stack: Any, hosts: dict[str, list[str]]) -> str:
    """The stack's phases, roles and hosts as a Mermaid flowchart (docs that cannot go stale).

    >>> from pathlib import Path
    >>> from deployer.stacks import HostsSpec, Phase, Role, Stack
    >>> spec = HostsSpec(source="env", variable="v")
    >>> stack = Stack("cso", Path("cso.toml"), roles=(Role("jump", spec, "a"), Role("mq", spec, "a")),
    ...               phases=(Phase("setup", ("jump",)), Phase("data", ("mq",))))
    >>> print(mermaid(stack, {"jump": ["ec2-user@1.2.3.4"], "mq": []}))
    flowchart LR
      subgraph phase_1["1. setup"]
        role_jump["jump<br/>ec2-user@1.2.3.4"]
      end
      subgraph phase_2["2. data"]
        role_mq["mq<br/>(no hosts yet)"]
      end
      phase_1 --> phase_2
    """
    def label(text: str) -> str:
        return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")

    out = ["flowchart LR"]
    for number, phase in enumerate(stack.phases, 1):
        out.append(f'  subgraph phase_{number}["{number}. {label(phase.name)}"]')
        for role in phase.roles:
            listed = "<br/>".join(label(h) for h in hosts.get(role, [])) or "(no hosts yet)"
            out.append(f'    role_{role.replace("-", "_")}["{label(role)}<br/>{listed}"]')
        out.append("  end")
    if len(stack.phases) > 1:
        out.append("  " + " --> ".join(f"phase_{n}" for n in range(1, len(stack.phases) + 1)))
    return "\n".join(out)
