"""Launch plans: load and check a plan file, render its services into node specs.

Heavy libraries (jinja2, jsonschema) are imported here and nowhere above; the CLI imports this
package lazily, and Jinja2 (plan/engine.py) loads only with a plan's first template.
"""

from __future__ import annotations

from .loader import load_plan
from .refs import machine_problems
from .render import render_all, render_node, render_service
from .schema import SCHEMA_PATH
from .variables import parse_var

__all__ = [
    "SCHEMA_PATH", "load_plan", "machine_problems", "parse_var", "render_all", "render_node",
    "render_service",
]
