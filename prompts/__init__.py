"""The judge's prompt templates, kept as Jinja2 files beside this module.

Templates are looked up by name (``pairwise``, ``pointwise``, ``image_pairwise``, ``image_pointwise``, ``system``)
or given as a path to a user's own ``.jinja`` file.  Rendering is strict: a variable a template uses but the caller
did not pass is an error, not an empty string, so a typo in a custom template fails loudly.

    >>> from prompts import render
    >>> print(render("pointwise", question="What colour is the ball?", response="Red."))

This package depends on nothing else in the project; ``critic`` builds on it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2

TEMPLATE_DIR = Path(__file__).resolve().parent

#: Names of the bundled templates (file stem → what it is for).
BUILTIN_TEMPLATES: dict[str, str] = {
    "system": "system message: the judge's role, rubric and output format",
    "compact_system": "short system message for small judges trained with this project (format learned, not told)",
    "pairwise": "two text responses to one question about images or a video",
    "pointwise": "one text response to one question about images or a video",
    "image_pairwise": "two generated images for one text prompt (text-to-image assessment)",
    "image_pointwise": "one generated image for one text prompt",
}


@functools.lru_cache(maxsize=None)
def _environment(directory: str) -> jinja2.Environment:
    # keep_trailing_newline: templates end with a newline that belongs to the rendered text.
    # No autoescape: the output is a model prompt, not HTML; untrusted text is neutralised by the caller
    # (critic.prompting) before it gets here.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def load_template(name_or_path: str | Path) -> jinja2.Template:
    """Return a compiled template: a bundled one by name, or a user's ``.jinja`` file by path."""
    path = Path(name_or_path)
    if path.suffix == ".jinja" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"prompt template {str(path)!r} does not exist")
        return _environment(str(path.resolve().parent)).get_template(path.name)
    name = str(name_or_path)
    if name not in BUILTIN_TEMPLATES:
        known = ", ".join(sorted(BUILTIN_TEMPLATES))
        raise KeyError(f"unknown prompt template {name!r}; bundled templates are: {known}")
    return _environment(str(TEMPLATE_DIR)).get_template(f"{name}.jinja")


def render(name_or_path: str | Path, /, **context: Any) -> str:
    """Render a template with ``context``; surrounding blank lines are stripped."""
    return load_template(name_or_path).render(**context).strip("\n")
