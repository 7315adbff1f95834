"""Env files and operator settings: parsing round-trips and every error, exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployer.config import environments, load_env, load_settings, parse_env_text
from deployer.errors import ConfigError
from deployer.stacks import AppSpec, HostsSpec, Stack, Variables

STACK = Stack(
    name="dashboard", path=Path("deployments/stacks/dashboard.toml"),
    variables=Variables(required=("TF_VAR_deptype", "TF_VAR_public_key", "jwt_secret_key"),
                        secrets=("jwt_secret_key",)),
)


@pytest.mark.parametrize(("line", "value"), [
    ("A=plain", "plain"),
    ("export A=exported", "exported"),
    ('A="double # not a comment"', "double # not a comment"),
    ("A='single $HOME ${X}'", "single $HOME ${X}"),
    ("A=unquoted # comment", "unquoted"),
    ("A=a=b=c", "a=b=c"),
    ("A=$dollar$", "$dollar$"),
    ('A="spaces  and ünïcödé ✓"', "spaces  and ünïcödé ✓"),
    ("A=hash#inside", "hash#inside"),
    ('A="line1\\nline2"', "line1\nline2"),
    ("A=", ""),
])
def test_values_round_trip_exactly(line: str, value: str) -> None:
    values, problems = parse_env_text(line + "\n", "env-x")
    assert problems == []
    assert values == {"A": value}


def test_parse_problems_name_file_and_line() -> None:
    text = "A=1\nthis is not an assignment\nB\nA=2\n"
    _, problems = parse_env_text(text, "deployments/env-stage")
    assert problems == [
        "deployments/env-stage:2: cannot parse this line; expected KEY=value",
        "deployments/env-stage:3: B has no '='; write B= for empty",
        "deployments/env-stage:4: A is set again (first set on line 1)",
    ]


def write(project: Path, env: str, text: str) -> Path:
    (project / "deployments").mkdir(parents=True, exist_ok=True)
    path = project / "deployments" / f"env-{env}"
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_variables_are_listed_together(tmp_path: Path) -> None:
    path = write(tmp_path, "stage", "TF_VAR_deptype=stage\n")
    with pytest.raises(ConfigError) as err:
        load_env(tmp_path, "stage", STACK)
    assert err.value.problems == (
        f"{path}: missing required variables for stack dashboard: TF_VAR_public_key, jwt_secret_key",
    )


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "stage", "TF_VAR_deptype=prod\nbroken line\njwt_secret_key=ab\n")
    with pytest.raises(ConfigError) as err:
        load_env(tmp_path, "stage", STACK)
    assert err.value.problems == (
        f"{path}:2: cannot parse this line; expected KEY=value",
        f"{path}: TF_VAR_deptype is 'prod' but the environment is 'stage'",
        f"{path}: missing required variable for stack dashboard: TF_VAR_public_key",
        f"{path}: jwt_secret_key is shorter than 4 characters; use a real secret"
        " (e.g. `openssl rand -hex 32`)",
    )


def test_unknown_environment_lists_the_known_ones(tmp_path: Path) -> None:
    write(tmp_path, "stage", "")
    write(tmp_path, "prod", "")
    with pytest.raises(ConfigError, match=r"unknown environment 'qa': .*env-qa does not exist"
                       r" \(environments: prod, stage\)"):
        load_env(tmp_path, "qa", STACK)
    assert environments(tmp_path) == ["prod", "stage"]


def test_tf_vars_app_vars_and_secrets(tmp_path: Path) -> None:
    write(tmp_path, "stage", "TF_VAR_deptype=stage\nTF_VAR_public_key=ssh-ed25519 AAA\n"
          "jwt_secret_key=0123456789\ndb_password=hunter2hunter2\ncolor=#fff\n")
    env = load_env(tmp_path, "stage", STACK)
    assert env.tf_vars == {"deptype": "stage", "public_key": "ssh-ed25519 AAA"}
    assert env.app_vars == {"jwt_secret_key": "0123456789", "db_password": "hunter2hunter2",
                            "color": "#fff"}
    # Declared secrets and secret-looking names are both secret.
    assert env.secret_names == {"jwt_secret_key", "db_password"}
    assert env.masker().mask("a 0123456789 b hunter2hunter2") == "a **** b ****"
    assert not env.is_protected


def test_settings_environment_wins_over_dotenv(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("a private key file\n")
    (tmp_path / ".env").write_text("AWS_PROFILE=fromfile\nAWS_REGION=eu-west-1\n"
                                   f"DEPLOYER_SSH_KEY={tmp_path / 'key'}\n")
    settings = load_settings(tmp_path, {"AWS_PROFILE": "fromenv", "HOME": "/home/op"})
    assert settings.aws_profile == "fromenv"
    assert settings.aws_region == "eu-west-1"
    assert settings.state_bucket == "fromenv-chronos-terraform-state-storage"
    assert settings.lock_table == "fromenv-chronos-terraform-state-locks"
    assert settings.engine == "auto"
    assert settings.work_dir == tmp_path / ".deployer"


def test_bad_engine_choice_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"DEPLOYER_ENGINE \(set in the environment or .*/\.env\):"
                                          r" 'pulumi' is not one of auto, tofu"):
        load_settings(tmp_path, {"DEPLOYER_ENGINE": "pulumi"})


# ---- property tests: arbitrary text and bytes give ConfigError or a result, never anything else

EDGE_LIKE = Stack(
    name="edge", path=Path("deployments/stacks/edge.toml"),
    variables=Variables(required=("edge_hosts", "git_repo", "git_ref"), optional=("ssh_gateway",)),
    hosts=HostsSpec(source="env", variable="edge_hosts", gateway_variable="ssh_gateway"),
    app=AppSpec(repo_variable="git_repo", ref_variable="git_ref", root="app"),
)
ENV_LINES = st.lists(st.one_of(
    st.text(max_size=40),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(
        ["edge_hosts", "git_repo", "git_ref", "ssh_gateway", "TF_VAR_deptype", "x"]), st.text(max_size=40)),
), max_size=8).map("\n".join)


@settings(max_examples=300, deadline=None)
@given(ENV_LINES)
def test_parse_env_text_never_raises(text: str) -> None:
    values, problems = parse_env_text(text, "env-x")
    assert all(isinstance(p, str) and "\n" not in p for p in problems)
    assert all(isinstance(v, str) for v in values.values())


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), ENV_LINES.map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_load_env_raises_only_config_errors(tmp_path_factory, raw: bytes) -> None:
    project = tmp_path_factory.mktemp("p")
    (project / "deployments").mkdir()
    (project / "deployments" / "env-x").write_bytes(raw)
    try:
        env = load_env(project, "x", EDGE_LIKE)
    except ConfigError as exc:
        assert exc.problems and all("\n" not in p for p in exc.problems)
    else:
        assert env.name == "x"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_env_names_are_checked_before_any_path(name: str) -> None:
    try:
        load_env(Path("/nonexistent"), name, EDGE_LIKE)
    except ConfigError as exc:
        assert len(exc.problems) == 1
