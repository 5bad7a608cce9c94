"""shell_command: every argv element survives a POSIX shell unchanged."""

from __future__ import annotations

import shlex

import pytest

from launchplan.remote import shell_command

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


def test_env_words_follow_env() -> None:
    line = shell_command(["prog", "x"], env={"A": "1", "B_2": "two words", "C": "$X'\n"})
    assert words(line) == ["exec", "env", "A=1", "B_2=two words", "C=$X'\n", "prog", "x"]


def test_env_keeps_mapping_order() -> None:
    line = shell_command(["p"], env={"Z": "1", "A": "2"})
    assert words(line)[2:4] == ["Z=1", "A=2"]


@pytest.mark.parametrize("key", ["", "1A", "A-B", "A B", "A=B", "Ä", "A;rm"])
def test_invalid_env_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="environment variable name"):
        shell_command(["p"], env={key: "v"})


def test_cwd_becomes_cd_and() -> None:
    line = shell_command(["p"], cwd="/tmp/with space")
    assert line == "cd '/tmp/with space' && exec p"


def test_cwd_tilde_means_home_but_rest_is_quoted() -> None:
    assert shell_command(["p"], cwd="~/a b") == "cd \"$HOME\"/'a b' && exec p"
    assert shell_command(["p"], cwd="~") == 'cd "$HOME" && exec p'


def test_cwd_with_leading_dash_is_not_an_option() -> None:
    assert shell_command(["p"], cwd="-x") == "cd ./-x && exec p"


def test_cwd_and_env_together() -> None:
    line = shell_command(["./boot.sh", "--port", "5432"], cwd=".cei/r/db", env={"MODE": "p"})
    assert line == "cd .cei/r/db && exec env MODE=p ./boot.sh --port 5432"


def test_empty_argv_is_refused() -> None:
    with pytest.raises(ValueError):
        shell_command([])


def test_program_with_leading_dash_is_refused() -> None:
    with pytest.raises(ValueError):
        shell_command(["-rf"])


def test_program_with_equals_sign_and_env_is_refused() -> None:
    with pytest.raises(ValueError):
        shell_command(["A=B"], env={"X": "1"})


def test_empty_cwd_is_refused() -> None:
    with pytest.raises(ValueError):
        shell_command(["p"], cwd="")
