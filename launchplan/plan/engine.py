"""Jinja2 in a sandbox: the one place plan values and user-data files are rendered.

A value that is one whole expression ("{{ vars.nodes }}") keeps its native type; when it uses
only the plan's own literals and variables, a string result that reads as a Python literal (a
`--var nodes=3`) becomes that literal, but data from nodes (`services.X`) is never re-parsed:
an output "0x1F" stays a string. Mixed text renders to a string. Every template runs under the
budgets of sandbox.py. Every failure becomes TemplateProblem, which callers locate in the plan.

Loaded only through templates.shared_templates(), when a plan first holds a template.
"""

from __future__ import annotations

import ast as pyast
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError

from . import budgets
from .problems import clip
from .sandbox import BudgetExceeded, MeteredNativeSandbox, MeteredSandbox, metered, size
from .templates import TemplateProblem, env_lookup


class Templates:
    """Parses and renders template strings and files in the sandbox, caching compiled ones."""

    def __init__(self) -> None:
        options: dict[str, Any] = {
            "undefined": jinja2.StrictUndefined,
            "keep_trailing_newline": True,
            "autoescape": False,
        }
        self.text_env = MeteredSandbox(**options)
        self.native_env = MeteredNativeSandbox(**options)
        for environment in (self.text_env, self.native_env):
            environment.globals["env"] = env_lookup
        self._asts: dict[str, nodes.Template] = {}
        self._compiled: dict[tuple[bool, str], jinja2.Template] = {}

    def known_globals(self) -> frozenset[str]:
        return frozenset(self.text_env.globals)

    def parse(self, source: str) -> nodes.Template:
        """The template's AST; TemplateProblem for a syntax error."""
        ast = self._asts.get(source)
        if ast is None:
            try:
                ast = self.text_env.parse(source)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateProblem(f"template syntax error: {exc.message}", exc.lineno) from None
            self._asts[source] = ast
        return ast

    def undeclared(self, ast: nodes.Template) -> set[str]:
        """The names a parsed template uses without defining them; TemplateProblem for a
        template that cannot compile (an unknown filter or test)."""
        with _compiling():
            return meta.find_undeclared_variables(ast)

    def render(self, source: str, names: Mapping[str, Any], *, text: bool = False) -> Any:
        """Render one value: native for a whole expression unless `text`, else a string."""
        ast = self.parse(source)
        native = not text and _whole_expression(ast)
        key = (native, source)
        template = self._compiled.get(key)
        if template is None:
            environment = self.native_env if native else self.text_env
            with _compiling():
                template = environment.from_string(source)
            self._compiled[key] = template
        if not native:
            return _run(template, names, None)
        return _native(_run(template, names, None, joined=False), trusted=not _uses_nodes(ast))

    def calls_env(self, ast: nodes.Template) -> bool:
        """Whether the template calls env()."""
        return any(isinstance(call.node, nodes.Name) and call.node.name == "env"
                   for call in ast.find_all(nodes.Call))

    def name_line(self, ast: nodes.Template, name: str) -> int:
        """The line where the template first uses `name`."""
        return next(n.lineno for n in ast.find_all(nodes.Name) if n.name == name)

    def lookups(self, ast: nodes.Template) -> list[tuple[str, str, int]]:
        """(name, key, line) of each `name.key` or `name['key']` the template reads."""
        found = []
        for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
            assert isinstance(node, (nodes.Getattr, nodes.Getitem))
            key = _static_key(node)
            if isinstance(node.node, nodes.Name) and key is not None:
                found.append((node.node.name, key, node.lineno))
        return found

    def env_variable(self, source: str) -> str | None:
        """NAME when `source` is exactly "{{ env('NAME') }}" (a default allowed), else None."""
        try:
            body = self.parse(source).body
        except TemplateProblem:
            return None
        if len(body) != 1 or not isinstance(body[0], nodes.Output) or len(body[0].nodes) != 1:
            return None
        call = body[0].nodes[0]
        if not (isinstance(call, nodes.Call) and isinstance(call.node, nodes.Name)
                and call.node.name == "env" and call.args
                and isinstance(call.args[0], nodes.Const)
                and isinstance(call.args[0].value, str)):
            return None
        return call.args[0].value

    def render_file(self, path: Path, source: str, names: Mapping[str, Any]) -> str:
        """Render a template file; errors carry the line within that file."""
        self.parse(source)
        filename = str(path)
        with _compiling():
            code = self.text_env.compile(source, name=filename, filename=filename)
        template = self.text_env.template_class.from_code(
            self.text_env, code, self.text_env.make_globals(None)
        )
        return str(_run(template, names, filename))


