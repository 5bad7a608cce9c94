"""Process definitions: validation, defaults and the command line they run."""

from __future__ import annotations

import sys

import pytest

from launchplan.agent.supervisor import (
    MODULE_RUNNER,
    AgentError,
    command_line,
    normalize_definition,
)


def test_exec_definition_defaults() -> None:
    defn = normalize_definition({"name": "web", "exec": "/bin/sleep", "argv": ["5", 6]})
    assert defn == {
        "name": "web",
        "exec": "/bin/sleep",
        "argv": ["5", "6"],
        "env": {},
        "restart": "abnormal",
        "min_restart_interval": 2.0,
        "max_restarts": None,
    }
    assert command_line(defn) == ["/bin/sleep", "5", "6"]


def test_module_definition() -> None:
    defn = normalize_definition({
        "name": "t1", "module": "pkg.mod:main", "args": ["--x", "1"], "env": {"A": 1},
        "restart": "always", "min_restart_interval": 0, "max_restarts": 3,
        "pythonpath": ["/opt/cei"], "cwd": "/tmp",
    })
    assert defn["python"] == sys.executable
    assert defn["env"] == {"A": "1"} and defn["cwd"] == "/tmp"
    assert defn["max_restarts"] == 3 and defn["min_restart_interval"] == 0.0
    assert command_line(defn) == [sys.executable, "-c", MODULE_RUNNER, "pkg.mod:main", "--x", "1"]


@pytest.mark.parametrize(
    ("defn", "message"),
    [
        ([], "JSON object"),
        ({"name": "a"}, "exactly one of exec or module"),
        ({"name": "a", "exec": "x", "module": "m:f"}, "exactly one"),
        ({"name": "../etc", "exec": "x"}, "name must match"),
        ({"name": "a", "exec": ""}, "non-empty"),
        ({"name": "a", "exec": "x", "argv": "-l"}, "list of strings"),
        ({"name": "a", "module": "os; rm"}, "pkg.mod:callable"),
        ({"name": "a", "exec": "x", "env": {"A": None}}, "env must map"),
        ({"name": "a", "exec": "x", "restart": "sometimes"}, "restart must be one of"),
        ({"name": "a", "exec": "x", "min_restart_interval": -1}, "min_restart_interval"),
        ({"name": "a", "exec": "x", "max_restarts": 1.5}, "whole number"),
        ({"name": "a", "exec": "x", "max_restart": 1}, "unknown keys .*max_restart"),
    ],
)
def test_bad_definitions(defn: object, message: str) -> None:
    with pytest.raises(AgentError, match=message):
        normalize_definition(defn)
