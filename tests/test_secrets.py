from __future__ import annotations

import pytest

from deployer.secrets import Masker, is_secret_name


def test_masks_longest_first_and_ignores_tiny_values() -> None:
    m = Masker(["abcd", "abcdefgh", "no"])
    assert m.mask("x abcdefgh y abcd z no") == "x **** y **** z no"
    assert m.values == {"abcd", "abcdefgh"}


def test_regex_characters_are_literal() -> None:
    m = Masker(["a.b*c$"])
    assert m.mask("a.b*c$ aXbbc") == "**** aXbbc"


@pytest.mark.parametrize(("name", "secret"), [
    ("jwt_secret_key", True), ("DB_PASSWORD", True), ("frp_token", True),
    ("TF_VAR_public_key", False), ("background_color", False),
])
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret
