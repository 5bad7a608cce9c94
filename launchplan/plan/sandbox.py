"""The Jinja2 sandbox with budgets: templates cannot exhaust time or memory.

Jinja's own sandbox stops unsafe attribute access but not `{{ 10**10**10 }}`, `{{ 'x' *
10**9 }}` or nested loops. Here every arithmetic operator, call, filter and loop turn goes
through a meter (budgets.py) that refuses before a value grows past its budget and stops a
rendering that runs too long. Operators and filters are never folded at parse time, so a
template only costs anything when it is rendered under a meter.
"""

from __future__ import annotations

import contextvars
import functools
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nativetypes import NativeCodeGenerator, NativeTemplate, native_concat
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg, pass_context

from . import budgets

LOOP_MARK = "__cei_loop__"
_FORMAT_WIDTH = re.compile(r"%[#0\- +]*(\d+)?(?:\.(\d+))?|\{[^{}]*?:[^{}]*?(\d+)")
_FORMAT_METHODS = frozenset({"format", "format_map"})
_SPREADING = frozenset({"indent", "tojson", "expandtabs"})


class BudgetExceeded(Exception):
    """A template went past one of its budgets."""


class Meter:
    """What one rendering has spent so far."""

    def __init__(self) -> None:
        self.started = time.thread_time()
        self.turns = 0

    def tick(self) -> None:
        if time.thread_time() - self.started > budgets.RENDER_SECONDS:
            raise BudgetExceeded(
                f"the template took more than {budgets.RENDER_SECONDS:g} s to render"
            )

    def turn(self) -> None:
        self.turns += 1
        if self.turns > budgets.LOOP_ITERATIONS:
            raise BudgetExceeded(
                f"the template's loops ran more than {budgets.LOOP_ITERATIONS:,} times"
            )
        if self.turns % 256 == 0:
            self.tick()


_METER: contextvars.ContextVar[Meter | None] = contextvars.ContextVar("cei_meter", default=None)


@contextmanager
def metered() -> Iterator[Meter]:
    """Render under a fresh meter (one per template rendering)."""
    meter = Meter()
    token = _METER.set(meter)
    try:
        yield meter
    finally:
        _METER.reset(token)


def _meter() -> Meter:
    meter = _METER.get()
    if meter is None:
        meter = Meter()
        _METER.set(meter)
    return meter


def size(value: Any, limit: int = budgets.TEMPLATE_OUTPUT) -> int:
    """A value's size for the output budget: characters of text, items of collections
    (nested ones counted through), bytes of integers; counting stops past `limit`."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 8
    if isinstance(value, Mapping):
        return _sized_items((*value.keys(), *value.values()), limit)
    if isinstance(value, (list, tuple, set, frozenset)):
        return _sized_items(value, limit)
    return 0


def _sized_items(items: Iterable[Any], limit: int) -> int:
    total = 0
    for item in items:
        total += 1 + size(item, limit - total)
        if total > limit:
            break
    return total


def check_size(value: Any, what: str = "a value") -> Any:
    """`value`, unless it is larger than the output budget."""
    if size(value) > budgets.TEMPLATE_OUTPUT:
        raise BudgetExceeded(
            f"the template made {what} larger than {budgets.TEMPLATE_OUTPUT:,} characters/items"
        )
    if isinstance(value, int) and value.bit_length() > budgets.INTEGER_BITS:
        raise BudgetExceeded(f"the template made an integer of more than "
                             f"{budgets.INTEGER_BITS} bits")
    return value


def _check_arguments(args: Iterable[Any]) -> None:
    for arg in args:
        number = isinstance(arg, int) and not isinstance(arg, bool)
        if number and abs(arg) > budgets.TEMPLATE_OUTPUT:
            raise BudgetExceeded(f"a number argument of {_short(arg)} is larger than the "
                                 f"template output budget ({budgets.TEMPLATE_OUTPUT:,})")


def _check_format(text: str, args: Iterable[Any]) -> None:
    """A format string whose widths would make a huge string is refused before it runs."""
    for match in _FORMAT_WIDTH.finditer(text):
        for width in match.groups():
            if width and (len(width) > 7 or int(width) > budgets.TEMPLATE_OUTPUT):
                raise BudgetExceeded(f"a format width of {_short(width)} is larger than the "
                                     f"template output budget ({budgets.TEMPLATE_OUTPUT:,})")
    _check_arguments(args)


def _check_replace(text: str, old: Any, new: Any) -> None:
    if not (isinstance(old, str) and isinstance(new, str)):
        return
    hits = len(text) + 1 if old == "" else text.count(old)
    if len(text) + hits * max(0, len(new) - len(old)) > budgets.TEMPLATE_OUTPUT:
        raise BudgetExceeded("replace would make a text larger than the template output "
                             f"budget ({budgets.TEMPLATE_OUTPUT:,})")


def _check_join(items: Any, separator: Any) -> None:
    joinable = isinstance(separator, str) and isinstance(items, (list, tuple, str, range))
    if joinable and size(items) + len(items) * len(separator) > budgets.TEMPLATE_OUTPUT:
        raise BudgetExceeded("join would make a text larger than the template output "
                             f"budget ({budgets.TEMPLATE_OUTPUT:,})")


def _check_spread(value: Any, args: Iterable[Any]) -> None:
    """indent, tojson and expandtabs repeat their number argument per line, level or tab."""
    width = max((a for a in args if isinstance(a, int) and not isinstance(a, bool)), default=0)
    text = isinstance(value, str)
    spots = 1 + (value.count("\n") + value.count("\t") if text else size(value))
    if spots * width > budgets.TEMPLATE_OUTPUT:
        raise BudgetExceeded(f"a width of {_short(width)} repeated {spots:,} times exceeds the "
                             f"template output budget ({budgets.TEMPLATE_OUTPUT:,})")


def _short(value: Any) -> str:
    text = str(value) if not isinstance(value, int) or value.bit_length() < 200 else "a huge number"
    return text if len(text) <= 20 else text[:17] + "..."


def _int_bits(value: Any) -> float:
    return float(abs(value).bit_length()) if isinstance(value, int) else 0.0


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse before an operator computes something past a budget."""
    if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 1:
        if abs(left) > 1 and right * math.log2(abs(left)) > budgets.INTEGER_BITS:
            raise BudgetExceeded(f"the template computes an integer of more than "
                                 f"{budgets.INTEGER_BITS} bits ({_short(left)} ** {_short(right)})")
    elif operator == "*":
        for seq, times in ((left, right), (right, left)):
            repeats = isinstance(times, int) and not isinstance(seq, int) and times > 1
            if repeats and size(seq) * times > budgets.TEMPLATE_OUTPUT:
                raise BudgetExceeded(
                    f"repeating a value {_short(times)} times exceeds the template output "
                    f"budget ({budgets.TEMPLATE_OUTPUT:,})")
        if _int_bits(left) + _int_bits(right) > budgets.INTEGER_BITS + 1:
            raise BudgetExceeded(f"the template computes an integer of more than "
                                 f"{budgets.INTEGER_BITS} bits")
    elif operator == "+" and not isinstance(left, int):
        if size(left) + size(right) > budgets.TEMPLATE_OUTPUT:
            raise BudgetExceeded(f"joining two values exceeds the template output budget "
                                 f"({budgets.TEMPLATE_OUTPUT:,})")
    elif operator == "%" and isinstance(left, str):
        _check_format(left, right if isinstance(right, (tuple, list)) else (right,))


