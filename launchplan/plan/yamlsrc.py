"""YAML loading that remembers where every key and value came from.

Plans are composed node by node (not constructed in one go) so that each mapping key and each
value keeps its file:line:column, duplicate keys are refused, and YAML errors become PlanError.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from launchplan.errors import PlanError

from . import budgets
from .model import SourceLocation

Path_ = tuple[Any, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_COLLECTION_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})


@dataclass
class SourceMap:
    """Locations of a document's values and keys, by their path (keys and list indexes)."""

    file: str
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def value(self, path: Path_) -> SourceLocation:
        """Location of the value at `path`, or of its nearest enclosing value."""
        path = tuple(path)
        while path and path not in self.values:
            path = path[:-1]
        line, column = self.values.get(path, (None, None))
        return SourceLocation(self.file, line, column)

    def key(self, path: Path_) -> SourceLocation:
        """Location of the mapping key that ends `path` (its value's location if none)."""
        where = self.keys.get(tuple(path))
        if where is None:
            return self.value(path)
        return SourceLocation(self.file, where[0], where[1])

    def error(self, message: str, path: Path_, *, at_key: bool = False) -> PlanError:
        loc = self.key(path) if at_key else self.value(path)
        return PlanError(message, loc.file, loc.line, loc.column)


def read_text(path: Path, what: str) -> str:
    """Read a UTF-8 file of at most budgets.PLAN_BYTES, or raise PlanError naming it."""
    try:
        with path.open("rb") as fh:
            data = fh.read(budgets.PLAN_BYTES + 1)
        if len(data) > budgets.PLAN_BYTES:
            raise PlanError(f"{what} is larger than {budgets.PLAN_BYTES:,} bytes", str(path))
        return data.decode("utf-8")
    except FileNotFoundError:
        raise PlanError(f"{what} not found", str(path)) from None
    except IsADirectoryError:
        raise PlanError(f"{what} is a directory, not a file", str(path)) from None
    except UnicodeDecodeError as exc:
        raise PlanError(f"{what} is not UTF-8 text ({exc.reason})", str(path)) from None
    except OSError as exc:
        raise PlanError(f"cannot read {what}: {exc.strerror or exc}", str(path)) from None


def load_yaml_file(path: Path, what: str = "plan") -> tuple[Any, SourceMap]:
    """Load one YAML document from `path` with its source map."""
    return parse_yaml(read_text(path, what), str(path))


def parse_yaml(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document; an empty document is None."""
    smap = SourceMap(file)
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, file) from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.reader.ReaderError as exc:
            raise _reader_error(exc, text, file) from None
        except yaml.MarkedYAMLError as exc:
            raise _yaml_error(exc, file) from None
        except yaml.YAMLError as exc:
            raise PlanError(f"invalid YAML: {exc}", file) from None
        if node is None:
            return None, smap
        return _Builder(loader, smap).build(node, ()), smap
    finally:
        loader.dispose()


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses nesting deeper than budgets.YAML_DEPTH while composing (the
    composer recurses once per level, so a deeper document would exhaust the stack)."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self.depth += 1
        try:
            if self.depth > budgets.YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.MarkedYAMLError(
                    problem=f"mappings and lists nest deeper than {budgets.YAML_DEPTH} levels",
                    problem_mark=mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _reader_error(exc: yaml.reader.ReaderError, text: str, file: str) -> PlanError:
    """A character YAML does not allow (NUL, most control characters), located."""
    position = min(exc.position, len(text))
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    code = exc.character if isinstance(exc.character, int) else ord(exc.character)
    return PlanError(f"YAML does not allow the character #x{code:04x} (a control character)",
                     file, line, column)


def _yaml_error(exc: yaml.MarkedYAMLError, file: str) -> PlanError:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "invalid YAML"
    if exc.context and exc.context_mark is not None and exc.problem_mark is not None:
        problem = f"{problem} ({exc.context} at line {exc.context_mark.line + 1})"
    elif exc.context:
        problem = f"{problem} ({exc.context})"
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    return PlanError(f"YAML syntax error: {problem}", file, line, column)


class _Builder:
    """Turns composed YAML nodes into plain values, filling the source map on the way."""

    def __init__(self, loader: yaml.SafeLoader, smap: SourceMap) -> None:
        self.loader = loader
        self.smap = smap
        self.active: set[int] = set()
        self.built = 0

    def _mark(self, node: yaml.Node) -> tuple[int, int]:
        return node.start_mark.line + 1, node.start_mark.column + 1

    def _error(self, message: str, node: yaml.Node) -> PlanError:
        line, column = self._mark(node)
        return PlanError(message, self.smap.file, line, column)

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.built += 1
        if self.built > budgets.YAML_VALUES:
            raise self._error(f"the document expands to more than {budgets.YAML_VALUES:,} "
                              "values (aliases count each time they are used)", node)
        self.smap.values[path] = self._mark(node)
        if id(node) in self.active:
            raise self._error("a YAML alias refers to itself (recursive data)", node)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.CollectionNode) and node.tag not in _COLLECTION_TAGS:
                raise self._error(f"unsupported YAML tag {node.tag}", node)
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            return self._scalar(node)
        finally:
            self.active.discard(id(node))

    def _scalar(self, node: yaml.Node) -> Any:
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            raise _yaml_error(exc, self.smap.file) from None
        except (ValueError, TypeError, OverflowError) as exc:
            raise self._error(f"cannot read {_clip(node.value)} as {node.tag.rsplit(':', 1)[-1]}"
                              f" ({type(exc).__name__})", node) from None
        if isinstance(value, (datetime.date, datetime.datetime)):
            return value.isoformat()
        if isinstance(value, (bytes, set)):
            raise self._error(f"unsupported YAML value of type {type(value).__name__}", node)
        return value

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        seen: dict[object, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self._key(key_node)
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise self._error(f"duplicate key '{key}' (first at line {first})", key_node)
            seen[key] = key_node
        try:
            self.loader.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            raise _yaml_error(exc, self.smap.file) from None
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node)
            key_path = (*path, key)
            self.smap.keys[key_path] = self._mark(key_node)
            out[key] = self.build(value_node, key_path)
        return out

    def _key(self, node: yaml.Node) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self._error("a mapping key must be a plain string", node)
        key = self._scalar(node)
        if not isinstance(key, str):
            raise self._error(
                f"mapping key {node.value!r} is read as {type(key).__name__}; quote it", node
            )
        return key



def _clip(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"
