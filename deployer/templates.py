"""Jinja2 rendering with StrictUndefined: a missing variable is an error, never an empty string.

A rendered file has a format ("env", "toml", "json", "yaml" or "raw"). In every format but
"raw", each `{{ expression }}` is written as one quoted value of that format, so a value
reaches the app byte for byte and can never become syntax: `KEY={{ token }}` in an env file
renders `KEY="a\\$b"` for the value `a$b`. A value the format cannot carry (a newline in an env
file) is refused, naming the expression. Literal template text is never touched.
"""

from __future__ import annotations

import functools
import json
import math
import threading
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
from jinja2.lexer import Token, TokenStream

from deployer.errors import ConfigError
from deployer.stacks import read_text  # a missing or non-UTF-8 template is bad input, named

_QUOTE_FILTER = "_deployer_quote"


class Refused(ValueError):
    """A value the output format cannot carry; the message says why."""


def _describe(ch: str) -> str:
    names = {"\n": "a newline", "\r": "a carriage return", "\0": "a NUL byte"}
    return names.get(ch, f"the control character U+{ord(ch):04X}")


def _text(value: Any, what: str) -> str:
    """A scalar as text; containers and None have no single text form."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise Refused(f"{what} cannot carry a {type(value).__name__} value")


def quote_env(value: Any) -> str:
    """A double-quoted value that systemd's EnvironmentFile=, POSIX sh and the example app
    all read back byte for byte: `"`, `\\`, `$` and backquote escaped with a backslash.

    >>> print(quote_env('a$b "c" `d`'))
    "a\\$b \\"c\\" \\`d\\`"
    """
    text = _text(value, "an env file")
    for ch in text:
        if ch != "\t" and unicodedata.category(ch) == "Cc":
            raise Refused(f"the value contains {_describe(ch)}, which an env file cannot carry")
    return '"' + "".join("\\" + ch if ch in '"\\$`' else ch for ch in text) + '"'


def _escaped(text: str, escapes: Mapping[str, str], also: Callable[[str], bool]) -> str:
    out = []
    for ch in text:
        if ch in escapes:
            out.append(escapes[ch])
        elif unicodedata.category(ch) == "Cc" or also(ch):
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


_TOML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
                 "\r": "\\r"}
_YAML_ESCAPES = {**_TOML_ESCAPES, "\0": "\\0"}
# Characters YAML reads as line breaks or marks, or refuses raw in a double-quoted scalar.
_YAML_SPECIAL = frozenset("\u2028\u2029\ufeff\ufffe\uffff")


def quote_toml(value: Any) -> str:
    """A TOML value: a basic string, or a number, boolean, array or inline table."""
    if isinstance(value, str):
        return _escaped(value, _TOML_ESCAPES, lambda ch: False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value)
                                                         else "inf" if value > 0 else "-inf")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(quote_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{quote_toml(str(k))} = {quote_toml(v)}"
                               for k, v in value.items()) + "}"
    raise Refused(f"TOML cannot carry a {type(value).__name__} value")


def quote_json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise Refused(f"JSON cannot carry this value ({exc})") from None


def quote_yaml(value: Any) -> str:
    """A YAML value in flow style: strings as JSON-style double-quoted scalars."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return _escaped(value, _YAML_ESCAPES, lambda ch: ch in _YAML_SPECIAL)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else (".nan" if math.isnan(value)
                                                         else ".inf" if value > 0 else "-.inf")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(quote_yaml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{quote_yaml(str(k))}: {quote_yaml(v)}"
                               for k, v in value.items()) + "}"
    raise Refused(f"YAML cannot carry a {type(value).__name__} value")


QUOTERS: dict[str, Callable[[Any], str]] = {
    "env": quote_env, "toml": quote_toml, "json": quote_json, "yaml": quote_yaml}
FORMATS = (*QUOTERS, "raw")


class _Output(Exception):
    def __init__(self, expression: str, lineno: int, reason: str):
        super().__init__(reason)
        self.expression, self.lineno, self.reason = expression, lineno, reason


class _QuoteOutputs(jinja2.ext.Extension):
    """Rewrites every `{{ expr }}` to `{{ (expr) | _deployer_quote("expr", line) }}`, so the
    quoting filter sees the whole expression's value and can name it when it refuses one."""

    def __init__(self, environment: jinja2.Environment):
        super().__init__(environment)
        self._pending = threading.local()  # expression texts of the template being compiled

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        texts, current = [], None
        for _, kind, value in self.environment.lex(source, name, filename):
            if kind == "variable_begin":
                current = []
            elif kind == "variable_end" and current is not None:
                texts.append("".join(current).strip())
                current = None
            elif current is not None:
                current.append(value)
        self._pending.texts = iter(texts)
        return source

    def filter_stream(self, stream: TokenStream) -> Iterator[Token]:
        texts, line = getattr(self._pending, "texts", iter(())), 0
        for token in stream:
            if token.type == "variable_begin":
                line = token.lineno
                yield token
                yield Token(line, "lparen", "(")
            elif token.type == "variable_end":
                for kind, value in (("rparen", ")"), ("pipe", "|"), ("name", _QUOTE_FILTER),
                                    ("lparen", "("), ("string", next(texts, "?")),
                                    ("comma", ","), ("integer", line), ("rparen", ")")):
                    yield Token(token.lineno, kind, value)
                yield token
            else:
                yield token


def _environment(fmt: str) -> jinja2.Environment:
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701  # renders config files, never HTML; quoting is per format
        extensions=[_QuoteOutputs] if fmt != "raw" else [],
    )
    if fmt != "raw":
        quote = QUOTERS[fmt]

        def quote_output(value: Any, expression: str, lineno: int) -> str:
            if isinstance(value, jinja2.Undefined):
                str(value)  # StrictUndefined raises, naming the variable
            try:
                return quote(value)
            except Refused as exc:
                raise _Output(expression, lineno, str(exc)) from None

        env.filters[_QUOTE_FILTER] = quote_output
    return env


_ENVS = {fmt: _environment(fmt) for fmt in FORMATS}


@functools.lru_cache(maxsize=256)
def _compile(source: str, fmt: str) -> jinja2.Template:
    """Compiled once per distinct source and format: a fleet renders the same templates for
    every host, and compiling costs far more than rendering."""
    return _ENVS[fmt].from_string(source)


def render_string(source: str, context: Mapping[str, Any], *, name: str = "<template>",
                  fmt: str = "raw") -> str:
    """Render `source` as a file of format `fmt`; an undefined name, or a value the format
    cannot carry, raises ConfigError naming the template and the variable.

    >>> render_string("key = {{ k }}", {"k": "v"})
    'key = v'
    >>> render_string("KEY={{ k }}", {"k": "a$b"}, fmt="env")
    'KEY="a\\\\$b"'
    """
    if fmt not in _ENVS:
        raise ConfigError(f"{name}: unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    try:
        return _compile(source, fmt).render(**context)
    except jinja2.UndefinedError as exc:
        raise ConfigError(f"{name}: {exc.message}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{name}:{exc.lineno}: template syntax error: {exc.message}") from None
    except _Output as exc:
        raise ConfigError(f"{name}:{exc.lineno}: {{{{ {exc.expression} }}}}: {exc.reason}"
                          f" (format {fmt})") from None


def render_file(path: Path, context: Mapping[str, Any], fmt: str = "raw") -> str:
    return render_string(read_text(path), context, name=str(path), fmt=fmt)
