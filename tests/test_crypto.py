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


# -- the bulk sealing path: same bytes as the per-field path ------------------------------------

def _field_body(dek: bytes, nonce: bytes, plaintext: bytes, collection: str, record_id: str,
                field: str, subject_id: str, dek_version: int) -> bytes:
    """AES-256-GCM of the documented layout, computed independently of FieldCipher."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from fiduciary.crypto.aead import associated_data

    ad = associated_data(b"fiduciary-field/1", collection, record_id, field, subject_id,
                         dek_version)
    return AESGCM(dek).encrypt(nonce, plaintext, ad)


def test_encrypt_many_is_byte_identical_to_encrypt_per_field() -> None:
    import struct

    dek = new_key()
    # Multi-byte characters and a multi-digit version: lengths are counted in bytes.
    cases = [("subject-a", 1, "persons", "rec-1"),
             ("sübjéct-ü", 12345, "bénéficiaires", "réc-∑-2"),
             ("", 0, "", "")]
    items = [("national_id", b'{"v":"123-45-6789"}'), ("email", b""),
             ("nom_de_famille", '{"v":"Ørsted 日本"}'.encode()), ("x" * 300, b"\x00" * 1000),
             ("", b"empty field name")]
    for subject_id, version, collection, record_id in cases:
        c = FieldCipher(subject_id, dek, version)
        many = c.encrypt_many(collection, record_id, items)
        single = [c.encrypt(collection, record_id, f, p) for f, p in items]
        assert len(many) == len(items)
        for (field, plaintext), blob, one in zip(items, many, single, strict=True):
            header = struct.pack(">BI", 0x01, version)
            # Both paths are the same function of the nonce: header, nonce, then AES-GCM over
            # the documented associated data. Checked against an independent computation with
            # the real AESGCM, for the bulk path and the per-field path alike.
            for b in (blob, one):
                assert len(b) == 5 + 12 + len(plaintext) + 16
                assert b[:5] == header
                nonce = b[5:17]
                assert b[17:] == _field_body(dek, nonce, plaintext, collection, record_id,
                                             field, subject_id, version)
                assert c.decrypt(collection, record_id, field, b) == plaintext
            # Bound to its place like any other field ciphertext.
            with pytest.raises(DecryptionError):
                c.decrypt(collection, record_id + "x", field, blob)
            with pytest.raises(DecryptionError):
                c.decrypt(collection, record_id, field + "x", blob)
            with pytest.raises(DecryptionError):
                FieldCipher(subject_id + "x", dek, version).decrypt(collection, record_id,
                                                                    field, blob)
        # Every field gets its own nonce.
        assert len({b[5:17] for b in many + single}) == 2 * len(items)
        assert c.encrypt_many(collection, record_id, []) == []


def test_associated_data_prefix_and_suffix_splice_matches_full_encoding() -> None:
    from fiduciary.crypto.aead import _ad_part, associated_data

    for parts in (("persons", "rec-1", "email", "subject-a", 1),
                  ("ü", "∑" * 70, "", "日本", 4_294_967_295)):
        spliced = b"fiduciary-field/1" + b"".join(_ad_part(p) for p in parts)
        assert spliced == associated_data(b"fiduciary-field/1", *parts)


def test_record_seal_stores_the_same_bytes_as_before() -> None:
    """``RecordCodec.seal``: each sealed field decrypts to ``json.dumps({"v": value})`` with the
    stored separators, base64 exactly as ``base64.b64encode``; ``_dumps`` equals json.dumps."""
    import base64
    import json

    from fiduciary.datamap import load_default
    from fiduciary.vault.records import RecordCodec, _dumps, _sealed_plaintext

    def reference(obj: object) -> str:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)

    samples: list[object] = [
        "plain", "Ørsted — 日本 \u2028 \"quoted\" \\ \n\t", "", 0, -7, 10**30, 1.5, 0.1 + 0.2,
        1e-300, float("inf"), float("nan"), True, False, None, [1, "a", None],
        {"nested": {"k": [1.25, "é"]}, "": 1}, "1980-02-29", "123-45-6789",
    ]
    for v in samples:
        assert _sealed_plaintext(v) == reference({"v": v}).encode()
        assert _dumps({"a": v, "b": [v]}) == reference({"a": v, "b": [v]})

    spec = load_default().collections["persons"]
    names = list(spec.fields)
    values = {name: samples[i % len(samples)] for i, name in enumerate(names)}
    dek = new_key()
    cipher = FieldCipher("subject-z", dek, 3)
    codec = RecordCodec(BlindIndexer(new_key()))
    clear, sealed = codec.seal(spec, "rec-9", cipher, values)
    encrypted = [n for n in names if spec.fields[n].encrypted]
    assert encrypted and len(encrypted) < len(names)
    assert list(sealed) == encrypted
    assert clear == {n: values[n] for n in names if not spec.fields[n].encrypted}
    assert list(clear) == [n for n in names if not spec.fields[n].encrypted]
    for name, b64 in sealed.items():
        blob = base64.b64decode(b64)
        assert base64.b64encode(blob).decode() == b64
        plaintext = reference({"v": values[name]}).encode()
        assert cipher.decrypt(spec.name, "rec-9", name, blob) == plaintext
        assert blob[17:] == _field_body(dek, blob[5:17], plaintext, spec.name, "rec-9", name,
                                        "subject-z", 3)
    opened = codec.open(spec, "rec-9", cipher, sealed, set(encrypted))
    assert json.dumps(opened, sort_keys=True) == json.dumps(
        {n: values[n] for n in encrypted}, sort_keys=True)
