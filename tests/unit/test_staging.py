"""The one-exec staging script (remote.staging), run by this machine's own sh."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from launchplan.ctx.environment import LevelContext, context_document
from launchplan.remote.staging import (
    NO_REPORT,
    REPORT,
    STAGING_FAILED,
    ReportReader,
    StagedFile,
    Staging,
    mkdir_command,
    staged_command,
)

TOKEN = "0123abcd"


def run(staging: Staging, argv: list[str] | None, env: dict[str, str] | None = None,
        ) -> tuple[int, bytes, ReportReader, str]:
    command, stdin, marker = staged_command(staging, argv, env or {}, TOKEN)
    proc = subprocess.run(["sh", "-c", command], input=stdin, capture_output=True, timeout=60)
    reader = ReportReader(marker)
    output = reader.feed(proc.stdout) + reader.finish()
    return proc.returncode, output, reader, proc.stderr.decode()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_land_whole_with_their_modes(tmp_path: Path) -> None:
    stage = tmp_path / "a" / "b c" / "stage"
    files = (StagedFile("config.json", b'{"k": 1}'), StagedFile("empty", b""),
             StagedFile("blob", bytes(range(256)) * 40 + b"\0tail"),
             StagedFile("boot.sh", b"#!/bin/sh\necho hi\n", 0o700),
             StagedFile("odd name's", b"x" * 7))
    status, output, _, stderr = run(Staging(str(stage), files), None)
    assert (status, output, stderr) == (0, b"", "")
    for item in files:
        assert (stage / item.name).read_bytes() == item.data
        assert mode(stage / item.name) == item.mode
    assert mode(stage) == mode(stage.parent) == 0o700
    assert sorted(p.name for p in stage.iterdir()) == sorted(f.name for f in files)


def test_program_runs_with_its_environment_and_reports(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment reaches the program and nothing else: not the variables the script
    read it into, even where the login exports ones of those names."""
    monkeypatch.setenv("e", "the login's")
    monkeypatch.setenv("l", "the login's")
    stage = tmp_path / "stage"
    output_file = stage / "output.json"
    stage.mkdir()
    output_file.write_text("stale")
    program = 'echo "$SECRET $1"; printf \'{"a": 1}\' >output.json'
    staging = Staging(str(stage), (StagedFile("c.json", b"{}"),), (str(output_file),),
                      str(output_file), 100)
    env = {"SECRET": "it's $HOME", "ODD": "  a\\b\n\nc \\", "EMPTY": ""}
    status, output, reader, _ = run(
        staging, ["/bin/sh", "-c", program + '; printf "[%s][%s][%s%s]" "$ODD" '
                  '"${EMPTY-unset}" "${e-unset}" "${l-unset}"', "sh", "x y"], env)
    assert status == 0
    assert output == b"it's $HOME x y\n[  a\\b\n\nc \\][][unsetunset]"
    assert (reader.kind, reader.report) == (REPORT, b'{"a": 1}')
    assert sorted(p.name for p in stage.iterdir()) == ["c.json", "output.json"]
    assert mode(output_file) == 0o644 & ~_umask()  # the program keeps the login's umask


def _umask() -> int:
    return int(subprocess.run(["sh", "-c", "umask"], capture_output=True, text=True,
                              check=True).stdout.strip(), 8)


def test_report_is_cut_at_the_limit_and_absent_when_no_file_or_failed(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    big = Staging(str(tmp_path), report=out, limit=10)
    _, _, reader, _ = run(big, ["/bin/sh", "-c", f"printf %050d 0 >{out}"])
    assert reader.report == b"0" * 11
    _, _, reader, _ = run(big, ["/bin/sh", "-c", f"rm -f {out}"])
    assert (reader.kind, reader.report) == (NO_REPORT, None)
    status, _, reader, _ = run(big, ["/bin/sh", "-c", f"echo x >{out}; exit 3"])
    assert (status, reader.kind) == (3, None)


def test_a_file_in_the_way_fails_staging_with_its_name(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    staging = Staging(str(tmp_path / "file" / "stage"), (StagedFile("a", b"1"),))
    status, _, reader, stderr = run(staging, ["true"])
    assert status == 1 and reader.kind == STAGING_FAILED
    assert f"{tmp_path / 'file'} exists and is not a directory" in stderr


def test_mkdir_command_gives_created_directories_the_mode(tmp_path: Path) -> None:
    leaf = tmp_path / "a" / "b"
    subprocess.run(["sh", "-c", mkdir_command(str(leaf), 0o750)], check=True, timeout=30)
    assert mode(tmp_path / "a") == mode(leaf) == 0o750


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, 1000])
def test_report_reader_splits_at_any_chunk_boundary(size: int) -> None:
    marker = b"\x1ecei-report-x\x1e"
    data = b"out \x1e\n" + marker + b"O{\"a\"}\x1e" + marker + b"after"
    reader = ReportReader(marker)
    output = b"".join(reader.feed(data[i:i + size]) for i in range(0, len(data), size))
    assert output + reader.finish() == b"out \x1e\nafter"
    assert reader.report == b'{"a"}\x1e'


