"""Jinja2 rendering of `templates/`: StrictUndefined, HTML autoescaped, errors with file and line."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from .errors import UsageError

__all__ = ["render_template", "templates_dir"]


def templates_dir() -> Path:
    configured = os.environ.get("INDOSTAR_TEMPLATES_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parent.parent / "templates"


@functools.cache
def _environment(directory: str) -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        # HTML pages (*.html.j2) are autoescaped: inventory text on a page is never markup. Config files
        # (logrotate, nginx) are not HTML; the inventory types their values at load instead.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=True,
                                            default=False),
    )


def render_template(name: str, **variables: Any) -> str:
    import jinja2

    directory = templates_dir()
    try:
        return str(_environment(str(directory)).get_template(name).render(**variables))
    except jinja2.TemplateNotFound:
        raise UsageError(f"template {name!r} not found in {directory}",
                         hint="set INDOSTAR_TEMPLATES_DIR to the project's templates/") from None
    except jinja2.TemplateSyntaxError as exc:
        raise UsageError(f"{exc.filename or name}:{exc.lineno}: template syntax error: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise UsageError(f"template {name}: {exc.message}") from None