def _budgeted_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` as a context filter (never folded at parse time) that checks its budgets."""
    pass_arg = _PassArg.from_obj(func)

    @pass_context
    @functools.wraps(func)
    def wrapper(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        _meter().tick()
        _check_arguments((*args, *kwargs.values()))
        if name == "wordwrap" and size(value) > budgets.WORDWRAP_INPUT:
            raise BudgetExceeded(f"wordwrap accepts at most {budgets.WORDWRAP_INPUT:,} "
                                 "characters")
        if name == "replace" and isinstance(value, str) and len(args) >= 2:
            _check_replace(value, args[0], args[1])
        if name == "join":
            _check_join(value, args[0] if args else kwargs.get("d", ""))
        if name == "format" and isinstance(value, str):
            _check_format(value, (*args, *kwargs.values()))
        if name in _SPREADING:
            _check_spread(value, (*args, *kwargs.values()))
        first: tuple[Any, ...] = ()
        if pass_arg is _PassArg.context:
            first = (context,)
        elif pass_arg is _PassArg.eval_context:
            first = (context.eval_ctx,)
        elif pass_arg is _PassArg.environment:
            first = (context.environment,)
        return check_size(func(*first, value, *args, **kwargs), f"a value (filter {name})")

    wrapper.__dict__.pop("jinja_pass_arg", None)
    wrapper.jinja_pass_arg = _PassArg.context  # type: ignore[attr-defined]
    return wrapper


def _counted(iterable: Iterable[Any]) -> Iterator[Any]:
    meter = _meter()
    for item in iterable:
        meter.turn()
        yield item


class _MeteredCodeGenerator(CodeGenerator):
    """Wraps every `for` loop's iterable in a metered one (the sandbox's `call` sees it), and
    checks the size of every `~` concatenation and every piece of output."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        counted = nodes.Call(nodes.Const(LOOP_MARK), [node.iter], [], None, None,
                             lineno=node.lineno)
        metered_node = nodes.For(node.target, counted, node.body, node.else_, node.test,
                                 node.recursive, lineno=node.lineno)
        super().visit_For(metered_node, frame)


    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked(")
        super().visit_Concat(node, frame)
        self.write(")")

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        self.write("environment.checked(")
        super()._output_child_pre(node, frame, finalize)

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        super()._output_child_post(node, frame, finalize)
        self.write(")")


class _MeteredNativeCodeGenerator(_MeteredCodeGenerator, NativeCodeGenerator):
    pass


class MeteredSandbox(ImmutableSandboxedEnvironment):
    """The sandbox every plan template runs in."""

    code_generator_class = _MeteredCodeGenerator
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    checked = staticmethod(check_size)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals.pop("lipsum", None)  # generates text by the megabyte on request
        self.filters = {name: _budgeted_filter(name, func) for name, func in self.filters.items()}

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _meter().tick()
        _check_binop(operator, left, right)
        return check_size(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any,
             **kwargs: Any) -> Any:
        if isinstance(__obj, str) and __obj == LOOP_MARK and len(args) == 1:
            return _counted(args[0])
        _meter().tick()
        target = getattr(__obj, "__wrapped__", __obj)
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            name = getattr(target, "__name__", "")
            if name in _FORMAT_METHODS:
                _check_format(owner, (*args, *kwargs.values()))
            elif name == "replace" and len(args) >= 2:
                _check_replace(owner, args[0], args[1])
            elif name in _SPREADING:
                _check_spread(owner, (*args, *kwargs.values()))
        _check_arguments((*args, *kwargs.values()))
        return check_size(
            ImmutableSandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs))


class MeteredNativeSandbox(MeteredSandbox):
    """The same sandbox, keeping a whole expression's native type."""

    code_generator_class = _MeteredNativeCodeGenerator
    concat = staticmethod(native_concat)  # type: ignore[assignment]
    template_class = NativeTemplate
