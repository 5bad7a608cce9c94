"""Reading an OpenSSH client config (Host, Match, Include) and turning a node's settings into
a target with its bastions; no network."""

from __future__ import annotations

from pathlib import Path

import pytest

from launchplan.ctx.hostkeys import generate_host_key
from launchplan.errors import RemoteError, UsageError
from launchplan.remote.route import Hop, Settings, known_host_key, node_target
from launchplan.remote.sshconfig import lookup


@pytest.fixture
def user_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    return home


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_no_config_file_means_ssh_defaults(user_home: Path) -> None:
    found = lookup("db.example.org")
    assert (found.hostname, found.port, found.user, found.proxy_jump) == (
        "db.example.org", None, None, None)
    assert lookup("x", "none").hostname == "x"


def test_first_value_wins_and_patterns_apply(user_home: Path) -> None:
    write(user_home / ".ssh" / "config",
          "Host web-* !web-legacy\n  User deploy\n  Port 2200\n"
          "Host web-1\n  HostName 10.1.0.1\n  User other\n"
          "Host *\n  User fallback\n  ConnectTimeout 7\n  ProxyJump none\n")
    web = lookup("web-1")
    assert (web.hostname, web.user, web.port, web.connect_timeout) == (
        "10.1.0.1", "deploy", 2200, 7)
    assert web.proxy_jump == ()  # `ProxyJump none`: explicitly direct
    legacy = lookup("web-legacy")
    assert (legacy.user, legacy.port) == ("fallback", None)


def test_control_persist_counts_only_with_control_master(user_home: Path) -> None:
    write(user_home / ".ssh" / "config",
          "Host ten\n  ControlMaster auto\n  ControlPersist 10m\n"
          "Host mixed\n  ControlMaster yes\n  ControlPersist 1h30m15\n"
          "Host always\n  ControlMaster autoask\n  ControlPersist yes\n"
          "Host zero\n  ControlMaster auto\n  ControlPersist 0\n"
          "Host nomaster\n  ControlPersist 10m\n"
          "Host off\n  ControlMaster auto\n  ControlPersist no\n"
          "Host bad\n  ControlMaster auto\n  ControlPersist 10 minutes\n")
    assert lookup("ten").control_persist == 600
    assert lookup("mixed").control_persist == 5415
    assert lookup("always").control_persist == lookup("zero").control_persist == float("inf")
    assert lookup("nomaster").control_persist == lookup("off").control_persist == 0
    assert lookup("elsewhere").control_persist == 0  # ssh's default: no sharing
    assert node_target("ten", port=None, user=None, key_path=None,
                       host_key="ssh-ed25519 AAAA").persist == 600
    with pytest.raises(UsageError, match=r"ssh config .*config: ControlPersist must be yes, no "
                                         r"or a time .*not '10 minutes'"):
        lookup("bad")


def test_include_is_followed_relative_to_dot_ssh_with_globs(user_home: Path) -> None:
    write(user_home / ".ssh" / "config", 'Include "conf.d/*.conf"\nHost *\n  User late\n')
    write(user_home / ".ssh" / "conf.d" / "20-b.conf", "Host b\n  HostName 10.0.0.2\n")
    write(user_home / ".ssh" / "conf.d" / "10-a.conf", "User early\nHost a\n  Port 2\n")
    write(user_home / ".ssh" / "conf.d" / "ignored.txt", "Host a\n  Port 99\n")
    assert lookup("a").port == 2 and lookup("a").user == "early"
    assert lookup("b").hostname == "10.0.0.2" and lookup("b").user == "early"


def test_include_inside_a_block_applies_only_where_the_block_matches(user_home: Path) -> None:
    write(user_home / ".ssh" / "config",
          "Host corp-*\n  Include corp\n  IdentityFile ~/.ssh/corp_key\n"
          "Host *\n  User someone\n")
    write(user_home / ".ssh" / "corp",
          "User corp-user\nHost corp-db\n  Port 5022\nHost other\n  Port 6022\n")
    db = lookup("corp-db")
    assert (db.user, db.port) == ("corp-user", 5022)
    assert db.identity_files == (str(user_home / ".ssh" / "corp_key"),)  # back in the block
    other = lookup("other")
    assert (other.user, other.port, other.identity_files) == ("someone", None, ())


def test_match_host_uses_the_hostname_and_exec_is_refused(user_home: Path) -> None:
    config = write(user_home / ".ssh" / "config",
                   "Host alias\n  HostName 10.9.9.9\nMatch host 10.9.*\n  User matched\n")
    assert lookup("alias").user == "matched"
    write(config, "Host a\n  Port 1\nMatch exec \"true\"\n  User x\n")
    with pytest.raises(UsageError, match=rf"{config}:3: Match exec is not supported"):
        lookup("a")


def test_unreadable_lines_and_files_name_where(user_home: Path, tmp_path: Path) -> None:
    config = write(tmp_path / "bad_config", "Host a\n  Port 1\n  justaword\n")
    with pytest.raises(UsageError, match=rf"{config}:3: cannot read this ssh config line"):
        lookup("a", str(config))
    with pytest.raises(UsageError, match="cannot read ssh config"):
        lookup("a", str(tmp_path / "missing"))
    write(config, "Host a\n  Port many\n")
    with pytest.raises(UsageError, match="port must be a number"):
        lookup("a", str(config))


