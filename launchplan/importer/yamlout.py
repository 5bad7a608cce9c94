"""A small YAML writer that keeps comments: PyYAML can parse comments but never writes them.

The document is plain data (mappings, lists, scalars); comments are attached by document path,
as lines above a key or list item, or at the end of a key's line. Scalars are written plain
when YAML reads them back as the same string, else as JSON strings (valid YAML).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

Path_ = tuple[Any, ...]
_PLAIN = re.compile(r"[A-Za-z0-9_./~@+-][A-Za-z0-9_./~@+ -]*\Z")
INDENT = "  "


@dataclass
class Note:
    above: list[str] = field(default_factory=list)
    trailing: str | None = None


@dataclass
class Comments:
    notes: dict[Path_, Note] = field(default_factory=dict)

    def above(self, path: Path_, text: str) -> None:
        self.notes.setdefault(tuple(path), Note()).above.append(text)

    def trailing(self, path: Path_, text: str) -> None:
        self.notes.setdefault(tuple(path), Note()).trailing = text

    def get(self, path: Path_) -> Note:
        return self.notes.get(tuple(path), Note())


def scalar(value: Any) -> str:
    """One scalar as YAML text that reads back as `value`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.match(text) and not text.endswith(" ") and yaml.safe_load(text) == text:
        return text
    return json.dumps(text, ensure_ascii=False)


def dump(data: Mapping[str, Any], comments: Comments, header: list[str]) -> str:
    """`data` as YAML, with the header comment lines first."""
    lines = [_comment("", text) for text in header]
    _mapping(data, (), 0, comments, lines)
    return "\n".join(lines) + "\n"


def _comment(indent: str, text: str) -> str:
    return f"{indent}# {text}".rstrip() if text else f"{indent}#"


def _trailing(note: Note) -> str:
    return f"  # {note.trailing}" if note.trailing else ""


def _mapping(data: Mapping[str, Any], path: Path_, depth: int, comments: Comments,
             lines: list[str], first_prefix: str | None = None) -> None:
    indent = INDENT * depth
    for i, (key, value) in enumerate(data.items()):
        here = (*path, key)
        note = comments.get(here)
        prefix = first_prefix if (i == 0 and first_prefix is not None) else indent
        lines.extend(_comment(indent, text) for text in note.above)
        head = f"{prefix}{scalar(key)}:"
        if isinstance(value, Mapping) and value:
            lines.append(head + _trailing(note))
            _mapping(value, here, depth + 1, comments, lines)
        elif isinstance(value, list) and value and any(isinstance(v, Mapping) for v in value):
            lines.append(head + _trailing(note))
            _items(value, here, depth + 1, comments, lines)
        else:
            lines.append(f"{head} {_flow(value)}{_trailing(note)}")


def _items(items: list[Any], path: Path_, depth: int, comments: Comments,
           lines: list[str]) -> None:
    indent = INDENT * depth
    for i, item in enumerate(items):
        note = comments.get((*path, i))
        lines.extend(_comment(indent, text) for text in note.above)
        if isinstance(item, Mapping) and item:
            _mapping(item, (*path, i), depth + 1, comments, lines, first_prefix=indent + "- ")
        else:
            lines.append(f"{indent}- {_flow(item)}{_trailing(note)}")


def _flow(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{scalar(k)}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return scalar(value)