@contextmanager
def _compiling() -> Iterator[None]:
    """A template that parses but cannot compile (an unknown filter or test) is a
    TemplateProblem at its line, whenever it is first compiled."""
    try:
        yield
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"template error: {exc.message}", exc.lineno) from None


@cache
def shared_engine() -> Templates:
    """The process-wide renderer (compiled templates are cached in it)."""
    return Templates()


def _whole_expression(ast: nodes.Template) -> bool:
    if len(ast.body) != 1 or not isinstance(ast.body[0], nodes.Output):
        return False
    parts = ast.body[0].nodes
    return len(parts) == 1 and not isinstance(parts[0], nodes.TemplateData)


def _uses_nodes(ast: nodes.Template) -> bool:
    """Whether a template reads data from nodes (services.X), which is never re-parsed."""
    return any(n.name == "services" for n in ast.find_all(nodes.Name))


def _native(chunks: list[Any], trusted: bool) -> Any:
    """A whole expression's value: its native type, or (when `trusted`, i.e. from the plan's
    own literals and variables) a string that reads as a finite Python literal parsed."""
    if not chunks:
        return None
    if len(chunks) == 1 and not isinstance(chunks[0], str):
        return chunks[0]
    text = "".join(str(chunk) for chunk in chunks)
    if not trusted:
        return text
    try:
        value = pyast.literal_eval(pyast.parse(text, mode="eval"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    if isinstance(value, float) and not math.isfinite(value):
        return text
    if isinstance(value, complex) or size(value) > budgets.TEMPLATE_OUTPUT:
        return text
    return value


def _run(template: jinja2.Template, names: Mapping[str, Any], filename: str | None,
         joined: bool = True) -> Any:
    """Render under a meter, counting output as it is made; `joined` False gives the chunks."""
    try:
        with metered():
            chunks = _chunks(template, names)
        if len(chunks) == 1 and isinstance(chunks[0], jinja2.Undefined):
            str(chunks[0])  # a StrictUndefined raises here, naming what was missing
        return "".join(str(chunk) for chunk in chunks) if joined else chunks
    except TemplateProblem as exc:
        exc.line = exc.line or _template_line(exc, filename)
        raise
    except BudgetExceeded as exc:
        message = f"over budget: {exc}"
        raise TemplateProblem(message, _template_line(exc, filename)) from None
    except jinja2.UndefinedError as exc:
        message = f"undefined in template: {exc.message}"
        raise TemplateProblem(message, _template_line(exc, filename)) from None
    except SecurityError as exc:
        message = f"refused by the template sandbox: {exc.message}"
        raise TemplateProblem(message, _template_line(exc, filename)) from None
    except jinja2.TemplateError as exc:
        raise TemplateProblem(f"template error: {exc}", _template_line(exc, filename)) from None
    except RecursionError:
        raise TemplateProblem("template failed: it nests or recurses too deeply") from None
    except Exception as exc:  # a filter or operator failed on the data: report, never crash
        message = f"template failed: {type(exc).__name__}: {clip(str(exc))}"
        raise TemplateProblem(message, _template_line(exc, filename)) from None


def _chunks(template: jinja2.Template, names: Mapping[str, Any]) -> list[Any]:
    """The template's output pieces, refused once they pass the output budget."""
    chunks: list[Any] = []
    total = 0
    try:
        for chunk in template.root_render_func(template.new_context(dict(names))):
            total += size(chunk) if not isinstance(chunk, jinja2.Undefined) else 0
            if total > budgets.TEMPLATE_OUTPUT:
                raise BudgetExceeded(
                    f"the template's output is larger than {budgets.TEMPLATE_OUTPUT:,} characters")
            chunks.append(chunk)
    except Exception:
        template.environment.handle_exception()
    return chunks


def _template_line(exc: BaseException, filename: str | None) -> int | None:
    """The line of `filename` (a rendered template file) where `exc` was raised."""
    if filename is None:
        return None
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _static_key(node: nodes.Getattr | nodes.Getitem) -> str | None:
    if isinstance(node, nodes.Getattr):
        return node.attr
    arg = node.arg
    if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
        return arg.value
    return None
