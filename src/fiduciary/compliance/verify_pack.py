#!/usr/bin/env python3
"""Verify a Fiduciary evidence pack offline: ``python verify_pack.py PACK.zip [--public-key HEX]``.

Standalone on purpose (the standard library and ``cryptography`` only, no Fiduciary import):
an examiner runs it on their own machine against the pack alone. It checks

1. ``manifest.sig``: the Ed25519 signature over ``manifest.json`` by the audit signing key
   (pin that key with ``--public-key``; without it the key inside the pack is only reported,
   and a forger who rebuilt the whole pack with a key of their own would pass);
2. every file the manifest lists is present with its SHA-256, and no file is added;
3. every checkpoint in ``checkpoints/`` is signed by that key;
4. every event in ``events/`` hashes (RFC 9162 leaf: SHA-256(0x00 || canonical JSON)) to a leaf
   that its inclusion proof leads to the root of a signed checkpoint of the pack;
5. ``anchor.json``: the ``compliance.evidence_pack`` event written when the pack was made
   carries this manifest's SHA-256 and is proven by inclusion in a signed checkpoint, so the
   pack is the one the audit trail recorded.

Exit 0 with a last line naming the number of proofs checked; exit 1 naming the file at fault.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import zipfile
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
ANCHOR = "anchor.json"
#: Signed together with the manifest's bytes, so a manifest signature can never pass for a
#: checkpoint signature by the same key (or the reverse).
MANIFEST_CONTEXT = b"fiduciary-evidence-manifest-v1\n"
PACK_ACTION = "compliance.evidence_pack"


class Tampered(Exception):
    """The pack does not verify; ``name`` is the file at fault."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"{name}: {why}")
        self.name = name


def fingerprint(public_key: bytes) -> str:
    """SHA-256 of the raw 32-byte Ed25519 public key, in hex: what an examiner pins."""
    return hashlib.sha256(public_key).hexdigest()


def _leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2: the root an inclusion proof leads to (ValueError if the proof
    cannot belong to leaf ``index`` of a tree of ``size`` leaves)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    if any(len(p) != 32 for p in proof):
        raise ValueError("a proof element is not a 32-byte hash")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ValueError("inclusion proof too long")
        if fn % 2 == 1 or fn == sn:
            r = _node_hash(p, r)
            while fn % 2 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ValueError("inclusion proof too short")
    return r


def checkpoint_message(cp: dict[str, Any]) -> bytes:
    """The bytes a checkpoint signs: RFC 8785 canonical JSON of size, root and timestamp (for
    an integer and two ASCII strings that is sorted keys and no whitespace)."""
    body = {"root": cp["root"], "size": int(cp["size"]), "timestamp": cp["timestamp"]}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _json(pack: zipfile.ZipFile, name: str) -> Any:
    try:
        return json.loads(pack.read(name))
    except KeyError:
        raise Tampered(name, "missing from the pack") from None
    except ValueError:
        raise Tampered(name, "not valid JSON") from None


def _verify_signature(key: Ed25519PublicKey, signature: bytes, message: bytes, name: str,
                      what: str) -> None:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        raise Tampered(name, f"{what} does not verify with the audit signing key") from None


def _checkpoint(name: str, cp: Any, key: Ed25519PublicKey, raw_key: bytes) -> dict[str, Any]:
    try:
        signature = base64.b64decode(cp["signature"], validate=True)
        signer = base64.b64decode(cp["public_key"], validate=True)
        root = base64.b64decode(cp["root"], validate=True)
        message = checkpoint_message(cp)
    except (KeyError, TypeError, ValueError):
        raise Tampered(name, "not a signed checkpoint") from None
    if signer != raw_key:
        raise Tampered(name, "checkpoint signed by another key than the pinned one")
    _verify_signature(key, signature, message, name, "checkpoint signature")
    return {"size": int(cp["size"]), "root": root}


