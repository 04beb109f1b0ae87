"""Envelope encryption and the file keyring."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from fiduciary.crypto.aead import DecryptionError, FieldCipher, new_key
from fiduciary.crypto.blind_index import BlindIndexer
from fiduciary.crypto.keyring import KEYRING_FILE, MASTER_KEY_FILE, open_file_keyring
from fiduciary.errors import ConfigurationError
from tests.conftest import b64key


def test_field_round_trip_and_binding() -> None:
    dek = new_key()
    c = FieldCipher("subject-a", dek, 1)
    blob = c.encrypt("persons", "rec-1", "national_id", b"123-45-6789")
    assert b"123-45-6789" not in blob
    assert c.decrypt("persons", "rec-1", "national_id", blob) == b"123-45-6789"
    for collection, record, field in (("persons", "rec-2", "national_id"),
                                      ("persons", "rec-1", "email"),
                                      ("beneficiaries", "rec-1", "national_id")):
        with pytest.raises(DecryptionError):
            c.decrypt(collection, record, field, blob)
    other_subject_same_key = FieldCipher("subject-b", dek, 1)
    with pytest.raises(DecryptionError):
        other_subject_same_key.decrypt("persons", "rec-1", "national_id", blob)


def test_one_opaque_error_for_every_failure() -> None:
    c = FieldCipher("s", new_key(), 1)
    messages = set()
    for blob in (b"", b"\x01", b"\x02" + b"\x00" * 40, c.encrypt("p", "r", "f", b"x")[:-1]):
        with pytest.raises(DecryptionError) as info:
            c.decrypt("p", "r", "f", blob)
        messages.add(str(info.value))
    assert messages == {"decryption failed"}


def test_same_plaintext_encrypts_differently() -> None:
    c = FieldCipher("s", new_key(), 1)
    assert c.encrypt("p", "r", "f", b"x") != c.encrypt("p", "r", "f", b"x")


def test_blind_index_is_keyed_and_per_field() -> None:
    a = BlindIndexer(new_key())
    b = BlindIndexer(new_key())
    assert a.digest("persons", "email", b"x@y.z") == a.digest("persons", "email", b"x@y.z")
    assert a.digest("persons", "email", b"x@y.z") != b.digest("persons", "email", b"x@y.z")
    assert a.digest("persons", "email", b"x@y.z") != a.digest("persons", "phone", b"x@y.z")


def test_generated_master_key_is_0600_with_a_warning(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        open_file_keyring(tmp_path, None, create=True)
    mode = stat.S_IMODE((tmp_path / MASTER_KEY_FILE).stat().st_mode)
    assert mode == 0o600
    assert any("HSM or KMS" in r.getMessage() for r in caplog.records)
    keyring_text = (tmp_path / KEYRING_FILE).read_text()
    master_text = (tmp_path / MASTER_KEY_FILE).read_text().strip()
    assert master_text not in keyring_text


def test_master_key_from_environment_writes_no_key_file(tmp_path: Path) -> None:
    key = b64key()
    ring = open_file_keyring(tmp_path, key, create=True)
    assert not (tmp_path / MASTER_KEY_FILE).exists()
    version, wrapped = ring.wrap(b"k" * 32, b"ctx")
    reopened = open_file_keyring(tmp_path, key, create=False)
    assert reopened.unwrap(version, wrapped, b"ctx") == b"k" * 32
    with pytest.raises(DecryptionError):
        reopened.unwrap(version, wrapped, b"other-ctx")


def test_wrong_master_key_is_a_clear_configuration_error(tmp_path: Path) -> None:
    open_file_keyring(tmp_path, b64key(), create=True)
    with pytest.raises(ConfigurationError, match="master key does not open"):
        open_file_keyring(tmp_path, b64key(), create=False)
    with pytest.raises(ConfigurationError, match="32 bytes"):
        open_file_keyring(tmp_path, "c2hvcnQ=", create=False)


def test_keyring_versions_and_reload(tmp_path: Path) -> None:
    key = b64key()
    server_view = open_file_keyring(tmp_path, key, create=True)
    old_version, wrapped = server_view.wrap(b"d" * 32, b"ctx")
    rotator = open_file_keyring(tmp_path, key, create=False)
    new_version = rotator.add_version()
    assert new_version == old_version + 1
    # Another process rotated: the server's view notices on its next use.
    assert server_view.active_version() == new_version
    assert server_view.unwrap(old_version, wrapped, b"ctx") == b"d" * 32
    states = {v.version: v.state for v in server_view.versions()}
    assert states == {old_version: "decrypt_only", new_version: "active"}
