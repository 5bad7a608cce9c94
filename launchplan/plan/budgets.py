"""The limits that keep a hostile or mistaken plan from exhausting the machine.

Each is documented in docs/plan-format.md ("Budgets"); a plan that exceeds one is refused with
a message naming the file and line, never a hang, a traceback or a machine out of memory.
"""

from __future__ import annotations

PLAN_BYTES = 1024 * 1024
"""Largest plan, vars file or user-data file read (bytes)."""

YAML_VALUES = 100_000
"""Most values one YAML document may expand to, counting each use of an alias again."""

YAML_DEPTH = 100
"""Deepest nesting of mappings and lists in a YAML document."""

NODES_PER_SERVICE = 1000
"""Largest `count` of one service (and the most hosts it may list)."""

NODES_PER_PLAN = 10_000
"""Most nodes all the services of a plan may have together."""

TEMPLATE_OUTPUT = 1024 * 1024
"""Largest string, list or output one template may produce (characters or items)."""

LOOP_ITERATIONS = 1_000_000
"""Most `for` loop iterations of one template rendering, nested loops counting every turn."""

INTEGER_BITS = 4096
"""Largest integer a template may compute (bits; about 1,233 decimal digits)."""

RENDER_SECONDS = 5.0
"""Longest one template may take to render (CPU time of the rendering thread)."""

WORDWRAP_INPUT = 64 * 1024
"""Longest text the `wordwrap` filter accepts (it is slow on long text)."""

OUTPUT_BYTES = 1024 * 1024
"""Default largest outputs document a boot program may write (a service's `output_limit`)."""

OUTPUT_DEPTH = 32
"""Deepest nesting of objects and lists in a node's outputs."""

ERRORS_SHOWN = 20
"""Most plan errors reported at once; the rest are counted."""
