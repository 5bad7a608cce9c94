"""Pure parts of issue 3's second half: credential variable names, known_hosts lookup, pinned
fingerprints on a target, and credentials read back from the environment at teardown."""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import paramiko
import pytest

from launchplan.ctx.hostkeys import fingerprint, generate_host_key
from launchplan.errors import UsageError
from launchplan.levels.runtime import RunContext
from launchplan.plan.render import AUTH_ENV, credential_env
from launchplan.plan.templates import env_variable
from launchplan.remote import SSHTarget
from launchplan.remote.knownhosts import known_host_key
from launchplan.state import Store, scrub_secrets


def test_env_variable_names_only_plain_env_calls() -> None:
    assert env_variable("{{ env('OS_PASSWORD') }}") == "OS_PASSWORD"
    assert env_variable('{{ env("A", "fallback") }}') == "A"
    assert env_variable("{{ env('A') ~ env('B') }}") is None
    assert env_variable("x{{ env('A') }}") is None
    assert env_variable("literal") is None


def test_credential_env_survives_the_store_scrubber() -> None:
    names = credential_env({"key": "{{ env('OS_USERNAME') }}",
                            "secret": "{{ env('OS_PASSWORD') }}"})
    assert names == [["key", "OS_USERNAME"], ["secret", "OS_PASSWORD"]]
    stored = scrub_secrets({"provider": "openstack", AUTH_ENV: names,
                            "credentials": {"key": "u", "secret": "p"}}, cloud=True)
    assert stored == {"provider": "openstack", AUTH_ENV: names}


def test_provider_credentials_come_back_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "home")
    store.create_run("r1", "p", str(tmp_path / "p.yml"))
    ctx = RunContext(store, "r1", lambda event: None, threading.Event())
    options = {"provider": "openstack", AUTH_ENV: [["key", "CEI_U"], ["secret", "CEI_P"]]}
    monkeypatch.setenv("CEI_U", "user")
    monkeypatch.delenv("CEI_P", raising=False)
    with pytest.raises(UsageError, match="set CEI_P to reach the openstack cloud of run r1"):
        ctx.provider("libcloud", options)
    monkeypatch.setenv("CEI_P", "pass")
    assert ctx.provider("libcloud", options).options["credentials"] == {
        "key": "user", "secret": "pass"}


def test_known_host_key_plain_hashed_and_port(tmp_path: Path) -> None:
    a, b = generate_host_key(), generate_host_key()
    keys = paramiko.HostKeys()
    for name, host_key in (("192.0.2.7", a), ("[192.0.2.8]:2222", b)):
        kind, blob = host_key.public.split()[:2]
        key = paramiko.PKey.from_type_string(kind, base64.b64decode(blob))
        keys.add(paramiko.HostKeys.hash_host(name) if "2222" in name else name, kind, key)
    path = tmp_path / "known_hosts"
    keys.save(str(path))
    files = [str(path)]
    assert known_host_key("192.0.2.7", 22, files) == " ".join(a.public.split()[:2])
    assert known_host_key("192.0.2.8", 2222, files) == " ".join(b.public.split()[:2])
    assert known_host_key("192.0.2.8", 22, files) is None
    assert known_host_key("192.0.2.7", 22, [str(tmp_path / "missing")]) is None


def test_target_pinned_by_fingerprints_alone() -> None:
    line = generate_host_key().public
    target = SSHTarget("127.0.0.1", 22, "u", None, None, fingerprints=(fingerprint(line),))
    assert target.policy == "pinned"
    with pytest.raises(UsageError):
        SSHTarget("127.0.0.1", 22, "u", None, None)


def test_key_files_are_parsed_once_until_they_change(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from launchplan.remote.keys import KeyRing

    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    path = tmp_path / "id_ed25519"

    def write_key(passphrase: str | None) -> bytes:
        from cryptography.hazmat.primitives import serialization as ser
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        crypt = (ser.BestAvailableEncryption(passphrase.encode()) if passphrase
                 else ser.NoEncryption())
        path.write_bytes(key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.OpenSSH, crypt))
        blob = paramiko.Message()  # the public key as paramiko's asbytes() gives it
        blob.add_string("ssh-ed25519")
        blob.add_string(key.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw))
        return blob.asbytes()

    first = write_key(None)
    rings = [KeyRing(str(path), (), False, None) for _ in range(2)]
    assert [r.keys[0].key.asbytes() for r in rings] == [first, first]
    assert rings[0].keys[0].key is rings[1].keys[0].key  # parsed once
    second = write_key("s3cret")
    monkeypatch.setenv("KEY_PASS", "s3cret")
    ring = KeyRing(str(path), (), False, "KEY_PASS")
    assert ring.keys[0].key.asbytes() == second != first  # the new file is read again
    for r in (*rings, ring):
        r.close()
