"""Jinja2 rendering with StrictUndefined: a missing variable is an error, never an empty string."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from deployer.errors import ConfigError

_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,  # noqa: S701  # renders config files and shell, never HTML
)


@functools.lru_cache(maxsize=256)
def _compile(source: str) -> jinja2.Template:
    """Compiled once per distinct source: a fleet renders the same templates for every host,
    and compiling costs far more than rendering."""
    return _ENV.from_string(source)


def render_string(source: str, context: Mapping[str, Any], *, name: str = "<template>") -> str:
    """Render `source`; an undefined name raises ConfigError naming the template and variable.

    >>> render_string("key = {{ k }}", {"k": "v"})
    'key = v'
    """
    try:
        return _compile(source).render(**context)
    except jinja2.UndefinedError as exc:
        raise ConfigError(f"{name}: {exc.message}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{name}:{exc.lineno}: template syntax error: {exc.message}") from None


def render_file(path: Path, context: Mapping[str, Any]) -> str:
    return render_string(path.read_text(encoding="utf-8"), context, name=str(path))