def _prove(name: str, doc: Any, checkpoints: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Check one proven event document; return the event it proves."""
    try:
        text = doc["canonical_event"]
        index, size = int(doc["leaf_index"]), int(doc["checkpoint_size"])
        proof = [bytes.fromhex(p) for p in doc["inclusion_proof"]]
        event = json.loads(text)
    except (KeyError, TypeError, ValueError):
        raise Tampered(name, "not a proven audit event") from None
    if not isinstance(event, dict) or event.get("id") != doc.get("event_id"):
        raise Tampered(name, "the event inside is not the event the file names")
    cp = checkpoints.get(size)
    if cp is None:
        raise Tampered(name, f"its checkpoint (size {size}) is not in the pack")
    try:
        root = root_from_inclusion(_leaf_hash(text.encode()), index, size, proof)
    except ValueError as exc:
        raise Tampered(name, f"inclusion proof is malformed ({exc})") from None
    if root != cp["root"]:
        raise Tampered(name, f"inclusion proof does not lead to the root of checkpoint {size}")
    return event


def verify(path: str, pinned: bytes | None, say: Any = print) -> int:
    """Verify the pack at ``path``; return the number of inclusion proofs checked or raise
    :class:`Tampered`."""
    try:
        pack = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise Tampered(path, f"not a readable zip file ({exc})") from None
    with pack:
        names = pack.namelist()
        if len(names) != len(set(names)):
            dup = next(n for n in names if names.count(n) > 1)
            raise Tampered(dup, "appears twice in the pack")
        sig = _json(pack, SIGNATURE)
        try:
            raw_key = bytes.fromhex(sig["public_key"])
            signature = bytes.fromhex(sig["signature"])
            key = Ed25519PublicKey.from_public_bytes(raw_key)
        except (KeyError, TypeError, ValueError):
            raise Tampered(SIGNATURE, "not a manifest signature") from None
        if pinned is not None and raw_key != pinned:
            raise Tampered(SIGNATURE, f"signed by key {fingerprint(raw_key)}, not by the "
                           f"pinned key {fingerprint(pinned)}")
        try:
            manifest_bytes = pack.read(MANIFEST)
        except KeyError:
            raise Tampered(MANIFEST, "missing from the pack") from None
        _verify_signature(key, signature, MANIFEST_CONTEXT + manifest_bytes, MANIFEST,
                          "manifest signature")
        manifest = _json(pack, MANIFEST)
        listed = manifest.get("files") if isinstance(manifest, dict) else None
        if not isinstance(listed, dict) or not all(isinstance(v, str) for v in listed.values()):
            raise Tampered(MANIFEST, "lists no files with their SHA-256")
        for name in names:
            if name not in listed and name not in (MANIFEST, SIGNATURE, ANCHOR):
                raise Tampered(name, "not listed in the manifest (added to the pack)")
        for name, digest in sorted(listed.items()):
            try:
                data = pack.read(name)
            except KeyError:
                raise Tampered(name, "listed in the manifest but missing from the pack") from None
            if hashlib.sha256(data).hexdigest() != digest:
                raise Tampered(name, "its SHA-256 differs from the manifest's (altered)")
        checkpoints: dict[int, dict[str, Any]] = {}
        for name in sorted(n for n in listed if n.startswith("checkpoints/")):
            cp = _checkpoint(name, _json(pack, name), key, raw_key)
            checkpoints[cp["size"]] = cp
        proofs = 0
        for name in sorted(n for n in listed if n.startswith("events/")):
            _prove(name, _json(pack, name), checkpoints)
            proofs += 1
        anchor = _json(pack, ANCHOR)
        if not isinstance(anchor, dict) or anchor.get("checkpoint") is None:
            raise Tampered(ANCHOR, "the pack's own audit event is not proven by a checkpoint")
        anchor_cp = _checkpoint(ANCHOR, anchor["checkpoint"], key, raw_key)
        event = _prove(ANCHOR, anchor, {anchor_cp["size"]: anchor_cp})
        details = event.get("details") or {}
        if event.get("action") != PACK_ACTION or details.get("manifest_sha256") != \
                hashlib.sha256(manifest_bytes).hexdigest():
            raise Tampered(ANCHOR, "the audit event it proves is not this manifest's")
        proofs += 1
        say(f"signed by the audit signing key {fingerprint(raw_key)} (SHA-256 fingerprint)"
            + ("" if pinned is not None else
               "; NOT pinned: compare it with the fingerprint the insurer gave you, or pass "
               "--public-key"))
        say(f"{len(listed)} files match the manifest; {len(checkpoints) + 1} checkpoint "
            "signatures verified")
        return proofs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify a Fiduciary evidence pack offline.")
    parser.add_argument("pack", help="the evidence pack (zip)")
    parser.add_argument("--public-key", help="the audit signing key (64 hex digits) as the "
                        "insurer published it; the pack must be signed by it")
    args = parser.parse_args(argv)
    pinned = None
    if args.public_key is not None:
        try:
            pinned = bytes.fromhex(args.public_key)
        except ValueError:
            pinned = b""
        if len(pinned) != 32:
            print("error: --public-key must be 64 hex digits (a raw Ed25519 public key)",
                  file=sys.stderr)
            return 2
    try:
        proofs = verify(args.pack, pinned)
    except Tampered as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        print(f"FAILED: {exc.name}")
        return 1
    print(f"OK: evidence pack verified, {proofs} inclusion proofs checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
