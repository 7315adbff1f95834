"""Hostile and malformed input, as a user types it: the real `deploy` command, one case per row.

Every row holds the whole contract of README's exit code 2: exit 2, one `error:` line per
problem, the file/line or variable named, never a traceback, and nothing started: no run log,
no engine workspace, no backend file, no known_hosts write, no request to the AWS endpoint (a
counting HTTP server) and no connection to any host (a counting TCP listener). Two control rows
show that a valid input does reach both counters, so a zero means something.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import DEPLOY, REPO

pytestmark = pytest.mark.slow  # the real `deploy` command, one process per row

OK_SECRET = "0123456789abcdef0123"
PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHv0k2L8uF1z8JQm3bN2z6s8nXfQ1yA4R0m4bq3q8k6g op@test"


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def hit(self) -> None:
        with self.lock:
            self.count += 1


@pytest.fixture(scope="module")
def endpoint_counter() -> Iterator[tuple[str, Counter]]:
    """An HTTP server on loopback that counts every request (the AWS endpoint of every row)."""
    counter = Counter()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _any(self) -> None:
            counter.hit()
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any  # noqa: N815  # http.server's names

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", counter
    server.shutdown()


@pytest.fixture(scope="module")
def host_counter() -> Iterator[tuple[int, Counter]]:
    """A TCP listener on loopback that counts connections (the SSH host of every row)."""
    counter = Counter()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            counter.hit()
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1], counter
    stop.set()
    thread.join()
    listener.close()


def edge_env(port: int, **changes: str | None) -> str:
    values: dict[str, str | None] = {
        "edge_hosts": f"root@127.0.0.1:{port}", "git_repo": "file:///nonexistent/app.git",
        "git_ref": "main", "frp_token": OK_SECRET, "edge_api_url": "http://localhost:8080/api",
    }
    values.update(changes)
    return "".join(f"{k}={v}\n" for k, v in values.items() if v is not None)


def dashboard_env(**changes: str | None) -> str:
    values: dict[str, str | None] = {
        "TF_VAR_deptype": "qa", "TF_VAR_public_key": f'"{PUB}"',
        "TF_VAR_ssh_cidr_blocks": '["127.0.0.0/8"]', "TF_VAR_app_cidr_blocks": '["127.0.0.0/8"]',
        "git_repo": "https://example.com/chronos.git", "git_ref": "main",
        "jwt_secret_key": OK_SECRET, "frp_token": OK_SECRET + "x", "db_password": OK_SECRET + "y",
        "background_color": "#0f766e", "vite_api_base_url": "https://dashboard.example.com/api",
    }
    values.update(changes)
    return "".join(f"{k}={v}\n" for k, v in values.items() if v is not None)


BROKEN_STACK = """\
description = "a test stack"
[variables]
required = ["edge_hosts", "git_repo", "git_ref"]
[hosts]
source = "env"
variable = "edge_hosts"
[app]
repo_variable = "git_repo"
ref_variable = "git_ref"
root = "app"
"""


@dataclass
class Row:
    id: str
    args: tuple[str, ...]
    expect: tuple[str, ...]  # fragments that must be in the errors: what is wrong, and where
    files: dict[str, str | bytes] = field(default_factory=dict)  # relative to the project
    environ: dict[str, str] = field(default_factory=dict)
    lines: int = 1  # one problem, one line


def rows(port: int) -> list[Row]:
    E = "deployments/env-qa"  # noqa: N806  # the file most rows are about
    edge = ("edge", "qa", "apply")
    dash = ("dashboard", "qa", "plan")

    def on_edge(id: str, expect: tuple[str, ...], **changes: str | None) -> Row:
        return Row(id, edge, expect, {E: edge_env(port, **changes)})

    def on_dash(id: str, expect: tuple[str, ...], **changes: str | None) -> Row:
        return Row(id, dash, expect, {E: dashboard_env(**changes)})

    def stack_file(id: str, text: str | bytes, expect: tuple[str, ...], **extra: str) -> Row:
        return Row(id, ("broken", "qa", "apply"), expect,
                   {"deployments/stacks/broken.toml": text, E: edge_env(port), **extra})

    def broken_app(id: str, app_extra: str, expect: tuple[str, ...], **files: str) -> Row:
        return stack_file(id, BROKEN_STACK + app_extra, expect, **files)

    return [
        # 1. git options and transports
        on_edge("repo-upload-pack", ("git_repo must not start with '-'",),
                git_repo="--upload-pack=touch${IFS}/tmp/pwned"),
        on_edge("repo-ext", ("git_repo must not name a git transport helper",),
                git_repo="ext::sh%-c%touch%/tmp/pwned"),
        on_edge("repo-fd", ("git_repo must not name a git transport helper",), git_repo="fd::17"),
        on_edge("repo-plain-http", ("git_repo must use https://, ssh:// or file://",),
                git_repo="http://example.com/app.git"),
        on_edge("repo-ftp", ("git_repo must use https://",), git_repo="ftp://example.com/app.git"),
        on_edge("repo-space", ("git_repo must not contain whitespace",),
                git_repo='"https://example.com/a b.git"'),
        on_edge("repo-bare-path", ("git_repo must be an https://",), git_repo="/srv/app.git"),
        on_edge("repo-scp-dash-host", ("git_repo host and user must not start with '-'",),
                git_repo="git@-oProxyCommand=x:app.git"),
        on_edge("repo-ssh-dash-host", ("git_repo host and user must not start with '-'",),
                git_repo="ssh://-oProxyCommand=x/app.git"),
        on_edge("ref-upload-pack", ("git_ref must not start with '-'",), git_ref="--upload-pack=x"),
        on_edge("ref-dash", ("git_ref must not start with '-'",), git_ref="-b"),
        on_edge("ref-dotdot", ("git_ref must not contain '..'",), git_ref="main..dev"),
        on_edge("ref-space", ("git_ref must not contain whitespace",), git_ref='"main dev"'),
        on_edge("ref-tilde", ("git_ref must not contain '~'",), git_ref="main~1"),
        on_edge("ref-colon", ("git_ref must not contain ':'",), git_ref="main:evil"),
        on_edge("ref-lock", ("git_ref no '/'-separated part may end with '.lock'",), git_ref="x.lock"),
        on_edge("ref-reflog", ("git_ref must not contain '@{'",), git_ref="@{-1}"),
        on_edge("ref-control", ("git_ref must not contain control characters",), git_ref="ma\x01in"),
        on_edge("ref-glob", ("git_ref must not contain '*'",), git_ref="release/*"),
        # 2. values a file format cannot carry
        on_edge("env-newline", ("frp_token", "newline"), frp_token=f'"{OK_SECRET}\\nEVIL=1"'),
        # 3. names that would become paths
        Row("stack-traversal", ("../stacks/shared", "qa", "plan"), ("is not a stack name",)),
        Row("stack-absolute", ("/etc/passwd", "qa", "plan"), ("is not a stack name",)),
        Row("stack-uppercase", ("Shared", "qa", "plan"), ("is not a stack name",)),
        Row("stack-300", ("s" * 300, "qa", "plan"), ("is not a stack name", "…'")),
        Row("stack-unknown", ("nosuch", "qa", "plan"), ("unknown stack 'nosuch'",)),
        Row("env-traversal", ("edge", "../qa", "apply"), ("environment '../qa' is not an environment name",)),
        Row("env-uppercase", ("edge", "QA", "apply"), ("environment 'QA' is not an environment name",)),
        Row("env-300", ("edge", "q" * 300, "apply"), ("is not an environment name", "…'")),
        Row("env-slash", ("edge", "qa/../qa", "apply"), ("is not an environment name",)),
        Row("env-dot", ("edge", ".qa", "apply"), ("is not an environment name",)),
        Row("env-unknown", ("edge", "nosuch", "apply"), ("unknown environment 'nosuch'",)),
        Row("rollback-traversal", ("rollback", "edge", "qa", "--to", "../../../etc"),
            ("--to '../../../etc'", "is not a release name"), {E: edge_env(port)}),
        Row("rollback-short", ("rollback", "edge", "qa", "--to", "2026"), ("is not a release name",),
            {E: edge_env(port)}),
        Row("rollback-shell", ("rollback", "edge", "qa", "--to", "20261118110640250-0123456;id"),
            ("is not a release name",), {E: edge_env(port)}),
        # 4. files that cannot be read or parsed
        Row("env-not-utf8", edge, (f"{E}:2: not UTF-8 text (byte 0xff)",),
            {E: b"edge_hosts=root@127.0.0.1\ngit_ref=ma\xffin\n"}),
        Row("env-bad-line", edge, (f"{E}:1: cannot parse this line",),
            {E: "this is not an assignment\n" + edge_env(port)}),
        Row("env-no-equals", edge, (f"{E}:1: FOO has no '='",), {E: "FOO\n" + edge_env(port)}),
        Row("dotenv-not-utf8", edge, (".env:1: not UTF-8 text",),
            {E: edge_env(port), ".env": b"AWS_PROFILE=\xfe\n"}),
        Row("dotenv-bad-line", edge, (".env:2: cannot parse this line",),
            {E: edge_env(port), ".env": "AWS_PROFILE=x\nnot an assignment\n"}),
        stack_file("toml-not-utf8", b'description = "\xff"\n', ("broken.toml:1: not UTF-8 text",)),
        stack_file("toml-syntax", 'description = "x"\n[hosts\n', ("broken.toml:2: ",)),
        stack_file("toml-port-string", BROKEN_STACK.replace('source = "env"', 'source = "env"\nport = "22"'),
                   ("hosts.port must be a whole number, not str",)),
        stack_file("toml-port-range", BROKEN_STACK.replace('source = "env"', 'source = "env"\nport = 99999'),
                   ("hosts.port must be at most 65535",)),
        stack_file("toml-parallel-float",
                   BROKEN_STACK.replace('source = "env"', 'source = "env"\nparallel = 2.5'),
                   ("hosts.parallel must be a whole number, not float",)),
        broken_app("toml-keep-string", 'keep_releases = "5"\n',
                   ("app.keep_releases must be a whole number",)),
        broken_app("toml-secret-string", '[[app.files]]\ntemplate = "t.j2"\npath = "x"\nsecret = "yes"\n',
                   ("app.files[0].secret must be true or false",), **{"t.j2": "x\n"}),
        broken_app("toml-retries-float", '[[app.health]]\nname = "h"\ncommand = "true"\nretries = 1.5\n',
                   ("app.health[0].retries must be a whole number",)),
        broken_app("toml-interval-string",
                   '[[app.health]]\nname = "h"\ncommand = "true"\ninterval = "fast"\n',
                   ("app.health[0].interval must be a number",)),
        stack_file("toml-unknown-key", BROKEN_STACK + "colour = 1\n", ("unknown key 'app.colour'",)),
        # 5. host lists and gateways
        on_edge("host-user-only", (f"{E}: edge_hosts: 'user@' is not user@host[:port]",), edge_hosts="user@"),
        on_edge("host-no-user", ("edge_hosts: '@host' is not user@host[:port]",), edge_hosts="@host"),
        on_edge("host-port-range", ("edge_hosts: 'h:99999': port 99999 is out of range",),
                edge_hosts="h:99999"),
        on_edge("host-port-word", ("edge_hosts: 'h:abc' is not user@host[:port]",), edge_hosts="h:abc"),
        on_edge("host-ipv6-bare", ("edge_hosts: 'fd00::5' is not user@host[:port]", "in brackets"),
                edge_hosts="fd00::5"),
        on_edge("host-twice", ("edge_hosts: 'root@127.0.0.1' is listed twice",),
                edge_hosts='"root@127.0.0.1 root@127.0.0.1"'),
        on_edge("host-separators", ("edge_hosts: lists no hosts",), edge_hosts='" , ,"'),
        on_edge("host-dash-user", ("edge_hosts: '-oProxyCommand=x@h' is not user@host[:port]",),
                edge_hosts="-oProxyCommand=x@h"),
        on_edge("gateway-port", ("ssh_gateway: 'b:0': port 0 is out of range",), ssh_gateway="b:0"),
        on_edge("gateway-malformed", ("ssh_gateway: '@b' is not user@host[:port]",), ssh_gateway="@b"),
        on_edge("host-outside-sandbox", ("not: 10.0.0.5", "refusing to connect outside 127.0.0.0/8"),
                edge_hosts="root@10.0.0.5"),
        on_edge("gateway-outside-sandbox", ("not: 192.168.1.9",), ssh_gateway="root@192.168.1.9"),
        # 6. templates, rendered for every host before anything runs
        broken_app("template-missing", '[[app.files]]\ntemplate = "nope.j2"\npath = "x"\n',
                   ("nope.j2", "cannot read it")),
        broken_app("template-syntax", '[[app.files]]\ntemplate = "t.j2"\npath = "x"\n',
                   ("t.j2:2: template syntax error",), **{"t.j2": "a\n{% if %}\n"}),
        broken_app("template-undefined", '[[app.files]]\ntemplate = "t.j2"\npath = "x"\n',
                   ("t.j2: 'no_such_variable' is undefined",), **{"t.j2": "{{ no_such_variable }}\n"}),
        broken_app("health-port", '[[app.health]]\nname = "h"\nurl = "http://{{ host.address }}:99999/"\n',
                   ("health 'h'", "port that is not a number")),
        broken_app("health-scheme", '[[app.health]]\nname = "h"\nurl = "{{ host.address }}/health"\n',
                   ("health 'h'", "is not an http:// or https:// URL")),
        # 7. operator settings
        Row("endpoint-no-scheme", edge, ("AWS_ENDPOINT_URL", "needs a scheme"), {E: edge_env(port)},
            {"AWS_ENDPOINT_URL": "127.0.0.1:5055"}),
        Row("endpoint-port", edge, ("AWS_ENDPOINT_URL", "port that is not a number"), {E: edge_env(port)},
            {"AWS_ENDPOINT_URL": "https://127.0.0.1:99999"}),
        Row("endpoint-ftp", edge, ("AWS_ENDPOINT_URL", "needs a scheme"), {E: edge_env(port)},
            {"AWS_ENDPOINT_URL": "ftp://127.0.0.1"}),
        Row("ssh-key-missing", edge, ("DEPLOYER_SSH_KEY", "does not exist"), {E: edge_env(port)},
            {"DEPLOYER_SSH_KEY": "/nonexistent/id_ed25519"}),
        Row("ssh-key-pub-name", edge, ("DEPLOYER_SSH_KEY", "is a public key"), {E: edge_env(port)},
            {"DEPLOYER_SSH_KEY": "/nonexistent/id_ed25519.pub"}),
        Row("ssh-key-pub-content", edge, ("DEPLOYER_SSH_KEY", "holds a public key"),
            {E: edge_env(port), "id_key": PUB + "\n"}, {"DEPLOYER_SSH_KEY": "@project/id_key"}),
        Row("engine-choice", dash, ("DEPLOYER_ENGINE", "'pulumi' is not one of"), {E: dashboard_env()},
            {"DEPLOYER_ENGINE": "pulumi"}),
        on_dash("deptype-mismatch", ("TF_VAR_deptype is 'prod' but the environment is 'qa'",),
                TF_VAR_deptype="prod"),
        on_dash("secret-short", ("jwt_secret_key is shorter than",), jwt_secret_key="abc"),
        on_dash("missing-vars",
                ("missing required variables for stack dashboard: TF_VAR_public_key, git_ref",),
                TF_VAR_public_key=None, git_ref=None),
        # 8. problems from different layers, all in one run
        Row("key-twice-and-port", edge, (f"{E}:6: git_ref is set again", "'h:99999': port 99999"),
            {E: edge_env(port, edge_hosts="h:99999") + "git_ref=dev\n"}, lines=2),
        Row("endpoint-and-missing", dash, ("AWS_ENDPOINT_URL", "missing required variable for stack"
                                           " dashboard: git_ref"),
            {E: dashboard_env(git_ref=None)}, {"AWS_ENDPOINT_URL": "nohost"}, lines=2),
        Row("stack-and-env-names", ("../x", "../y", "plan"), ("is not a stack name",
                                                              "is not an environment name"), lines=2),
        Row("key-ref-host", edge, ("DEPLOYER_SSH_KEY", "git_ref must not start", "edge_hosts: 'x@' is not"),
            {E: edge_env(port, git_ref="-x", edge_hosts="x@")}, {"DEPLOYER_SSH_KEY": "/nonexistent/k"},
            lines=3),
        Row("dotenv-and-template", ("broken", "qa", "apply"), (".env:1: cannot parse", "t.j2:1:"),
            {"deployments/stacks/broken.toml":
             BROKEN_STACK + '[[app.files]]\ntemplate = "t.j2"\npath = "x"\n',
             "t.j2": "{% endif %}\n", E: edge_env(port), ".env": "nonsense line\n"}, lines=2),
    ]


ROW_IDS = [r.id for r in rows(1)]


@pytest.fixture
def project(tmp_path: Path, provider_mirror: Path) -> Path:
    path = tmp_path / "project"
    (path / "deployments" / "stacks").mkdir(parents=True)
    for rel in ("terraform", "deployments/templates", "examples"):
        (path / rel).symlink_to(REPO / rel)
    for stack in (REPO / "deployments" / "stacks").glob("*.toml"):
        (path / "deployments" / "stacks" / stack.name).symlink_to(stack)
    (path / ".mirror").symlink_to(provider_mirror)  # a row that slips through never asks a registry
    return path


def run(project: Path, row: Row, endpoint_url: str, *, aws: bool = True,
        ) -> subprocess.CompletedProcess[str]:
    for rel, content in row.files.items():
        target = project / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    environ = {"PATH": os.environ["PATH"], "HOME": str(project), "LANG": "C.UTF-8",
               "AWS_ENDPOINT_URL": endpoint_url, "AWS_ACCESS_KEY_ID": "x",
               "AWS_SECRET_ACCESS_KEY": "y" * 20, "DEPLOYER_ENGINE": "embedded",
               "DEPLOYER_PROVIDER_MIRROR": str(project / ".mirror"),
               **{k: v.replace("@project", str(project)) for k, v in row.environ.items()}}
    if not aws:
        environ = {k: v for k, v in environ.items() if not k.startswith("AWS_")}
    return subprocess.run([DEPLOY, *row.args], cwd=project, env=environ, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def started(project: Path) -> list[str]:
    """What a run leaves behind once it has started anything."""
    work = project / ".deployer"
    found = [str(p) for p in (work / "logs", work / "tf", work / "known_hosts") if p.exists()]
    return found + [str(p) for p in (project / "deployments").glob("backend-*.hcl")]


def test_there_are_at_least_sixty_rows() -> None:
    assert len(ROW_IDS) >= 60
    assert len(set(ROW_IDS)) == len(ROW_IDS)


@pytest.mark.parametrize("row_id", ROW_IDS)
def test_bad_input_stops_before_anything_starts(row_id: str, project: Path, endpoint_counter,
                                                host_counter) -> None:
    endpoint_url, requests = endpoint_counter
    port, connections = host_counter
    row = next(r for r in rows(port) if r.id == row_id)
    before = (requests.count, connections.count)
    done = run(project, row, endpoint_url)
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert all(line.startswith("error: ") for line in lines), lines
    assert len(lines) == row.lines, lines
    for fragment in row.expect:
        assert fragment in done.stderr, (fragment, lines)
    assert started(project) == []
    assert (requests.count, connections.count) == before


def test_a_valid_edge_input_does_reach_the_host(project: Path, endpoint_counter, host_counter) -> None:
    """The control: the same project and counters, valid input: the listener counts it."""
    endpoint_url, _ = endpoint_counter
    port, connections = host_counter
    before = connections.count
    # No AWS here: with the counting endpoint (500 to everything) the run lock would stop the
    # run before any host, rightly; without AWS the run says so and goes on to the hosts.
    done = run(project, Row("valid", ("edge", "qa", "apply", "--accept-new-host-keys"), (),
                            {"deployments/env-qa": edge_env(port)}), endpoint_url, aws=False)
    assert done.returncode == 1, done.stderr  # the listener speaks no SSH
    assert "run lock: no AWS configured" in done.stderr
    assert connections.count > before
    assert (project / ".deployer" / "logs").is_dir()


def test_an_aws_error_taking_the_run_lock_stops_before_any_host(project: Path, endpoint_counter,
                                                                host_counter) -> None:
    endpoint_url, requests = endpoint_counter
    port, connections = host_counter
    before = (requests.count, connections.count)
    done = run(project, Row("valid", ("edge", "qa", "apply", "--accept-new-host-keys"), (),
                            {"deployments/env-qa": edge_env(port)}), endpoint_url)
    assert done.returncode == 1, done.stderr
    assert "error: run lock: " in done.stderr and "Traceback" not in done.stderr
    assert requests.count > before[0] and connections.count == before[1]


def test_a_valid_dashboard_input_does_reach_the_endpoint(project: Path, endpoint_counter) -> None:
    endpoint_url, requests = endpoint_counter
    before = requests.count
    row = Row("valid", ("dashboard", "qa", "plan"), (), {"deployments/env-qa": dashboard_env()})
    done = run(project, row, endpoint_url)
    assert done.returncode == 1, done.stderr  # the counting endpoint answers every request with 500
    assert requests.count > before
