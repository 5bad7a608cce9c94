"""The CI pieces without clouds: durations, secret masking, annotations, JUnit reports."""

from __future__ import annotations

import itertools
from pathlib import Path

import click
import pytest

from launchplan.cli import junit
from launchplan.cli.annotations import summary_line
from launchplan.cli.duration import format_duration, parse_duration
from launchplan.cli.junit_launch import LaunchReport
from launchplan.levels.events import Event
from launchplan.levels.masking import Masker
from launchplan.remote import CommandResult
from tests.junit_report import by_name, read_report

# durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("0.5s", 0.5),
    (" 2H ", 7200),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10", "m", "10 m", "-5s", "0s", "1x", "", "1h 30m", "s10"])
def test_bad_durations_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize("seconds, text", [(90, "1m30s"), (7200, "2h"), (600, "10m"),
                                           (2.5, "2.5s"), (86400 + 60, "1d1m")])
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


# masking ------------------------------------------------------------------------------------

SECRET = "hunter2-s3cr3t"


def test_only_secret_named_variables_are_masked() -> None:
    masker = Masker.for_env({"DB_PASSWORD": SECRET, "MODE": "primary", "API_SECRET": "",
                             "CLIENT_SECRET": "*"})
    assert masker.text(f"mode primary, password {SECRET}") == "mode primary, password ***"
    assert not Masker.for_env({"MODE": "primary"})


@pytest.mark.parametrize("secret", [SECRET, "-----BEGIN-----\nmultiline\n-----END-----"])
def test_a_secret_split_across_chunks_never_reaches_the_log(secret: str) -> None:
    data = f"line one\nthe secret is {secret}!\n{secret}{secret}\nno newline at the end {secret}"
    raw = data.encode()
    for size in (1, 2, 3, 5, 7, 13, len(secret), 64):
        seen: list[bytes] = []
        output = Masker([secret]).stream(lambda stream, chunk, seen=seen: seen.append(chunk))
        for start in range(0, len(raw), size):
            output("stderr", raw[start:start + size])
        output.finish()
        logged = b"".join(seen)
        assert secret.encode() not in logged
        assert logged == data.replace(secret, "***").encode(), size
        assert all(secret[:6].encode() not in chunk for chunk in seen)  # nor a piece of it
        result = output.result(CommandResult(3, "unmasked " + secret, "unmasked " + secret))
        assert result.status == 3
        assert result.stderr_tail == data.replace(secret, "***") and result.stdout_tail == ""


def test_masked_output_passes_whole_lines_on_at_once() -> None:
    seen: list[tuple[str, bytes]] = []
    output = Masker([SECRET]).stream(lambda stream, chunk: seen.append((stream, chunk)))
    output("stdout", b"first line\nsecond li")
    assert seen == [("stdout", b"first line\n")]
    output("stderr", b"x" * 70_000)  # a line without end is not held forever
    assert sum(len(c) for s, c in seen if s == "stderr") >= 70_000 - len(SECRET)
    output.finish()
    assert b"".join(c for s, c in seen if s == "stdout") == b"first line\nsecond li"


# annotations --------------------------------------------------------------------------------


