"""Every error cei reports belongs to the one tree in errors.py (so the CLI maps each to its
exit status and never shows a traceback), including those of the agent and the demo."""

from __future__ import annotations

import pytest

from launchplan import errors
from launchplan.agent.supervisor import normalize_definition
from launchplan.demo.messaging import resolve_url
from launchplan.remote import CommandResult


@pytest.mark.parametrize("name", ["MessagingError", "AgentError", "AgentDown", "ProgramFailed"])
def test_the_error_is_in_the_tree(name: str) -> None:
    error = getattr(errors, name)
    assert issubclass(error, errors.CeiError) and error.__module__ == "launchplan.errors"


def test_the_node_agent_and_the_demo_raise_from_the_tree() -> None:
    with pytest.raises(errors.AgentError, match="exactly one of exec or module"):
        normalize_definition({"name": "x"})
    with pytest.raises(errors.MessagingError, match="unsupported transport URL"):
        resolve_url("gopher://nowhere")


def test_a_failed_program_says_how_it_ended() -> None:
    failed = errors.ProgramFailed("boot", CommandResult(3, "", "no disk\n"))
    assert str(failed) == "boot program exited with status 3:\nno disk"
    assert failed.exit_code == errors.EXIT_FAILED
