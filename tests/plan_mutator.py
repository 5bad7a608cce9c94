"""A seeded mutator of plans: the shipped plans made hostile or broken, for the fuzz test and
bench/fuzz_validate.py.

Each mutant is one of the shipped plans with one to three mutations: text damage (a flipped
byte, a line lost, doubled or shifted, a control character, a cut), a value replaced by a
hostile one (huge counts and numbers, templates that try to exhaust time or memory, bad tags,
long strings), or a hostile document appended (an alias bomb, deep nesting).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEEDS = sorted((REPO / "plans").glob("*.yml")) + sorted(
    (REPO / "tests" / "integration" / "plans").glob("*.yml"))

HOSTILE_VALUES = (
    "1000000000000000000", "-1", "0", "1e999", "-1e999", ".nan", "!!int 0x7fffz", "!!float x",
    "!!binary AAAA", "!!python/object:os.system x", "!!set {a}", "~", "[]", "{}", "[[[[[[]]]]]]",
    "'{{ 10**10**10 }}'", "'{{ 10**10**10**10 }}'", "\"{{ 'x' * 100000000 }}\"",
    "'{{ (2**64) ** 100000 }}'", "'{{ vars.nope }}'", "'{{ x|nosuchfilter }}'",
    "'{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}'",
    "\"{{ ('x' * 1000000)|wordwrap(1) }}\"", "\"{{ 'x'|center(10**9) }}\"",
    "\"{{ '%0999999999d' % 1 }}\"", "\"{{ ''.__class__.__mro__[1].__subclasses__() }}\"",
    "\"{{ range(100000)|join('x' * 1000000) }}\"", "'{{ services.nothing.outputs.x }}'",
    "'{{ lipsum(1000000) }}'", "'{{ env(\"NO_SUCH_VARIABLE_X\") }}'", "'{{'", "'{% if %}'",
    "\"{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s }}\"",
    "'{{ range(10**9)|list }}'", "'{{ 2**4096 * 2**4096 }}'", "'{{ \"0x1F\" }}'",
)


def alias_bomb(depth: int = 9) -> str:
    lines = ['lol0: &lol0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, depth + 1):
        refs = ",".join([f"*lol{i - 1}"] * 9)
        lines.append(f"lol{i}: &lol{i} [{refs}]")
    return "\n".join(lines) + "\n"


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True) or [""]


def _flip_byte(rng: random.Random, text: str) -> str:
    if not text:
        return text
    i = rng.randrange(len(text))
    return text[:i] + chr(rng.choice([0, 7, 9, 10, 32, 34, 38, 39, 42, 58, 45, 91, 123, 0x85,
                                      0xFEFF, rng.randrange(32, 127)])) + text[i + 1:]


def _lose_line(rng: random.Random, text: str) -> str:
    lines = _lines(text)
    del lines[rng.randrange(len(lines))]
    return "".join(lines)


def _double_line(rng: random.Random, text: str) -> str:
    lines = _lines(text)
    i = rng.randrange(len(lines))
    lines.insert(i, lines[i])
    return "".join(lines)


def _shift_line(rng: random.Random, text: str) -> str:
    lines = _lines(text)
    i = rng.randrange(len(lines))
    lines[i] = rng.choice(["  ", "", "\t", "    - "]) + lines[i].lstrip(" ")
    return "".join(lines)


def _cut(rng: random.Random, text: str) -> str:
    return text[: rng.randrange(len(text) + 1)]


_SCALAR = re.compile(r"(:\s+)([^\s#][^\n#]*)$", re.M)


def _hostile_value(rng: random.Random, text: str) -> str:
    spots = list(_SCALAR.finditer(text))
    if not spots:
        return text
    spot = rng.choice(spots)
    value = rng.choice(HOSTILE_VALUES)
    return text[: spot.start(2)] + value + text[spot.end(2):]


def _hostile_count(rng: random.Random, text: str) -> str:
    count = rng.choice(["1000000000000000000", "'{{ vars.n }}'", "1001", "10000", "-5",
                        "'{{ 10**30 }}'", "2.5", "true"])
    return re.sub(r"(\n(\s+)services:\n\s+)(\w+):\n", lambda m: f"{m.group(1)}{m.group(3)}:\n"
                  f"{m.group(2)}    count: {count}\n", text, count=1)


def _long_string(rng: random.Random, text: str) -> str:
    spots = list(_SCALAR.finditer(text))
    if not spots:
        return text
    spot = rng.choice(spots)
    return text[: spot.start(2)] + "x" * rng.choice([1000, 100_000, 2_000_000]) + text[spot.end(2):]


def _append(rng: random.Random, text: str) -> str:
    tail = rng.choice([
        alias_bomb(),
        "deep: " + "[" * 5000 + "]" * 5000 + "\n",
        "deep: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
        "".join(f"{'  ' * i}k{i}:\n" for i in range(300)),
        "variables: {n: 1000000000}\n",
        "levels: " + "[" * 200 + "\n",
        "\x00\n",
        "? [a, b]\n: c\n",
        "<<: *nowhere\n",
    ])
    return text.rstrip("\n") + "\n" + tail


MUTATIONS: tuple[Callable[[random.Random, str], str], ...] = (
    _flip_byte, _lose_line, _double_line, _shift_line, _cut, _hostile_value, _hostile_value,
    _hostile_count, _long_string, _append,
)


def mutate(rng: random.Random, text: str) -> str:
    """One mutant of `text`: one to three mutations."""
    for _ in range(rng.randint(1, 3)):
        text = rng.choice(MUTATIONS)(rng, text)
    return text


def mutants(seed: int, count: int) -> list[tuple[Path, str]]:
    """`count` mutants (the seed plan each came from, its text), the same for the same seed."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        source = rng.choice(SEEDS)
        out.append((source, mutate(rng, source.read_text(encoding="utf-8"))))
    return out


def stage(source: Path, text: str, where: Path, name: str) -> Path:
    """Write a mutant into `where` beside links to its seed plan's files (scripts, data)."""
    for entry in source.parent.iterdir():
        link = where / entry.name
        if entry.suffix != ".yml" and not link.exists():
            link.symlink_to(entry)
    path = where / name
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    return path