def test_level_context_encodes_the_documented_content_once() -> None:
    nodes = [{"service": "db", "index": 0, "address": "10.0.0.1", "outputs": {"t": 1},
              "secret": "left out"}]
    me = {"service": "web", "index": 2, "node": "web/2", "address": "10.0.0.9"}
    level = LevelContext("r1", nodes)
    assert json.loads(level.document(me)) == context_document("r1", [*nodes, me])
    assert json.loads(level.document()) == context_document("r1", nodes)
    assert json.loads(LevelContext("r1", []).document(me)) == context_document("r1", [me])


def test_a_file_may_be_named_like_what_staging_uses_itself(tmp_path: Path) -> None:
    """The saved stdin and the temporary directory carry the token, so no staged file's name
    (here the names they had without it) can clash with them."""
    stage = tmp_path / "stage"
    files = (StagedFile(".in", b"first" * 10), StagedFile(".cei-tmp", b"second"),
             StagedFile(".cei-in", b"third" * 3))
    status, output, _, stderr = run(Staging(str(stage), files), None)
    assert (status, output, stderr) == (0, b"", "")
    assert {p.name: p.read_bytes() for p in stage.iterdir()} == {f.name: f.data for f in files}


def test_staging_and_booting_start_few_processes(tmp_path: Path) -> None:
    """Every process costs the node a fork and an exec: the commands a boot of three files
    starts are counted (through shims on PATH that log, then run the real one), in a new
    stage and again in the same one, where the files replace the first ones atomically and
    the first boot's output is removed."""
    shims = tmp_path / "bin"
    shims.mkdir()
    calls = tmp_path / "calls"
    for name in ("mkdir", "chmod", "mv", "rm", "cat", "dd", "wc", "setsid", "tar"):
        real = shutil.which(name)
        if real is None:
            continue
        shim = shims / name
        shim.write_text(f'#!/bin/sh\necho {name} >>"{calls}"\nexec {real} "$@"\n')
        shim.chmod(0o755)
    stage = tmp_path / "stage"
    output = str(stage / "output.json")

    def boot(config: bytes) -> Counter[str]:
        calls.write_text("")
        files = (StagedFile("config.json", config), StagedFile("context.json", b'{"n": []}'),
                 StagedFile("boot-boot.sh", b'#!/bin/sh\n[ ! -e output.json ] && '
                                            b'echo "{\\"a\\": $A}" >output.json\n', 0o700))
        command, stdin, marker = staged_command(
            Staging(str(stage), files, (output,), output, 100), ["./boot-boot.sh"],
            {"A": "1", "B": "2"}, TOKEN)
        proc = subprocess.run(["/bin/sh", "-c", command], input=stdin, capture_output=True,
                              timeout=60, env={"PATH": f"{shims}:{os.environ['PATH']}"})
        reader = ReportReader(marker)
        reader.feed(proc.stdout)
        assert (proc.returncode, reader.report) == (0, b'{"a": 1}\n'), proc.stderr
        assert (stage / "config.json").read_bytes() == config
        return Counter(calls.read_text().split())

    assert boot(b"{}") == {"mkdir": 1, "tar": 1, "dd": 1}
    assert boot(b'{"again": 1}') == {"mkdir": 1, "tar": 1, "chmod": 1, "mv": 1, "rm": 1,
                                     "dd": 1}
    assert sorted(p.name for p in stage.iterdir()) == ["boot-boot.sh", "config.json",
                                                       "context.json", "output.json"]
