"""known_hosts as OpenSSH writes and reads it: hashed names (made by ssh-keygen -H itself),
[host]:port, patterns and negation, markers, and lines cei cannot parse."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from launchplan.ctx.hostkeys import generate_host_key
from launchplan.remote.knownhosts import known_host_key, known_host_keys
from tests.conftest import require


def key() -> str:
    return " ".join(generate_host_key().public.split()[:2])


def test_hashed_entries_as_ssh_keygen_hashes_them(tmp_path: Path) -> None:
    require(shutil.which("ssh-keygen"), "ssh-keygen is not installed")
    plain, ported = key(), key()
    path = tmp_path / "known_hosts"
    path.write_text(f"db.example.org,192.0.2.4 {plain}\n[192.0.2.5]:2222 {ported}\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(path)], check=True,
                   capture_output=True, timeout=30)
    text = path.read_text()
    assert "192.0.2" not in text and text.count("|1|") == 3
    files = [str(path)]
    assert known_host_key("DB.example.org", 22, files) == plain  # names compare lower-case
    assert known_host_key("192.0.2.4", 22, files) == plain
    assert known_host_key("192.0.2.5", 2222, files) == ported
    assert known_host_key("192.0.2.5", 22, files) is None
    assert known_host_key("192.0.2.4", 2222, files) is None


def test_ports_patterns_and_negation(tmp_path: Path) -> None:
    web, wild, other = key(), key(), key()
    path = tmp_path / "known_hosts"
    path.write_text(
        f"[web.example.org]:22 {web}\n"
        f"*.corp.example,!secret.corp.example {wild}\n"
        f"[h?.example]:2200 {other}\n")
    files = [str(path)]
    assert known_host_key("web.example.org", 22, files) == web  # [host]:22 counts as port 22
    assert known_host_key("db.corp.example", 22, files) == wild
    assert known_host_key("secret.corp.example", 22, files) is None
    assert known_host_key("h1.example", 2200, files) == other
    assert known_host_key("h10.example", 2200, files) is None


def test_revoked_keys_bad_lines_and_several_files(tmp_path: Path) -> None:
    good, revoked, rsa = key(), key(), "ssh-rsa " + "A" * 8
    first = tmp_path / "one"
    first.write_text(
        "# a comment\n\n"
        "broken-line-without-key\n"
        f"host.example ssh-ed25519 not-base64!!\n"
        f"host.example\t\t{revoked}   trailing comment\n"
        f"@revoked * {revoked}\n"
        f"@cert-authority *.example {good}\n"
        f"host.example {rsa}\n")
    second = tmp_path / "two"
    second.write_text(f"host.example {good}\n")
    files = [str(first), str(tmp_path / "missing"), str(second)]
    assert known_host_keys("host.example", 22, files) == [good]


def test_preferred_key_type_first(tmp_path: Path) -> None:
    require(shutil.which("ssh-keygen"), "ssh-keygen is not installed")
    for kind in ("rsa", "ecdsa"):
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(tmp_path / kind)],
                       check=True, capture_output=True, timeout=60)
    lines = {k: " ".join((tmp_path / f"{k}.pub").read_text().split()[:2])
             for k in ("rsa", "ecdsa")}
    ed = key()
    path = tmp_path / "known_hosts"
    path.write_text("".join(f"h {lines[k]}\n" for k in ("rsa", "ecdsa")) + f"h {ed}\n")
    assert known_host_keys("h", 22, [str(path)]) == [ed, lines["ecdsa"], lines["rsa"]]


@pytest.mark.parametrize("salt", ["|1|bad|hash", "|1|"])
def test_damaged_hashes_match_nothing(tmp_path: Path, salt: str) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(f"{salt} {key()}\n")
    assert known_host_key("anything", 22, [str(path)]) is None