def test_known_hosts_files_from_the_config(user_home: Path) -> None:
    write(user_home / ".ssh" / "config",
          "Host a\n  UserKnownHostsFile ~/kh1 /etc/kh2\n  GlobalKnownHostsFile none\n")
    assert lookup("a").known_hosts_files == ("~/kh1", "/etc/kh2")


def test_hops_parse_as_ssh_writes_them() -> None:
    assert Hop.parse("bastion") == Hop("bastion", None, "bastion", None)
    assert Hop.parse("ops@10.0.0.1:2222") == Hop("ops@10.0.0.1:2222", "ops", "10.0.0.1", 2222)
    assert Hop.parse("ssh://a@[2001:db8::1]:22").host == "2001:db8::1"
    for bad in ("a@b@c", "host:port", "h:70000", ""):
        with pytest.raises(UsageError, match="bad jump host"):
            Hop.parse(bad)


def known_hosts_line(home: Path, name: str) -> str:
    key = generate_host_key().public
    with (home / ".ssh" / "known_hosts").open("a") as fh:
        fh.write(f"{name} {key}\n")
    return " ".join(key.split()[:2])


def test_chain_follows_the_first_hops_own_proxyjump(user_home: Path) -> None:
    write(user_home / ".ssh" / "config",
          "Host app\n  HostName 10.0.2.5\n  ProxyJump inner\n"
          "Host inner\n  HostName 10.0.1.5\n  ProxyJump ops@outer:2022\n  User in\n"
          "Host outer\n  HostName 192.0.2.1\n")
    outer = known_hosts_line(user_home, "[192.0.2.1]:2022")
    inner = known_hosts_line(user_home, "10.0.1.5")
    target = node_target("app", port=None, user="me", key_path="/k", host_key=outer)
    assert [(h.host, h.port, h.user, h.host_key) for h in target.jump] == [
        ("192.0.2.1", 2022, "ops", outer), ("10.0.1.5", 22, "in", inner)]
    assert [h.label for h in target.jump] == [
        "jump host ops@outer:2022 (192.0.2.1:2022)", "jump host inner (10.0.1.5:22)"]
    assert (target.host, target.port, target.user) == ("10.0.2.5", 22, "me")
    assert all(h.key_path == "/k" for h in target.jump)


def test_plan_jumps_win_and_bastion_keys_come_from_plan_run_or_known_hosts(
    user_home: Path,
) -> None:
    write(user_home / ".ssh" / "config", "Host 10.0.1.*\n  ProxyJump from-config\n")
    pinned, by_run = generate_host_key().public, generate_host_key().public
    settings = Settings(ssh_jump=({"host": "b1", "host_key": pinned}, {"host": "10.0.0.9"}))
    target = node_target("10.0.1.1", port=None, user="u", key_path=None, host_key=pinned,
                         settings=settings, pins={("10.0.0.9", 22): by_run})
    assert [h.host_key for h in target.jump] == [pinned, by_run]
    with pytest.raises(RemoteError) as unknown:
        node_target("10.0.1.1", port=None, user="u", key_path=None, host_key=pinned,
                    settings=Settings(ssh_jump=({"host": "ops@b2:2200"},)))
    assert "jump host ops@b2:2200 (b2:2200): no host key is known" in str(unknown.value)
    assert "known_hosts" in str(unknown.value) and "host_key" in str(unknown.value)


class CountingPins(dict[tuple[str, int], str]):
    """The run's pinned host keys, counting each look: reading them is a store read of every
    node of the run, which must not happen for every node reached."""

    looks = 0

    def __len__(self) -> int:
        self.looks += 1
        return super().__len__()

    def get(self, key: tuple[str, int], default: str | None = None) -> str | None:  # type: ignore[override]
        self.looks += 1
        return super().get(key, default)


def test_the_runs_pins_are_read_only_for_a_bastion(user_home: Path) -> None:
    by_run = generate_host_key().public
    pins = CountingPins({("10.0.0.9", 22): by_run})
    direct = node_target("10.0.1.1", port=None, user="u", key_path=None, host_key=by_run,
                         pins=pins)
    assert direct.jump == () and pins.looks == 0
    jumped = node_target("10.0.1.1", port=None, user="u", key_path=None, host_key=by_run,
                         settings=Settings(ssh_jump=({"host": "10.0.0.9"},)), pins=pins)
    assert [h.host_key for h in jumped.jump] == [by_run] and pins.looks == 1


def test_proxyjump_loops_are_refused(user_home: Path) -> None:
    write(user_home / ".ssh" / "config",
          "Host a\n  ProxyJump b\nHost b\n  ProxyJump c\nHost c\n  ProxyJump b\n")
    known_hosts_line(user_home, "b")
    known_hosts_line(user_home, "c")
    with pytest.raises(UsageError, match="appears twice"):
        node_target("a", port=None, user=None, key_path=None, host_key="ssh-ed25519 AAAA")


def test_a_static_hosts_key_is_looked_up_as_ssh_would(user_home: Path) -> None:
    write(user_home / ".ssh" / "config",
          "Host db\n  HostName 10.0.0.3\n  Port 2022\nHost cache\n  HostKeyAlias cache-key\n")
    db = known_hosts_line(user_home, "[10.0.0.3]:2022")
    cache = known_hosts_line(user_home, "cache-key")
    assert known_host_key("db", None) == (db, "10.0.0.3:2022")
    assert known_host_key("db", 22) == (None, "10.0.0.3:22")  # the plan's port wins
    assert known_host_key("cache", None)[0] == cache