def test_summary_line_is_a_workflow_command_only_under_github_actions(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    summary_line(False, "cei launch r1", "run r1 failed", "web/0: exit 3\n50% done", err=True)
    assert capsys.readouterr().err == "run r1 failed\n"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    summary_line(False, "cei launch r1, try: 2", "run r1 failed", "web/0: exit 3\n50% done",
                 err=True)
    assert capsys.readouterr().err == (
        "::error title=cei launch r1%2C try%3A 2::run r1 failed%0Aweb/0: exit 3%0A50%25 done\n")
    summary_line(True, "cei launch r1", "run r1 is ready", err=False)
    assert capsys.readouterr().out == "::notice title=cei launch r1::run r1 is ready\n"


# JUnit: the format --------------------------------------------------------------------------


def test_report_is_valid_and_carries_what_failed(tmp_path: Path) -> None:
    path = tmp_path / "r.xml"
    junit.write(path, "cei launch t & <1>", [
        junit.Suite("base", started=1.7e9, duration=3.0, properties={"run": "t"}, cases=[
            junit.Case("db/0 boot", "base.db", 1.25),
            junit.Case("db/1 boot", "base.db", 0.5, junit.FAILURE, "exit status 3",
                       "boot program exited with status 3",
                       stderr="\x1b[31mdisk on fire\x1b[0m ]]> <&>\n", stdout="some output"),
            junit.Case("db/2 boot", "base.db", 0.0, junit.SKIPPED, message="stopped"),
            junit.Case("db/3 boot", "base.db", 0.1, junit.ERROR, "interrupted", "interrupted"),
        ]),
        junit.Suite("empty"),
    ])
    cases = by_name(read_report(path))
    assert cases["db/0 boot"].outcome == "passed" and cases["db/0 boot"].time == 1.25
    failed = cases["db/1 boot"]
    assert (failed.outcome, failed.type) == ("failure", "exit status 3")
    assert failed.message == "boot program exited with status 3"
    assert "\\x1b[31mdisk on fire\\x1b[0m ]]> <&>" in failed.text  # escaped, never dropped
    assert cases["db/2 boot"].outcome == "skipped"
    assert cases["db/3 boot"].outcome == "error"
    assert not list(tmp_path.glob(".r.xml.*"))  # no temporary file left behind


def test_prepare_refuses_a_directory_and_makes_missing_parents(tmp_path: Path) -> None:
    with pytest.raises(junit.UsageError, match="is a directory"):
        junit.prepare(tmp_path)
    assert junit.prepare(tmp_path / "reports" / "cei.xml").parent.is_dir()


# JUnit: a launch, from its events -----------------------------------------------------------

_clock = itertools.count(1_700_000_000, 0.5)


def _event(kind: str, node: str | None = None, state: str | None = None, message: str = "",
           **data: object) -> Event:
    return Event(kind, "r1", node=node, state=state, message=message, data=data,
                 time=next(_clock))


def _node_up(node: str, service: str, level: str) -> list[Event]:
    return [_event("node.state", node, "pending", service=service, level=level),
            _event("node.state", node, "creating"), _event("node.state", node, "booting"),
            _event("node.state", node, "contextualizing")]


def _program(node: str, program: str, outcome: str, status: int | None, message: str = "",
             stderr: str = "") -> Event:
    return _event("node.program", node, message=message, program=program, outcome=outcome,
                  status=status, duration=0.25, attempts=1, stderr_tail=stderr)


def _replay(tmp_path: Path, events: list[Event]) -> dict[str, object]:
    report = LaunchReport(tmp_path / "launch.xml", "r1", "p")
    for event in events:
        report(event)
    report.close()
    return by_name(read_report(tmp_path / "launch.xml"))


def test_launch_report_of_a_failed_level(tmp_path: Path) -> None:
    failure = "boot program exited with status 3:\ndisk on fire\n(log: x.log)"
    cases = _replay(tmp_path, [
        _event("run.started", plan="p", levels=2),
        _event("level.started", level="data", index=1),
        *_node_up("db/0", "db", "data"),
        _program("db/0", "boot", "passed", 0),
        _program("db/0", "ready", "passed", 0),
        _event("node.state", "db/0", "ready"),
        _event("level.finished", level="data", index=1, state="ready"),
        _event("level.started", level="app", index=2),
        *_node_up("app/0", "app", "app"),
        _event("node.state", "app/1", "pending", service="app", level="app"),
        _program("app/0", "boot", "failed", 3, "boot program exited with status 3",
                 "disk on fire\n"),
        _event("node.state", "app/0", "failed", failure),
        _event("node.state", "app/1", "failed", "stopped before creating: another node of the "
               "level failed"),
        _event("level.finished", level="app", index=2, state="failed"),
        _event("run.finished", state="failed",
               failures=[{"node": "app/0", "message": failure, "timeout": False}]),
        _event("node.state", "app/0", "terminating"),  # a teardown after: not in the report
    ])
    assert set(cases) == {"db/0 provision", "db/0 boot", "db/0 ready", "app/0 provision",
                          "app/0 boot", "app/1 provision"}
    boot = cases["app/0 boot"]
    assert (boot.outcome, boot.type, boot.text) == ("failure", "exit status 3", "disk on fire")
    assert boot.classname == "app.app" and boot.suite == "app" and boot.time == 0.25
    assert cases["app/1 provision"].outcome == "skipped"
    assert cases["db/0 provision"].time == 1.0  # creating -> contextualizing
    assert [c.outcome for n, c in cases.items() if n.startswith("db/")] == ["passed"] * 3


def test_launch_report_of_a_deadline_and_of_an_interrupt(tmp_path: Path) -> None:
    def launch(state: str, failure: str, timeout: bool, **finished: object) -> list[Event]:
        return [_event("level.started", level="one", index=1),
                *_node_up("a/0", "a", "one"),
                _event("node.state", "b/0", "pending", service="b", level="one"),
                _program("a/0", "boot", "interrupted", None, "command interrupted"),
                _event("node.state", "a/0", "failed", "interrupted while contextualizing"),
                _event("node.state", "b/0", "failed", "interrupted before creating"),
                _event("level.finished", level="one", index=1, state="failed"),
                _event("run.finished", state=state, **finished,
                       failures=[{"node": "a/0", "message": failure, "timeout": timeout}])]

    why = "the launch deadline of 2s passed"
    cases = _replay(tmp_path, launch("failed", f"{why}; interrupted while contextualizing", True,
                                     deadline=why))
    assert (cases["a/0 boot"].outcome, cases["a/0 boot"].type) == ("failure", "timeout")
    assert cases["a/0 boot"].message.startswith(why)
    assert (cases["b/0 provision"].outcome, cases["b/0 provision"].type) == ("failure",
                                                                             "timeout")
    cases = _replay(tmp_path, launch("interrupted", "interrupted while contextualizing", False))
    assert (cases["a/0 boot"].outcome, cases["a/0 boot"].type) == ("error", "interrupted")
    assert cases["b/0 provision"].outcome == "error"


def test_launch_report_mid_launch_and_failures_of_no_node(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from launchplan.cli import junit_launch

    monkeypatch.setattr(junit_launch, "WRITE_EVERY", 0.0)
    report = LaunchReport(tmp_path / "launch.xml", "r1", "p")
    for event in [_event("level.started", level="one", index=1), *_node_up("a/0", "a", "one"),
                  _event("node.state", "b/0", "pending", service="b", level="one"),
                  _event("node.state", "b/0", "creating")]:
        report(event)
    # rewritten while nodes change (at most every WRITE_EVERY s): a killed job keeps a report
    cases = by_name(read_report(tmp_path / "launch.xml"))
    assert cases["a/0 provision"].outcome == "passed"
    assert (cases["b/0 provision"].outcome, cases["b/0 provision"].type) == ("error",
                                                                             "unfinished")
    cases = _replay(tmp_path, [
        _event("level.started", level="one", index=1),
        _event("level.finished", level="one", index=1, state="failed"),
        _event("run.finished", state="failed",
               failures=[{"node": "web/*", "message": "services.db is undefined",
                          "timeout": False}]),
    ])
    assert cases["web/* render"].outcome == "failure"
    assert cases["web/* render"].message == "services.db is undefined"


def test_health_report_has_a_case_per_check(tmp_path: Path) -> None:
    from launchplan.levels.nodehealth import Check, NodeHealth

    health = [
        NodeHealth("db/0", "db", "data", "ready", True, "127.0.0.2", "r/db/0", checks=[
            Check("state", True), Check("cloud", True, 0.01), Check("ready", True, 0.2, status=0)]),
        NodeHealth("web/0", "web", "front", "ready", False, "127.0.0.3", "r/web/0", checks=[
            Check("state", True), Check("ready", False, 0.3, "ready program exited with "
                                        "status 1", 1, "connection refused")]),
    ]
    junit.write(tmp_path / "s.xml", "cei status r", junit.health_suites("r", health))
    cases = by_name(read_report(tmp_path / "s.xml"))
    assert len(cases) == 5
    ready = cases["web/0 ready"]
    assert (ready.outcome, ready.type, ready.text) == ("failure", "exit status 1",
                                                       "connection refused")
    junit.write(tmp_path / "e.xml", "cei status r", junit.health_suites("r", []))
    assert [c.outcome for c in read_report(tmp_path / "e.xml")] == ["failure"]


def test_duration_option_errors_are_usage_errors() -> None:
    from launchplan.cli.duration import Duration

    with pytest.raises(click.BadParameter, match="not a duration"):
        Duration().convert("ten minutes", None, None)
