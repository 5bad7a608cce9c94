"""What templates see and give: which values are templates, the names they read
(Namespace, Placeholders), the errors they raise, and the renderer (plan/engine.py, where
Jinja2 is), loaded the first time a value is a template.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from launchplan.suggest import did_you_mean

if TYPE_CHECKING:
    import jinja2

    from .engine import Templates

CLOUD_INIT_JINJA = "## template: jinja"


def is_template(value: object) -> bool:
    """True for a string that Jinja2 must render: one with "{{" or "{%" in it."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


class TemplateProblem(Exception):
    """A template could not be parsed or rendered; `line` is within the template."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class Namespace:
    """A read-only bag of names for templates: `ns.key` and `ns['key']`, nothing else.

    Unlike a dict, a key such as `items` or `keys` is never shadowed by a method, and a
    missing key is reported with the namespace's own label.
    """

    __slots__ = ("_data", "_label")

    def __init__(self, data: Mapping[str, Any], label: str) -> None:
        self._data = data
        self._label = label

    def _missing(self, key: object) -> jinja2.StrictUndefined:
        import jinja2  # loaded already: only a template reads a namespace

        hint = did_you_mean(key, self._data)
        return jinja2.StrictUndefined(hint=f"{self._label} has no '{key}'{hint}", name=str(key))

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        return self[key]

    def __getitem__(self, key: Any) -> Any:
        if key in self._data:
            return self._data[key]
        return self._missing(key)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<{self._label}>"


class Placeholder(str):
    """An output not known yet: it reads as "<label>", and what is inside it (an attribute or
    item, `outputs.config.port`) is a placeholder one level deeper, "<label.port>"."""

    __slots__ = ()

    def __getattr__(self, key: str) -> Placeholder:
        if key.startswith("_"):
            raise AttributeError(key)
        return self[key]

    def __getitem__(self, key: Any) -> Placeholder:
        return Placeholder(f"{str(self)[:-1]}.{key}>")


# How a placeholder reads once rendered: "<db.outputs.token>", "<db/0.address>", ...
_PLACEHOLDER = re.compile(r"<[A-Za-z0-9_][A-Za-z0-9_.-]*(/[0-9]+)?\.(outputs|address|hostname)"
                          r"(\.[^<>]*)?>")


def mentions_placeholder(value: Any) -> bool:
    """Whether a value rendered before launch holds something only the launch will know."""
    if isinstance(value, str):
        return _PLACEHOLDER.search(value) is not None
    if isinstance(value, Mapping):
        return any(mentions_placeholder(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(mentions_placeholder(v) for v in value)
    return False


class Placeholders(Namespace):
    """Outputs not known yet (validate/render before launch): every key is "<label.key>"."""

    __slots__ = ()

    def __init__(self, label: str) -> None:
        super().__init__({}, label)

    def __getitem__(self, key: Any) -> Any:
        return Placeholder(f"<{self._label}.{key}>")

    def __contains__(self, key: object) -> bool:
        return True


_NO_DEFAULT = object()


def env_lookup(name: str, default: Any = _NO_DEFAULT) -> Any:
    """The templates' env('NAME'[, default]): a missing variable without default is an error."""
    value = os.environ.get(str(name))
    if value is not None:
        return value
    if default is not _NO_DEFAULT:
        return default
    raise TemplateProblem(
        f"environment variable {name} is not set (or give a default: env('{name}', '...'))"
    )


def shared_templates() -> Templates:
    """The process-wide renderer (plan/engine.py), whose Jinja2 loads with the first
    template: a plan without one never loads it."""
    from .engine import shared_engine

    return shared_engine()


def to_plain(value: Any) -> Any:
    """Turn template namespaces in a rendered value into plain dicts and lists."""
    if isinstance(value, Placeholders):
        return f"<{value._label}>"
    if isinstance(value, Namespace):
        return {k: to_plain(value[k]) for k in value}
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def env_variable(source: Any) -> str | None:
    """NAME when `source` is exactly "{{ env('NAME') }}" (a default allowed), else None.

    The engine records these names (never the values) so that a later `cei terminate` can
    read a cloud's credentials from the same environment variables.
    """
    if not is_template(source):
        return None
    return shared_templates().env_variable(source)
