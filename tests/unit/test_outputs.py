"""Node outputs are untrusted data: bounded in size and depth, and never re-typed by templates."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from launchplan.levels.outputs import OutputsRefused, parse_outputs
from launchplan.plan import budgets, load_plan, render_service
from launchplan.plan.model import NodeView, ServiceView


def test_outputs_past_the_limit_are_refused() -> None:
    big = json.dumps({"blob": "x" * budgets.OUTPUT_BYTES}).encode()
    with pytest.raises(OutputsRefused, match="more than 1,048,576 bytes"):
        parse_outputs(big[: budgets.OUTPUT_BYTES + 1])
    assert parse_outputs(b'{"a": "' + b"x" * 100 + b'"}', limit=200) == {"a": "x" * 100}
    with pytest.raises(OutputsRefused, match="more than 50 bytes"):
        parse_outputs(b'{"a": "' + b"x" * 100 + b'"}', limit=50)


@pytest.mark.parametrize("depth", [budgets.OUTPUT_DEPTH + 1, 100_000])
def test_deep_outputs_are_refused_without_a_recursion_error(depth: int) -> None:
    doc = '{"a": ' + "[" * depth + "]" * depth + "}"
    with pytest.raises(OutputsRefused, match="nest deeper than 32 levels"):
        parse_outputs(doc.encode())


@pytest.mark.parametrize("doc", [b'{"a": 1e999}', b'{"a": NaN}', b'{"a": [-Infinity]}'])
def test_numbers_json_cannot_carry_are_refused(doc: bytes) -> None:
    with pytest.raises(OutputsRefused):
        parse_outputs(doc)


def test_usable_outputs_pass() -> None:
    assert parse_outputs(b'{"port": 5432, "nested": {"a": [1, 2.5, "x"]}}') == {
        "port": 5432, "nested": {"a": [1, 2.5, "x"]}}
    assert parse_outputs(None) == {} and parse_outputs(b"  \n") == {}
    with pytest.raises(OutputsRefused, match="one JSON object"):
        parse_outputs(b"[1, 2]")


def test_output_strings_keep_their_type_in_later_templates(tmp_path: Path) -> None:
    path = tmp_path / "plan.yml"
    path.write_text(textwrap.dedent("""\
        plan: types
        variables: {n: 1}
        levels:
          - services:
              db: {}
          - services:
              web:
                config:
                  hex: "{{ services.db.outputs.hex }}"
                  truth: "{{ services.db.outputs.yes }}"
                  none: "{{ services.db.outputs.none }}"
                  inf: "{{ services.db.outputs.inf }}"
                  port: "{{ services.db.outputs.port }}"
                  lower: "{{ services.db.outputs.hex|lower }}"
                  count: "{{ services.db.count }}"
                  n: "{{ vars.n }}"
                  vars_number: "{{ vars.text }}"
        """))
    plan = load_plan(path, overrides={"text": "0x1F"})
    outputs = {"hex": "0x1F", "yes": "True", "none": "None", "inf": "-1e999", "port": 5432}
    views = {"db": ServiceView("db", (NodeView("127.0.0.5", "db-0", outputs),))}
    (web,) = render_service(plan, "web", "r1", views)
    assert web.config == {"hex": "0x1F", "truth": "True", "none": "None", "inf": "-1e999",
                          "port": 5432, "lower": "0x1f", "count": 1, "n": 1, "vars_number": 31}
    json.dumps(web.config, allow_nan=False)


def test_a_variable_that_reads_as_infinity_stays_text(tmp_path: Path) -> None:
    path = tmp_path / "plan.yml"
    path.write_text('plan: inf\nlevels:\n  - services:\n      a: {config: {x: "{{ vars.x }}"}}\n')
    (node,) = render_service(load_plan(path, overrides={"x": "-1e999"}), "a", "r1")
    assert node.config == {"x": "-1e999"}


def test_nested_outputs_have_placeholders_before_launch(tmp_path: Path) -> None:
    """validate (and launch, before it creates anything) renders nested outputs too."""
    path = tmp_path / "plan.yml"
    path.write_text(textwrap.dedent("""\
        plan: nested
        levels:
          - services:
              db: {}
          - services:
              web:
                config:
                  word: "{{ services.db.outputs.config.word }}"
                  first: "{{ services.db.nodes[0].outputs.list[0] }}"
                  line: "port {{ services.db.outputs.ports.http }}"
        """))
    (web,) = render_service(load_plan(path), "web", "r1")
    assert web.config == {"word": "<db.outputs.config.word>", "first": "<db/0.outputs.list.0>",
                          "line": "port <db.outputs.ports.http>"}
