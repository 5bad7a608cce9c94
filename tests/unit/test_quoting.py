"""shell_command: every argv element survives a POSIX shell unchanged."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from launchplan.remote import shell_command, shell_script
from launchplan.remote.quoting import env_script

TRICKY = [
    "with space",
    "it's",
    'say "hi"',
    "$HOME",
    "`id`",
    "$(id)",
    "a;b",
    "a|b",
    "a&&b",
    "line1\nline2",
    "",
    "héllo ✓ 日本",
    "-n",
    "--flag=1",
    "*",
    "~",
    "back\\slash",
    "tab\there",
]


def words(line: str) -> list[str]:
    return shlex.split(line, posix=True)


def test_plain_argv_is_exec_of_quoted_words() -> None:
    assert shell_command(["echo", "hi"]) == "exec echo hi"


@pytest.mark.parametrize("arg", TRICKY)
def test_each_tricky_argument_is_one_word(arg: str) -> None:
    line = shell_command(["prog", arg])
    assert words(line) == ["exec", "prog", arg]


def test_all_tricky_arguments_together() -> None:
    assert words(shell_command(["prog", *TRICKY])) == ["exec", "prog", *TRICKY]


def test_dangerous_characters_are_quoted() -> None:
    line = shell_command(["prog", "$HOME", "a;b", "`x`"])
    assert "'$HOME'" in line
    assert "'a;b'" in line
    assert "'`x`'" in line


def run_script(script: str) -> dict[str, str]:
    """The environment a POSIX shell has after running `script`."""
    out = subprocess.run(["sh", "-c", script + 'python3 -c "import json, os; '
                          'print(json.dumps(dict(os.environ)))"'],
                         capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"})
    return json.loads(out.stdout)


def test_env_script_exports_every_value_unchanged() -> None:
    env = {"A": "1", "B_2": "two words", "C": "$X'\n", "D": "", "E": "`id` $(id) ünï"}
    got = run_script(env_script(env))
    assert {k: got[k] for k in env} == env


@pytest.mark.parametrize("key", ["", "1A", "A-B", "A B", "A=B", "Ä", "A;rm"])
def test_invalid_env_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="environment variable name"):
        env_script({key: "v"})


def test_environment_values_never_reach_the_command_line() -> None:
    secret = "s3cret-value"
    script = shell_script(["./boot.sh"], cwd="/stage", env={"TOKEN": secret})
    assert script.splitlines() == [f"export TOKEN={secret}", "cd /stage && exec ./boot.sh"]


def test_cwd_becomes_cd_and() -> None:
    line = shell_command(["p"], cwd="/tmp/with space")
    assert line == "cd '/tmp/with space' && exec p"


def test_cwd_tilde_means_home_but_rest_is_quoted() -> None:
    assert shell_command(["p"], cwd="~/a b") == "cd \"$HOME\"/'a b' && exec p"
    assert shell_command(["p"], cwd="~") == 'cd "$HOME" && exec p'


def test_cwd_with_leading_dash_is_not_an_option() -> None:
    assert shell_command(["p"], cwd="-x") == "cd ./-x && exec p"


def test_empty_argv_is_refused() -> None:
    with pytest.raises(ValueError):
        shell_command([])


def test_program_with_leading_dash_is_refused() -> None:
    with pytest.raises(ValueError):
        shell_command(["-rf"])


def test_empty_cwd_is_refused() -> None:
    with pytest.raises(ValueError):
        shell_command(["p"], cwd="")
