"""Envelope encryption, the keyring boundary and blind indexes."""

from fiduciary.crypto.aead import DecryptionError, FieldCipher
from fiduciary.crypto.blind_index import BlindIndexer
from fiduciary.crypto.keyring import FileKeyring, KekVersion, Keyring, open_file_keyring

__all__ = [
    "BlindIndexer",
    "DecryptionError",
    "FieldCipher",
    "FileKeyring",
    "KekVersion",
    "Keyring",
    "open_file_keyring",
]
