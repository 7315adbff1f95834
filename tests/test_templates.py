"""deployer/templates.py: each format quotes every `{{ value }}` so that the file's own reader
gives back the value byte for byte; the shipped templates render and read back exactly."""

from __future__ import annotations

import importlib.util
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from deployer import stacks, templates
from deployer.errors import ConfigError
from deployer.stacks import infer_format, parse_stack

REPO = Path(__file__).resolve().parent.parent

# Values a config file must carry exactly: shell and format syntax of every kind.
VALUES = [
    "plain", "", "a$b", "${HOME}", "$(touch /tmp/x)", "`id`", ";touch x", "it's", '"quoted"',
    "back\\slash", "\\", "\\$", "trailing\\", "# not a comment", "a # b", "  spaces  ", "\ttab",
    "héllo wörld ✓ 😀", "key = value", "[table]", "{a: b}", "- item", "null", "true", "1e3",
    "0x10", "@at", "&anchor", "*alias", "!tag", "%percent", "|", ">", "'", '"', "a: b",
]


def systemd_env(text: str) -> dict[str, str]:
    """systemd's EnvironmentFile= parser (parse_env_file_internal in src/basic/env-file.c, the
    v254+ state machine), state for state: what a real edge host's unit would see."""
    newline, whitespace, comments, escapable = "\n\r", " \t\n\r", "#;", '"\\`$'
    out: dict[str, str] = {}
    state, key, value = "PRE_KEY", "", ""
    last_key_ws: int | None = None
    last_value_ws: int | None = None

    def push(chomp: bool) -> None:
        k = key[:last_key_ws] if last_key_ws is not None else key
        v = value[:last_value_ws] if chomp and last_value_ws is not None else value
        out[k] = v

    for c in text:
        if state == "PRE_KEY":
            if c in comments:
                state = "COMMENT"
            elif c not in whitespace:
                state, key, last_key_ws = "KEY", c, None
        elif state == "KEY":
            if c in newline:
                state, key = "PRE_KEY", ""
            elif c == "=":
                state, last_value_ws = "PRE_VALUE", None
            else:
                if c not in whitespace:
                    last_key_ws = None
                elif last_key_ws is None:
                    last_key_ws = len(key)
                key += c
        elif state == "PRE_VALUE":
            if c in newline:
                push(False)
                state, key, value = "PRE_KEY", "", ""
            elif c == "'":
                state = "SINGLE"
            elif c == '"':
                state = "DOUBLE"
            elif c == "\\":
                state = "VALUE_ESCAPE"
            elif c not in whitespace:
                state, value = "VALUE", value + c
        elif state == "VALUE":
            if c in newline:
                push(True)
                state, key, value = "PRE_KEY", "", ""
            elif c == "\\":
                state, last_value_ws = "VALUE_ESCAPE", None
            else:
                if c not in whitespace:
                    last_value_ws = None
                elif last_value_ws is None:
                    last_value_ws = len(value)
                value += c
        elif state == "VALUE_ESCAPE":
            state = "VALUE"
            if c not in newline:
                value += c
        elif state == "SINGLE":
            if c == "'":
                state = "PRE_VALUE"
            else:
                value += c
        elif state == "DOUBLE":
            if c == '"':
                state = "PRE_VALUE"
            elif c == "\\":
                state = "DOUBLE_ESCAPE"
            else:
                value += c
        elif state == "DOUBLE_ESCAPE":
            state = "DOUBLE"
            if c in escapable:
                value += c
            elif c != "\n":
                value += "\\" + c
        elif state == "COMMENT":
            if c == "\\":
                state = "COMMENT_ESCAPE"
            elif c in newline:
                state = "PRE_KEY"
        elif state == "COMMENT_ESCAPE":
            state = "PRE_KEY" if c in newline else "COMMENT"
    if state in ("PRE_VALUE", "VALUE", "VALUE_ESCAPE", "SINGLE", "DOUBLE", "DOUBLE_ESCAPE"):
        push(state == "VALUE")
    return out


