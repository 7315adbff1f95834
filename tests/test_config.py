"""Env files and operator settings: parsing round-trips and every error, exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.config import environments, load_env, load_settings, parse_env_text
from deployer.errors import ConfigError
from deployer.stacks import Stack, Variables

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
    (tmp_path / ".env").write_text("AWS_PROFILE=fromfile\nAWS_REGION=eu-west-1\n"
                                   "DEPLOYER_SSH_KEY=~/.ssh/key\n")
    settings = load_settings(tmp_path, {"AWS_PROFILE": "fromenv", "HOME": "/home/op"})
    assert settings.aws_profile == "fromenv"
    assert settings.aws_region == "eu-west-1"
    assert settings.state_bucket == "fromenv-chronos-terraform-state-storage"
    assert settings.lock_table == "fromenv-chronos-terraform-state-locks"
    assert settings.engine == "auto"
    assert settings.work_dir == tmp_path / ".deployer"


def test_bad_engine_choice_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DEPLOYER_ENGINE='pulumi' is not one of auto, tofu"):
        load_settings(tmp_path, {"DEPLOYER_ENGINE": "pulumi"})
