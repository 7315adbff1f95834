"""Generated secrets: made once into deployments/secrets-ENV (0600), never regenerated; a new
one is added without touching the others; asked values come from the env file or a person."""

from __future__ import annotations

import stat
from pathlib import Path
from types import MappingProxyType

import pytest

from deployer import generated
from deployer.config import EnvConfig
from deployer.errors import ConfigError
from deployer.stacks import Generated, Stack, Variables


def _stack(*items: Generated, ask: tuple[str, ...] = ()) -> Stack:
    return Stack("app", Path("app.toml"), variables=Variables(ask=ask), generate=items)


def _env(tmp_path: Path, **values: str) -> EnvConfig:
    return EnvConfig("qa", tmp_path / "deployments" / "env-qa", MappingProxyType(values), frozenset())


KEYS = (Generated("app_key", "laravel", 32), Generated("db_password", "alnum", 24),
        Generated("jwt_secret", "hex", 32))


@pytest.mark.parametrize(("item", "pattern"), [
    (Generated("k", "hex", 32), r"[0-9a-f]{64}"),
    (Generated("k", "alnum", 40), r"[A-Za-z0-9]{40}"),
    (Generated("k", "base64", 32), r"[A-Za-z0-9+/]{43}="),
    (Generated("k", "laravel", 32), r"base64:[A-Za-z0-9+/]{43}="),
])
def test_each_format_from_the_os_random_source(item: Generated, pattern: str) -> None:
    import re

    values = {generated.make(item) for _ in range(20)}
    assert len(values) == 20 and all(re.fullmatch(pattern, v) for v in values)


def test_made_once_at_0600_and_identical_on_every_rerun(tmp_path: Path) -> None:
    stack, env = _stack(*KEYS), _env(tmp_path)
    kept, step = generated.ensure(tmp_path, stack, env)
    path = generated.secrets_path(tmp_path, "qa")
    assert step.status == "changed" and "added app_key, db_password, jwt_secret" in step.reason
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    for value in kept.values():
        assert value not in step.reason
    again, step = generated.ensure(tmp_path, stack, env)
    assert step.status == "unchanged" and again == kept and path.read_bytes() == before


def test_a_newly_declared_secret_is_added_without_touching_the_others(tmp_path: Path) -> None:
    env = _env(tmp_path)
    kept, _ = generated.ensure(tmp_path, _stack(*KEYS[:2]), env)
    path = generated.secrets_path(tmp_path, "qa")
    before = path.read_text()
    more, step = generated.ensure(tmp_path, _stack(*KEYS), env)
    assert step.status == "changed" and step.reason.endswith("added jwt_secret (2 kept)")
    assert {k: more[k] for k in kept} == kept
    assert path.read_text().startswith(before)


def test_asked_values_come_from_the_env_file_else_a_person_else_a_clear_error(tmp_path: Path) -> None:
    stack = _stack(KEYS[0], ask=("domain", "email"))
    with pytest.raises(ConfigError, match=r"env-qa: set domain, email \(or run interactively"):
        generated.ensure(tmp_path, stack, _env(tmp_path))
    assert not generated.secrets_path(tmp_path, "qa").exists()  # nothing half-done
    asked: list[str] = []
    kept, _ = generated.ensure(tmp_path, stack, _env(tmp_path, domain="chom.example.com"),
                               ask=lambda name: asked.append(name) or "ops@example.com")
    assert asked == ["email"] and kept["email"] == "ops@example.com" and "domain" not in kept
    again, step = generated.ensure(tmp_path, stack, _env(tmp_path, domain="chom.example.com"),
                                   ask=lambda name: pytest.fail(f"asked again for {name}"))
    assert step.status == "unchanged" and again == kept


def test_an_asked_value_that_could_break_out_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="email: quotes, backslashes"):
        generated.ensure(tmp_path, _stack(ask=("email",)), _env(tmp_path),
                         ask=lambda _name: "x'; touch /tmp/pwned; '")


def test_a_file_others_can_read_is_refused(tmp_path: Path) -> None:
    generated.ensure(tmp_path, _stack(*KEYS), _env(tmp_path))
    path = generated.secrets_path(tmp_path, "qa")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=rf"{path} is mode 0644: it holds secrets; run chmod 600"):
        generated.ensure(tmp_path, _stack(*KEYS), _env(tmp_path))


def test_generated_values_are_secret_everywhere(tmp_path: Path) -> None:
    stack, env = _stack(*KEYS), _env(tmp_path, domain="x.example")
    kept, _ = generated.ensure(tmp_path, stack, env)
    merged = generated.with_kept(stack, env, kept)
    assert merged.values["domain"] == "x.example" and merged.values["jwt_secret"] == kept["jwt_secret"]
    assert merged.masker().mask(f"key={kept['app_key']}") == "key=****"


def test_placeholders_stand_in_before_the_first_apply(tmp_path: Path) -> None:
    stack = _stack(*KEYS, ask=("domain",))
    checked = generated.placeholders(stack, _env(tmp_path), tmp_path)
    assert checked.values["jwt_secret"] == "<generated jwt_secret>"
    assert not generated.secrets_path(tmp_path, "qa").exists()


def test_a_key_and_a_certificate_signed_by_it_are_made_once(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    stack = _stack(Generated("tls_key", "rsa-key"), Generated("tls_cert", "x509", key="tls_key",
                                                              subject="cso.example"))
    kept, _ = generated.ensure(tmp_path, stack, _env(tmp_path))
    key = serialization.load_pem_private_key(kept["tls_key"].encode(), password=None)
    cert = x509.load_pem_x509_certificate(kept["tls_cert"].encode())
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert cert.subject.rfc4514_string() == "CN=cso.example"
    again, step = generated.ensure(tmp_path, stack, _env(tmp_path))
    assert step.status == "unchanged" and again == kept  # read back byte for byte, PEM lines too
    masked = generated.with_kept(stack, _env(tmp_path), kept).masker().mask(kept["tls_key"])
    assert set(masked.splitlines()) == {"****"}  # every line of the key, as a log would see it
