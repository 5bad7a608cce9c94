"""The run's own SSH key in the store: sealed under CEI_STATE_KEY, or not stored at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from launchplan.ctx.hostkeys import new_client_key
from launchplan.errors import StateKeyError
from launchplan.state import Store
from launchplan.state.runkeys import private_key
from launchplan.state.sealing import KEY_ENV, new_key, seal, unseal
from tests.unit.storehelp import raw_contents


@pytest.fixture
def store(cei_home: Path, state_url: str):
    with Store(cei_home, state_url) as opened:
        opened.create_run("r1", "demo", "demo.yml")
        yield opened


def test_seal_round_trip_and_a_wrong_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, new_key())
    token = seal("the secret")
    assert token is not None and "the secret" not in token
    assert unseal(token, "it") == "the secret"
    monkeypatch.setenv(KEY_ENV, new_key())
    with pytest.raises(StateKeyError, match="another key"):
        unseal(token, "it")
    monkeypatch.delenv(KEY_ENV)
    assert seal("the secret") is None
    with pytest.raises(StateKeyError, match=f"set {KEY_ENV}"):
        unseal(token, "it")


def test_the_key_may_come_from_a_private_file(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "state.key"
    key_file.write_text(new_key() + "\n")
    key_file.chmod(0o600)
    monkeypatch.setenv(KEY_ENV, str(key_file))
    token = seal("x")
    assert token is not None and unseal(token, "it") == "x"
    key_file.chmod(0o644)
    with pytest.raises(StateKeyError, match="readable by others"):
        seal("x")
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "missing.key"))
    with pytest.raises(StateKeyError, match="cannot be read"):
        seal("x")
    monkeypatch.setenv(KEY_ENV, "not-a-key")
    with pytest.raises(StateKeyError, match="cei state keygen"):
        seal("x")


def test_run_key_is_stored_sealed(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, new_key())
    private, public = new_client_key()
    record = store.save_run_key("r1", "client_key", public, private)
    assert record.public_key == public and record.sealed_key is not None
    assert private_key(record) == private
    raw = raw_contents(store)
    assert public.split()[1].encode() in raw
    assert private.encode() not in raw
    assert private.splitlines()[1].encode() not in raw  # not even a line of it


def test_run_key_without_a_state_key_keeps_only_the_public_half(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    private, public = new_client_key()
    record = store.save_run_key("r1", "client_key", public, private)
    assert record.sealed_key is None and record.host == store._me.host
    with pytest.raises(StateKeyError, match="launched without CEI_STATE_KEY"):
        private_key(record)
    assert private.splitlines()[1].encode() not in raw_contents(store)


def test_the_first_key_saved_for_a_run_wins(store: Store, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    monkeypatch.setenv(KEY_ENV, new_key())
    first = store.save_run_key("r1", "client_key", *reversed(new_client_key()))
    second = store.save_run_key("r1", "client_key", *reversed(new_client_key()))
    assert second == first
    assert store.run_keys("r1") == [first]
    store.set_run_status("r1", "terminated")
    store.delete_run("r1")
    assert store.run_key("r1", "client_key") is None