def example_app_settings() -> Any:
    """The example dashboard's own env file reader (examples/chronos-app/app/server.py)."""
    spec = importlib.util.spec_from_file_location(
        "chronos_server", REPO / "examples/chronos-app/app/server.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.settings


def render(source: str, fmt: str, **context: Any) -> str:
    return templates.render_string(source, context, name="t.j2", fmt=fmt)


def test_env_values_read_back_exactly_by_systemd_the_example_app_and_sh(tmp_path: Path) -> None:
    source = "".join(f"# value {i}\nV{i}={{{{ v{i} }}}}\n" for i in range(len(VALUES)))
    text = render(source, "env", **{f"v{i}": v for i, v in enumerate(VALUES)})
    expected = {f"V{i}": v for i, v in enumerate(VALUES)}
    assert systemd_env(text) == expected
    (tmp_path / "app.env").write_text(text, encoding="utf-8")
    assert example_app_settings()(str(tmp_path / "app.env")) == expected


@pytest.mark.parametrize(("value", "line"), [
    ("a$b", 'K="a\\$b"'),
    ("`id`", 'K="\\`id\\`"'),
    ('say "hi"', 'K="say \\"hi\\""'),
    ("C:\\dir", 'K="C:\\\\dir"'),
    ("# x", 'K="# x"'),
    ("é", 'K="é"'),
    (9000, 'K="9000"'),
    (True, 'K="true"'),
])
def test_env_quoting(value: Any, line: str) -> None:
    assert render("K={{ v }}", "env", v=value) == line


@pytest.mark.parametrize(("value", "what"), [
    ("a\nb", "a newline"),
    ("a\rb", "a carriage return"),
    ("a\0b", "a NUL byte"),
    ("a\x1bb", "the control character U+001B"),
    ("a\x85b", "the control character U+0085"),
])
def test_env_refuses_what_it_cannot_carry_naming_the_variable(value: str, what: str) -> None:
    with pytest.raises(ConfigError) as err:
        render("# header\nA=1\nTOKEN={{ frp_token }}\n", "env", frp_token=value)
    assert str(err.value) == (f"t.j2:3: {{{{ frp_token }}}}: the value contains {what}, which an"
                              " env file cannot carry (format env)")


def test_a_refused_value_in_an_expression_names_the_expression() -> None:
    with pytest.raises(ConfigError) as err:
        render("U={{ url.rstrip('/') | default('x') }}", "env", url="http://a\n/")
    assert str(err.value) == ("t.j2:1: {{ url.rstrip('/') | default('x') }}: the value contains a"
                              " newline, which an env file cannot carry (format env)")
    with pytest.raises(ConfigError, match=r"^t.j2:1: \{\{ v \}\}: an env file cannot carry a list value"):
        render("K={{ v }}", "env", v=[1])


def test_undefined_and_syntax_errors_are_still_config_errors() -> None:
    with pytest.raises(ConfigError, match="^t.j2: 'nope' is undefined$"):
        render("K={{ nope }}", "env")
    with pytest.raises(ConfigError, match="^t.j2:1: template syntax error"):
        render("K={{ x", "toml", x="v")


def test_whole_expressions_are_quoted_and_literal_text_is_not() -> None:
    text = render("# {{ '#' }} literal $x\nA={{ 'a' ~ b }}\n{%- for k in ks %}\n{{ k }}{% endfor %}\n"
                  "B={{- c -}}\n", "env", b="$b", ks=["x"], c="c")
    assert text == '# "#" literal $x\nA="a\\$b"\n"x"\nB="c"'  # -}} ate the newline


def test_toml_values_read_back_exactly() -> None:
    source = "".join(f"v{i} = {{{{ v{i} }}}}\n" for i in range(len(VALUES)))
    source += "n = {{ n | int }}\nf = {{ 1.5 }}\nb = {{ true }}\nl = {{ l }}\nt = {{ t }}\n"
    context = {f"v{i}": v for i, v in enumerate(VALUES)}
    context.update(n="42", l=["a\nb", 1], t={"k y": "$v"})
    weird = "\n\r\b\f\x00\x1f\x7f\x85\u2028"
    text = render(source + "w = {{ w }}\n", "toml", w=weird, **context)
    assert tomllib.loads(text) == {**{f"v{i}": v for i, v in enumerate(VALUES)}, "n": 42, "f": 1.5,
                                   "b": True, "l": ["a\nb", 1], "t": {"k y": "$v"}, "w": weird}


def test_json_values_read_back_exactly() -> None:
    weird = "\n\r\x00\x7f\u2028😀"
    text = render('{"values": {{ values }}, "w": {{ w }}, "n": {{ n | int }}, "x": {{ x }}}', "json",
                  values=VALUES, w=weird, n="7", x=None)
    assert json.loads(text) == {"values": VALUES, "w": weird, "n": 7, "x": None}
    with pytest.raises(ConfigError, match=r"JSON cannot carry this value"):
        render("{{ v }}", "json", v=float("nan"))


def test_yaml_values_read_back_exactly() -> None:
    yaml = pytest.importorskip("yaml")
    weird = "\n\r\t\x00\x1b\x7f\x85\u2028\u2029\ufeff😀"
    source = "".join(f"v{i}: {{{{ v{i} }}}}\n" for i in range(len(VALUES)))
    text = render(source + "w: {{ w }}\nl: {{ l }}\nn: {{ n | int }}\n", "yaml", w=weird,
                  l=["a", 1, None, True], n="5", **{f"v{i}": v for i, v in enumerate(VALUES)})
    assert yaml.safe_load(text) == {**{f"v{i}": v for i, v in enumerate(VALUES)}, "w": weird,
                                    "l": ["a", 1, None, True], "n": 5}


def test_raw_is_byte_for_byte() -> None:
    assert render("K={{ v }}", "raw", v="a\n$(b)") == "K=a\n$(b)"
    with pytest.raises(ConfigError,
                       match=r"^t.j2: unknown format 'ini' \(one of env, toml, json, yaml, raw\)$"):
        render("K={{ v }}", "ini", v="x")


def test_the_stack_formats_are_the_renderers() -> None:
    assert stacks.FILE_FORMATS == templates.FORMATS


@pytest.mark.parametrize(("template", "fmt"), [
    ("deployments/templates/edge/edge.env.j2", "env"),
    ("deployments/templates/dashboard/frps.toml.j2", "toml"),
    ("x/config.json.j2", "json"),
    ("x/config.yaml.j2", "yaml"),
    ("x/config.yml.j2", "yaml"),
    ("x/.env.j2", "env"),
    ("x/.env.docker.j2", "raw"),
    ("x/env.deployment.j2", "raw"),
    ("x/chronos-edge.service.j2", "raw"),
    ("x/config.toml", "toml"),
    ("x/Makefile.j2", "raw"),
])
def test_format_from_the_template_name(template: str, fmt: str) -> None:
    assert infer_format(template) == fmt


def app_stack(files: str) -> stacks.Stack:
    data = tomllib.loads('[variables]\nrequired = ["r", "f"]\n[app]\nrepo_variable = "r"\n'
                         'ref_variable = "f"\nroot = "app"\n' + files)
    return parse_stack("t", Path("t.toml"), data)


def test_a_stack_file_declares_or_infers_each_files_format() -> None:
    stack = app_stack('[[app.files]]\ntemplate = "a.env.j2"\npath = "a.env"\n'
                      '[[app.files]]\ntemplate = "b.env.docker.j2"\npath = "b"\nformat = "env"\n'
                      '[[app.files]]\ntemplate = "c.toml.j2"\npath = "c"\nformat = "raw"\n')
    assert stack.app is not None
    assert [f.format for f in stack.app.files] == ["env", "env", "raw"]
    with pytest.raises(ConfigError) as err:
        app_stack('[[app.files]]\ntemplate = "a.j2"\npath = "a"\nformat = "ini"\n')
    assert err.value.problems == (
        "t.toml: app.files[0].format must be one of env, toml, json, yaml, raw, not 'ini'",)


SHIPPED_CONTEXT = {
    "jwt_secret_key": "jwt$(touch /tmp/m1)`id`\"'#x y é", "db_password": "p\\a$s\"s w#rd",
    "frp_token": "frp-$HOME-`x`-\"q\"-\\-é", "vite_api_base_url": "http://localhost:8080/api",
    "background_color": "#112233", "edge_api_url": "http://h/api?a=1&b=$2",
    "env_name": "demo", "host": {"user": "root", "address": "127.0.10.1", "port": 22},
    "stack_name": "x", "outputs": {},
}


@pytest.mark.parametrize("stack_name", ["dashboard", "edge"])
def test_the_shipped_templates_render_and_read_back_exactly(stack_name: str, tmp_path: Path) -> None:
    stack = stacks.load_stack(REPO, stack_name)
    assert stack.app is not None
    read = example_app_settings()
    for file in stack.app.files:
        text = templates.render_file(REPO / file.template, SHIPPED_CONTEXT, file.format)
        if file.format == "env":
            (tmp_path / "f.env").write_text(text, encoding="utf-8")
            assert systemd_env(text) == read(str(tmp_path / "f.env"))
            values = systemd_env(text)
        else:
            assert file.format == "toml", file
            values = tomllib.loads(text)["auth"]
        for name in ("jwt_secret_key", "db_password", "frp_token", "edge_api_url"):
            key = {"jwt_secret_key": "JWT_SECRET_KEY", "db_password": "DB_PASSWORD",
                   "frp_token": "FRP_TOKEN" if file.format == "env" else "token",
                   "edge_api_url": "EDGE_API_URL"}[name]
            if key in values:
                assert values[key] == SHIPPED_CONTEXT[name], (file.path, key)
    if stack_name == "dashboard":
        deployment = templates.render_file(
            REPO / "deployments/templates/dashboard/env.deployment.j2", SHIPPED_CONTEXT, "env")
        assert systemd_env(deployment) == {
            "DEPLOYMENT_ENV": "demo", "DEPLOYMENT_URI": "http://localhost:8080",
            "DASHBOARD_PORT": "8080", "DASHBOARD_BIND": "0.0.0.0", "INSTALL_PAUSE": "0"}
    else:
        edge = templates.render_file(REPO / "deployments/templates/edge/edge.env.j2",
                                     SHIPPED_CONTEXT, "env")
        assert systemd_env(edge) == {"EDGE_API_URL": "http://h/api?a=1&b=$2",
                                     "FRP_TOKEN": SHIPPED_CONTEXT["frp_token"],
                                     "EDGE_PORT": "9000", "EDGE_BIND": "127.0.10.1"}
