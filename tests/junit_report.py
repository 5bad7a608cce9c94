"""Reading cei's JUnit reports in tests: libxml2 (lxml) parses and validates each one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lxml import etree

SCHEMA = Path(__file__).parent / "data" / "junit.xsd"


@dataclass(frozen=True)
class TestCase:
    suite: str
    name: str
    classname: str
    time: float
    outcome: str  # passed | failure | error | skipped
    type: str
    message: str
    text: str


def read_report(path: Path) -> list[TestCase]:
    """The cases of the report at `path`, after checking it against tests/data/junit.xsd and
    checking that every count it states matches the cases it holds."""
    schema = etree.XMLSchema(etree.parse(str(SCHEMA)))
    document = etree.parse(str(path))  # raises on anything that is not well-formed XML
    assert schema.validate(document), schema.error_log
    root = document.getroot()
    cases: list[TestCase] = []
    for suite in root.iterfind("testsuite"):
        found = [_case(suite.get("name"), case) for case in suite.iterfind("testcase")]
        assert int(suite.get("tests")) == len(found)
        for outcome in ("failure", "error", "skipped"):
            assert int(suite.get(outcome + ("s" if outcome != "skipped" else ""), 0)) == sum(
                1 for c in found if c.outcome == outcome), (suite.get("name"), outcome)
        cases.extend(found)
    assert int(root.get("tests")) == len(cases)
    assert int(root.get("failures")) == sum(1 for c in cases if c.outcome == "failure")
    assert int(root.get("errors")) == sum(1 for c in cases if c.outcome == "error")
    return cases


def _case(suite: str, element: etree._Element) -> TestCase:
    outcome, kind, message, text = "passed", "", "", ""
    for name in ("failure", "error", "skipped"):
        found = element.find(name)
        if found is not None:
            outcome, kind = name, found.get("type", "")
            message, text = found.get("message", ""), found.text or ""
    return TestCase(suite, element.get("name"), element.get("classname"),
                    float(element.get("time")), outcome, kind, message, text)


def by_name(cases: list[TestCase]) -> dict[str, TestCase]:
    return {c.name: c for c in cases}
