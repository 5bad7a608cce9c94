"""JUnit XML reports, the format CI systems show in their test tabs (GitHub, GitLab, Jenkins).

The shape is the common one (Ant's, as Jenkins' junit-10 schema and Surefire write it):
<testsuites> of <testsuite>s of <testcase>s, each case with at most one <failure>, <error> or
<skipped> (its text the tail of the program's stderr), then <system-out>. Files are replaced
atomically, so a reader never sees half a report.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from launchplan.errors import UsageError

if TYPE_CHECKING:
    from launchplan.levels.nodehealth import NodeHealth

PASSED = "passed"
FAILURE = "failure"  # the thing tested failed (a program exited non-zero, a deadline passed)
ERROR = "error"  # it could not be tested to an end (interrupted, SSH failed, ...)
SKIPPED = "skipped"  # never tried: another node's failure stopped the level first

# Characters XML 1.0 cannot carry (terminal escapes in a program's stderr, say).
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass
class Case:
    name: str
    classname: str
    duration: float = 0.0
    result: str = PASSED
    kind: str = ""  # the type of a failure or error
    message: str = ""
    stderr: str = ""  # the text of a failure or error
    stdout: str = ""


@dataclass
class Suite:
    name: str
    started: float | None = None  # epoch seconds
    duration: float | None = None  # wall time; None: the sum of its cases
    cases: list[Case] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)

    def count(self, result: str) -> int:
        return sum(1 for case in self.cases if case.result == result)

    @property
    def time(self) -> float:
        return self.duration if self.duration is not None else sum(c.duration for c in self.cases)


def render(title: str, suites: list[Suite]) -> bytes:
    """The report as UTF-8 XML."""
    root = ET.Element("testsuites", name=_clean(title),
                      tests=str(sum(len(s.cases) for s in suites)),
                      failures=str(sum(s.count(FAILURE) for s in suites)),
                      errors=str(sum(s.count(ERROR) for s in suites)),
                      time=_seconds(sum(s.time for s in suites)))
    host = socket.gethostname()
    for index, suite in enumerate(suites):
        element = ET.SubElement(
            root, "testsuite", name=_clean(suite.name), tests=str(len(suite.cases)),
            failures=str(suite.count(FAILURE)), errors=str(suite.count(ERROR)),
            skipped=str(suite.count(SKIPPED)), time=_seconds(suite.time), id=str(index),
            hostname=_clean(host))
        if suite.started is not None:
            element.set("timestamp", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(suite.started)))
        if suite.properties:
            properties = ET.SubElement(element, "properties")
            for name, value in suite.properties.items():
                ET.SubElement(properties, "property", name=_clean(name), value=_clean(value))
        for case in suite.cases:
            _case(element, case)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _case(parent: ET.Element, case: Case) -> None:
    element = ET.SubElement(parent, "testcase", name=_clean(case.name),
                            classname=_clean(case.classname), time=_seconds(case.duration))
    if case.result != PASSED:
        first = case.message.splitlines()[0] if case.message else ""
        outcome = ET.SubElement(element, case.result, message=_clean(first))
        if case.result != SKIPPED:
            outcome.set("type", _clean(case.kind or case.result))
            outcome.text = _clean(case.stderr.strip() or case.message)
    if case.stdout.strip():
        ET.SubElement(element, "system-out").text = _clean(case.stdout)


def write(path: Path, title: str, suites: list[Suite]) -> None:
    """Replace `path` with the report in one step (a temporary file renamed over it)."""
    data = render(title, suites)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def prepare(path: Path) -> Path:
    """Check before any work that the report can be written there; its directory is made."""
    if path.is_dir():
        raise UsageError(f"--junit {path}: is a directory; give a file name such as "
                         f"{path / 'cei.xml'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK):
            raise PermissionError(f"cannot write in {path.parent}")
    except OSError as exc:
        raise UsageError(f"--junit {path}: {exc}") from None
    return path


def write_error(path: Path, title: str, name: str, message: str) -> None:
    """A report of one errored case `name`: the command failed before anything was tested."""
    write(path, title, [Suite(name, started=time.time(), cases=[
        Case(name, "cei", result=ERROR, kind="usage", message=message.splitlines()[0],
             stderr=message)])])


def health_suites(run: str, health: list[NodeHealth]) -> list[Suite]:
    """`cei status`: one suite per level, one case per node and check."""
    if not health:
        return [Suite(run, started=time.time(), properties={"run": run}, cases=[
            Case(f"{run} nodes", run, result=FAILURE, kind="empty",
                 message="no nodes recorded for this run")])]
    suites: dict[str, Suite] = {}
    for node in health:
        suite = suites.setdefault(node.level, Suite(node.level, started=time.time(),
                                                    properties={"run": run}))
        for check in node.checks:
            result = PASSED if check.passed else FAILURE
            kind = f"exit status {check.status}" if check.status is not None else check.check
            suite.cases.append(Case(
                f"{node.node} {check.check}", f"{node.level}.{node.service}", check.duration,
                result, kind, check.message, check.stderr_tail, check.stdout_tail))
    return list(suites.values())


def _seconds(value: float) -> str:
    return f"{max(value, 0.0):.3f}"


def _clean(text: str) -> str:
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
