"""Hostile plans: every budget of plan/budgets.py refuses with FILE:LINE and exit 2, never a
traceback, a hang or a machine out of memory; every problem is reported, not only the first."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest

from launchplan.cli.main import cli
from launchplan.cli.output import run_cli
from launchplan.errors import EXIT_USAGE, PlanError, PlanErrors
from launchplan.plan import budgets, load_plan, render_service
from tests.plan_mutator import alias_bomb, mutants, stage


def plan_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "plan.yml"
    path.write_text(textwrap.dedent(body))
    return path


def one_service(tmp_path: Path, service: str, variables: str = "{}") -> Path:
    return plan_file(tmp_path, f"""\
        plan: hostile
        variables: {variables}
        levels:
          - services:
              db:
                {service}
        """)


def validate(path: Path, **kwargs: object) -> PlanError:
    """load_plan + render of every service, as `cei validate` does; the error it raises."""
    with pytest.raises(PlanError) as info:
        plan = load_plan(path, **kwargs)  # type: ignore[arg-type]
        for decl in plan.services():
            render_service(plan, decl.name, plan.name)
    assert info.value.exit_code == EXIT_USAGE
    return info.value


def test_an_alias_bomb_is_refused_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "plan.yml"
    path.write_text("plan: bomb\n" + alias_bomb() + "levels: [{services: {a: {}}}]\n")
    err = validate(path)
    assert f"more than {budgets.YAML_VALUES:,} values" in str(err)
    assert err.file == str(path) and err.line is not None and err.line > 1


@pytest.mark.parametrize(("text", "words", "line"), [
    ("plan: x\nlevels: " + "[" * 5000 + "]" * 5000 + "\n", "nest deeper than", 2),
    ("plan: x\nvariables: {a: !!int 0x7fffz}\n", "cannot read '0x7fffz' as int", 2),
    ("plan: x\nvariables: {a: 1}\nlevels: \x00\n", "character #x0000", 3),
    ("plan: x\n\x07levels: []\n", "character #x0007", 2),
])
def test_yaml_that_used_to_be_a_traceback(tmp_path: Path, text: str, words: str,
                                           line: int) -> None:
    path = tmp_path / "plan.yml"
    path.write_text(text)
    err = validate(path)
    assert words in str(err) and err.line == line


def test_a_plan_file_past_its_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plan.yml"
    path.write_text("plan: x\n# " + "x" * budgets.PLAN_BYTES + "\n")
    assert "larger than" in str(validate(path))


@pytest.mark.parametrize("count", ["1000000000000000000", "1001"])
def test_a_huge_count_is_refused_by_the_schema(tmp_path: Path, count: str) -> None:
    err = validate(one_service(tmp_path, f"count: {count}"))
    assert "count must be an integer from 1 to 1000" in str(err) and err.line == 6


def test_a_count_template_fed_a_huge_variable_is_refused(tmp_path: Path) -> None:
    path = one_service(tmp_path, "count: '{{ vars.n }}'", "{n: 1}")
    err = validate(path, overrides={"n": "1000000000"})
    assert "count is 1,000,000,000, more than the 1000 nodes a service may have" in str(err)


def test_the_plan_total_of_nodes_is_bounded(tmp_path: Path) -> None:
    services = "".join(f"      s{i}: {{count: 1000}}\n" for i in range(11))
    path = plan_file(tmp_path, "plan: many\nlevels:\n  - services:\n" + services)
    assert "11,000 nodes, more than the 10,000" in str(validate(path))


@pytest.mark.parametrize(("template", "words"), [
    ("{{ 10**10**10**10**10 }}", "integer of more than 4096 bits"),
    ("{{ (2**64) ** 100000 }}", "integer of more than 4096 bits"),
    ("{{ 'x' * 100000000 }}", "exceeds the template output budget"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     "loops ran more than 1,000,000 times"),
    ("{{ ('x' * 1000000)|wordwrap(1) }}", "wordwrap accepts at most"),
    ("{{ 'x'|center(10**9) }}", "larger than the template output budget"),
    ("{{ '%0999999999d' % 1 }}", "format width"),
    ("{{ range(100000)|join('x' * 1000000) }}", "join would make a text larger"),
    ("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
     "{% endfor %}{{ ns.s }}", "larger than 1,048,576"),
    ("{{ x|nosuchfilter }}", "No filter named 'nosuchfilter'"),
    ("{{ lipsum(1000000) }}", "unknown name 'lipsum'"),
])
def test_templates_that_would_exhaust_the_machine_are_refused(
        tmp_path: Path, template: str, words: str) -> None:
    path = one_service(tmp_path, f"config: {{big: \"{template}\"}}")
    err = validate(path)
    assert words in str(err), str(err)
    assert err.line == 6


@pytest.mark.parametrize("service", ["count: '{{ x|nosuchfilter }}'",
                                     "config: {a: '{{ 1|nosuchfilter }}'}"])
def test_an_unknown_filter_is_a_plan_error_wherever_it_is(tmp_path: Path, service: str) -> None:
    err = validate(one_service(tmp_path, service))
    assert "template error: No filter named 'nosuchfilter'" in str(err) and err.line == 6


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path) -> None:
    path = plan_file(tmp_path, """\
        plan: many
        levels:
          - services:
              a: {count: 0}
              b: {imge: x}
              c: {config: {x: "{{ vars.nope }}"}}
              d: {config: {x: "{{ services.a.outputs.x }}"}}
        """)
    err = validate(path)
    assert isinstance(err, PlanErrors) and err.total == 2
    lines = str(err).splitlines()
    assert lines[0].startswith(f"{path}:4:") and "count" in lines[0]
    assert lines[1].startswith(f"{path}:5:") and "unknown key 'imge'" in lines[1]
    path.write_text(path.read_text().replace("{count: 0}", "{}").replace("imge", "image"))
    err = validate(path)
    assert isinstance(err, PlanErrors) and err.total == 3
    assert [line.split(":")[1] for line in str(err).splitlines()] == ["5", "6", "7"]


def test_errors_are_capped_and_counted(tmp_path: Path) -> None:
    services = "".join(f"      s{i}: {{imge: x}}\n" for i in range(30))
    err = validate(plan_file(tmp_path, "plan: many\nlevels:\n  - services:\n" + services))
    assert isinstance(err, PlanErrors) and err.total == 30
    lines = str(err).splitlines()
    assert len(lines) == budgets.ERRORS_SHOWN + 1 and lines[-1] == "... and 10 more errors"


def test_a_huge_value_is_not_echoed_in_full(tmp_path: Path) -> None:
    err = validate(one_service(tmp_path, "count: " + "x" * 100_000))
    assert len(str(err)) < 300 and "(100,002 characters)" in str(err)


def test_cei_validate_prints_each_problem_on_its_own_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    services = "".join(f"      s{i}: {{imge: x}}\n" for i in range(3))
    path = plan_file(tmp_path, "plan: many\nlevels:\n  - services:\n" + services)
    monkeypatch.setattr("sys.argv", ["cei", "validate", str(path)])
    assert run_cli(cli) == EXIT_USAGE
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[2] for line in err] == ["4", "5", "6"]
    assert all(line.startswith("error: ") for line in err)


def test_fuzz_mutated_shipped_plans_never_give_a_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A seeded sample of the campaign of bench/fuzz_validate.py: `cei validate` of each
    mutant exits 0 or 2, never with an exception escaping."""
    codes = []
    for i, (source, text) in enumerate(mutants(seed=random.Random(10).randrange(1000),
                                               count=150)):
        where = tmp_path / source.parent.name
        where.mkdir(exist_ok=True)
        path = stage(source, text, where, f"mutant{i}.yml")
        monkeypatch.setattr("sys.argv", ["cei", "validate", str(path)])
        codes.append(run_cli(cli))
        capsys.readouterr()
    assert set(codes) <= {0, EXIT_USAGE}
    assert codes.count(EXIT_USAGE) > 100
