"""Stack files: the shipped stacks load, and every mistake in a stack file is named."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployer.errors import ConfigError
from deployer.stacks import Phase, ServiceSpec, load_stack, parse_stack, read_text, stack_names

REPO = Path(__file__).resolve().parent.parent


def test_shipped_stacks_load() -> None:
    assert stack_names(REPO) == ["chom", "cso", "dashboard", "edge", "shared"]
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
    with pytest.raises(ConfigError,
                       match="unknown stack 'web' .*; stacks: chom, cso, dashboard, edge, shared"):
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


def test_a_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"^{tmp_path}: cannot read it: Is a directory$"):
        read_text(tmp_path)


def test_a_bad_byte_is_named_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"a\nb\nc\xffd\n")
    with pytest.raises(ConfigError, match=r"f:3: not UTF-8 text \(byte 0xff\)"):
        read_text(tmp_path / "f")


TOML_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                         st.text(max_size=20))
TOML_VALUES = st.recursive(
    TOML_SCALARS.filter(lambda v: v is not None),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12)
KEYS = st.sampled_from(["description", "terraform", "variables", "hosts", "app", "root", "call_out",
                        "required", "optional", "secrets", "source", "output", "variable", "port",
                        "parallel", "ready_timeout", "repo_variable", "ref_variable", "files",
                        "health", "service", "template", "path", "secret", "name", "url", "retries",
                        "interval", "deadline", "keep_releases", "fallback", "services", "on_change", "x"])
STACK_DATA = st.recursive(
    st.dictionaries(KEYS, TOML_VALUES, max_size=6),
    lambda inner: st.dictionaries(KEYS, st.one_of(inner, st.lists(inner, max_size=2), TOML_VALUES),
                                  max_size=6),
    max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(STACK_DATA)
def test_parse_stack_raises_only_config_errors(data: dict) -> None:
    try:
        parse_stack("x", Path("x.toml"), data)
    except ConfigError as exc:
        assert exc.problems and all("\n" not in p for p in exc.problems)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_load_stack_raises_only_config_errors(tmp_path_factory, raw: bytes) -> None:
    project = tmp_path_factory.mktemp("p")
    (project / "deployments" / "stacks").mkdir(parents=True)
    (project / "deployments" / "stacks" / "x.toml").write_bytes(raw)
    try:
        load_stack(project, "x")
    except ConfigError as exc:
        assert exc.problems


def test_roles_phases_and_apps_load() -> None:
    data = {
        "variables": {"required": ["a_hosts", "b_hosts", "repo", "ref"]},
        "apps": {"svc": {"repo_variable": "repo", "ref_variable": "ref", "root": "svc"}},
        "roles": {"a": {"source": "env", "variable": "a_hosts", "app": "svc"},
                  "b": {"source": "env", "variable": "b_hosts", "app": "svc", "parallel": 3}},
        "phases": [{"name": "first", "roles": ["a"]},
                   {"name": "second", "roles": ["b"], "batch": "25%", "canary": 1,
                    "max_fail_percentage": 10}],
    }
    stack = parse_stack("x", Path("x.toml"), data)
    assert [r.name for r in stack.roles] == ["a", "b"]
    assert stack.phases[1] == Phase("second", ("b",), batch="25%", canary=1, max_fail_percentage=10.0)
    assert stack.hosts is None and stack.app is None  # two roles: see view()
    view = stack.view("b")
    assert (view.role, view.hosts.parallel, view.app.root) == ("b", 3, "svc")
    assert [v.role for v in stack.views()] == ["a", "b"]
    with pytest.raises(ConfigError, match=r"stack x has no role 'c' \(roles: a, b\)"):
        stack.view("c")


def test_a_legacy_stack_is_one_role_in_one_phase() -> None:
    edge = load_stack(REPO, "edge")
    assert [r.name for r in edge.roles] == ["edge"]
    assert edge.phases == (Phase("deploy", ("edge",)),)
    assert edge.view("edge").app == edge.app


def test_every_problem_with_roles_and_phases_is_named() -> None:
    data = {
        "variables": {"required": ["h", "repo", "ref"]},
        "app": {"repo_variable": "repo", "ref_variable": "ref", "root": "r"},
        "apps": {"svc": {"repo_variable": "repo", "ref_variable": "nope", "root": "svc"},
                 "Bad Name": {}},
        "roles": {"a": {"source": "env", "variable": "h", "app": "missing"},
                  "b": {"source": "env", "variable": "h", "app": "svc"}},
        "phases": [{"roles": ["a", "ghost"], "batch": "0%"}, {"roles": ["a"], "batch": 0}],
    }
    with pytest.raises(ConfigError) as err:
        parse_stack("x", Path("x.toml"), data)
    assert err.value.problems == (
        "x.toml: app cannot be mixed with apps and phases and roles: use [roles.*] and [apps.*]",
        "x.toml: apps.Bad Name: a name is lowercase letters, digits, '-' and '_'",
        "x.toml: roles.a.app names 'missing', which is not an [apps.*] table (apps: svc)",
        'x.toml: phases[0].batch must be a number of hosts (1 or more) or a percentage such as "25%"',
        'x.toml: phases[1].batch must be a number of hosts (1 or more) or a percentage such as "25%"',
        "x.toml: phases name the role 'ghost', which is not a [roles.*] table",
        "x.toml: role 'a' must be in exactly one phase (it is in 2)",
        "x.toml: role 'b' must be in exactly one phase (it is in 0)",
        "x.toml: apps.svc.ref_variable names 'nope', which is not declared in [variables]",
    )


def test_services_one_table_or_several_with_what_a_release_does_to_each() -> None:
    chom = load_stack(REPO, "chom").apps["chom"]
    assert chom.services == (
        ServiceSpec("chom-app", "examples/chom/units/chom-app.service.j2"),
        ServiceSpec("nginx", on_change="reload"), ServiceSpec("chom-worker"))
    edge = load_stack(REPO, "edge").app
    assert edge is not None and [(s.name, s.fallback) for s in edge.services] == [("chronos-edge", "nohup")]
    app = {"repo_variable": "repo", "ref_variable": "ref", "root": "r"}
    data = {
        "variables": {"required": ["repo", "ref"]},
        "apps": {"a": {**app, "service": {"name": "x", "template": "x.j2"}, "services": []},
                 "b": {**app, "services": [
                     {"name": "../etc/passwd", "template": "t"}, {"name": "ok", "on_change": "bounce"},
                     {"name": "nginx", "fallback": "nohup"}, {"name": "ok"}]}},
        "roles": {"a": {"source": "env", "variable": "repo", "app": "a"},
                  "b": {"source": "env", "variable": "repo", "app": "b"}},
        "phases": [{"roles": ["a", "b"]}],
    }
    with pytest.raises(ConfigError) as err:
        parse_stack("x", Path("x.toml"), data)
    assert err.value.problems == (
        "x.toml: apps.a: declare either apps.a.service or [[apps.a.services]], not both",
        "x.toml: apps.b.services[0].name '../etc/passwd' is not a systemd unit name",
        "x.toml: apps.b.services[1].on_change must be 'restart' or 'reload', not 'bounce'",
        "x.toml: apps.b.services[2].fallback = 'nohup' needs a template (its ExecStart is what runs)",
        "x.toml: apps.b.services: 'ok' is declared twice",
    )


def test_the_chom_stack_declares_existing_servers() -> None:
    chom = load_stack(REPO, "chom")
    assert chom.terraform is None and [r.name for r in chom.roles] == ["observability", "app"]
    assert chom.users is not None and chom.users.trust == (("observability", "app", "app_private_ip"),)
    assert chom.kept_names == ("app_key", "db_password", "redis_password", "backup_encryption_key",
                               "jwt_secret", "domain", "email")
    assert {"app_key", "jwt_secret"} <= chom.secret_names
    app = chom.role_of("app")
    assert app.provision is not None and app.provision.packages == ("nginx",)
    assert chom.role_of("observability").app == "" and chom.view("observability").app is None
    env_file = next(f for f in app.provision.files if f.path == "/var/www/chom/shared/.env")
    assert (env_file.owner, env_file.mode, env_file.format) == ("deploy", "0600", "env")
    assert env_file.reload == ("chom-app", "chom-worker")


def test_every_problem_of_users_secrets_provisioning_and_doctor_is_named() -> None:
    data = {
        "variables": {"required": ["hosts", "boot", "domain"], "ask": ["domain"]},
        "users": {"bootstrap_user_variable": "boot", "deploy_user_variable": "deployer",
                  "trust": [{"from": "web", "to": "db", "to_variable": "db_ip"}]},
        "generate": [{"name": "k", "format": "rot13"}, {"name": "bad name", "length": 8}],
        "doctor": {"reach": [{"from": "cache", "to_variable": "x"}], "disk_path": "/tmp/../etc"},
        "roles": {
            "web": {"source": "env", "variable": "hosts", "provision": {
                "packages": ["nginx", "-oDpkg::Pre-Invoke=x"],
                "dirs": [{"path": "relative"}],
                "files": [{"path": "/etc/../shadow", "template": "t.j2", "source": "s", "mode": "999",
                           "owner": "Root!", "reload": ["ok", "no;reboot"]}],
                "units": [{"name": "a b", "template": "u.j2"}]}},
            "db": {"source": "env", "variable": "hosts"},
        },
    }
    with pytest.raises(ConfigError) as err:
        parse_stack("x", Path("x.toml"), data)
    assert err.value.problems == (
        "x.toml: roles.web.provision.packages: '-oDpkg::Pre-Invoke=x' is not a Debian package name"
        " (optionally name=version)",
        "x.toml: roles.web.provision.dirs[0].path 'relative' must be an absolute path of letters,"
        " digits and . _ - @ + / (no '..')",
        "x.toml: roles.web.provision.files[0] needs exactly one of 'template' or 'source'",
        "x.toml: roles.web.provision.files[0].reload: 'no;reboot' is not a systemd unit name",
        "x.toml: roles.web.provision.files[0].owner 'Root!' is not a user name (or \"deploy\")",
        "x.toml: roles.web.provision.files[0].mode '999' must be an octal mode such as \"0644\"",
        "x.toml: roles.web.provision.files[0].path '/etc/../shadow' must be an absolute path of"
        " letters, digits and . _ - @ + / (no '..')",
        "x.toml: roles.web.provision.units[0].name 'a b' is not a systemd unit name",
        "x.toml: roles.db needs an app (app = \"NAME\" of an [apps.*] table), a"
        " [roles.db.provision], or both",
        "x.toml: generate[0].format must be one of hex, base64, alnum, laravel, rsa-key, x509, not 'rot13'",
        "x.toml: generate[1].length must be at least 16",
        "x.toml: generate[1].name 'bad name' is not a variable name",
        "x.toml: doctor.disk_path '/tmp/../etc' must be an absolute path",
        "x.toml: doctor.reach[0].from names the role 'cache', which is not a [roles.*] table",
        "x.toml: 'domain' is both generated or asked for and declared elsewhere: one place only"
        " (secrets-ENV holds generated and asked values)",
        "x.toml: users.deploy_user_variable names 'deployer', which is not declared in [variables]",
        "x.toml: users.trust[0].to_variable names 'db_ip', which is not declared in [variables]",
        "x.toml: doctor.reach[0].to_variable names 'x', which is not declared in [variables]",
    )
