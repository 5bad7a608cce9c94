"""load_plan on valid plans: structure, defaults, variables, locations, the shipped schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from launchplan.errors import EXIT_USAGE, PlanError, UsageError
from launchplan.plan import SCHEMA_PATH, load_plan, parse_var
from launchplan.plan.yamlsrc import parse_yaml

PLANS = Path(__file__).parent / "plans"
FULL = PLANS / "full.yml"


def test_full_plan_structure() -> None:
    plan = load_plan(FULL)
    assert plan.name == "full-demo"
    assert plan.path == FULL
    assert plan.base_dir == PLANS.resolve()
    assert [(lvl.index, lvl.name) for lvl in plan.levels] == [
        (1, "base"),
        (2, "level2"),
        (3, "edge"),
    ]
    assert [s.name for s in plan.services()] == ["db", "cache", "web", "lb", "probe"]
    assert plan.service("web").level == 2
    assert plan.service("lb").level_name == "edge"


def test_implicit_clouds_are_included() -> None:
    plan = load_plan(FULL)
    assert plan.clouds["local"] == {"driver": "local"}
    assert plan.clouds["static"] == {"driver": "static"}
    assert plan.clouds["aws"]["region"] == "us-east-1"


def test_defaults_are_merged_and_remembered() -> None:
    plan = load_plan(FULL)
    db = plan.service("db")
    assert db.raw["cloud"] == "here"
    assert db.raw["timeout"] == 300
    assert db.from_defaults == frozenset({"cloud", "timeout"})
    cache = plan.service("cache")
    assert cache.raw["cloud"] == "aws"
    assert "cloud" not in cache.from_defaults


def test_locations_point_into_the_file() -> None:
    plan = load_plan(FULL)
    db = plan.service("db")
    lines = FULL.read_text().splitlines()
    assert db.location.file == str(FULL)
    assert lines[(db.location.line or 0) - 1].strip() == "db:"
    count = db.locations[("count",)]
    assert "count:" in lines[(count.line or 0) - 1]
    timeout = db.locations[("timeout",)]  # from defaults
    assert lines[(timeout.line or 0) - 1].strip() == "timeout: 300"


def test_plan_name_defaults_to_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "tiny-plan.yaml"
    path.write_text("levels:\n  - services:\n      one: {}\n")
    plan = load_plan(path)
    assert plan.name == "tiny-plan"
    assert plan.levels[0].name == "level1"
    assert plan.service("one").raw == {}


def test_variables_precedence(tmp_path: Path) -> None:
    second = tmp_path / "more.yml"
    second.write_text("replicas: 4\nextra: [1, 2]\n")
    plan = load_plan(FULL, {"greeting": "from-cli"}, [PLANS / "vars.yml", second])
    assert plan.variables["greeting"] == "from-cli"
    assert plan.variables["replicas"] == 4
    assert plan.variables["extra"] == [1, 2]
    assert plan.variables["port"] == 5432


def test_var_may_introduce_a_new_variable(tmp_path: Path) -> None:
    path = tmp_path / "p.yml"
    path.write_text("levels:\n  - services:\n      one: {config: {x: '{{ vars.new }}'}}\n")
    with pytest.raises(PlanError):
        load_plan(path)
    assert load_plan(path, {"new": "1"}).variables["new"] == "1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("nodes=3", ("nodes", "3")), ("a_b=x=y", ("a_b", "x=y")), ("_x=", ("_x", ""))],
)
def test_parse_var(text: str, expected: tuple[str, str]) -> None:
    assert parse_var(text) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("nodes", "expected KEY=VALUE"),
        ("=3", "name before '=' is missing"),
        ("1x=3", "must be letters"),
        ("a-b=3", "must be letters"),
    ],
)
def test_parse_var_rejects(text: str, words: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_var(text)
    assert info.value.exit_code == EXIT_USAGE
    assert words in str(info.value)
    assert text in str(info.value)


def test_yaml_source_map_keys_and_values() -> None:
    data, smap = parse_yaml("a:\n  b: [1, {c: x}]\n", "f.yml")
    assert data == {"a": {"b": [1, {"c": "x"}]}}
    assert smap.key(("a", "b")).line == 2
    assert smap.key(("a", "b")).column == 3
    assert smap.value(("a", "b", 1, "c")).line == 2
    assert smap.value(("a", "b", 1, "c")).column == 14
    assert smap.value(("a", "missing", "deeper")).line == 2  # nearest enclosing value


def test_yaml_merge_keys_and_anchors() -> None:
    data, _ = parse_yaml("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n", "f.yml")
    assert data["use"] == {"x": 1, "y": 3}


def test_yaml_dates_become_strings() -> None:
    data, _ = parse_yaml("when: 2024-05-01\n", "f.yml")
    assert data == {"when": "2024-05-01"}


def test_shipped_schema_is_a_valid_2020_12_schema() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"].endswith("2020-12/schema")
    assert schema["$id"]
    assert schema["title"]
    assert schema["properties"]["levels"]["description"]


def test_schema_accepts_rendered_example_and_rejects_unknown_key() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    good = {"levels": [{"services": {"db": {"count": 2, "boot": {"command": "true"}}}}]}
    assert not list(validator.iter_errors(good))
    bad = {"levels": [{"services": {"db": {"cuont": 2}}}]}
    assert list(validator.iter_errors(bad))
