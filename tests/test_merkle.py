"""The Merkle tree matches RFC 9162: the transparency-dev vectors, known roots, and a naive MTH."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from fiduciary.audit.merkle import (
    EMPTY_ROOT,
    GetNode,
    LevelNodes,
    MemoryNodes,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    nodes_to_store,
    root,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).parent / "vectors" / "merkle"

KNOWN_LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)]
KNOWN_ROOTS = [bytes.fromhex(h) for h in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]


def _cases(kind: str) -> list[Any]:
    """``pytest.param(case, id="<kind>/<dir>/<name>")`` per vector file; [] if missing (the
    count test then fails instead of everything silently skipping)."""
    files = sorted((VECTORS / kind).rglob("*.json"))
    return [pytest.param(json.loads(f.read_text()),
                         id=f.relative_to(VECTORS).with_suffix("").as_posix())
            for f in files]


INCLUSION = _cases("inclusion")
CONSISTENCY = _cases("consistency")


def _b64(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def _proof(case: dict[str, Any]) -> list[bytes]:
    # A null proof in the vectors means "no hashes".
    return [_b64(p) for p in case["proof"] or []]


def test_all_vectors_found() -> None:
    assert VECTORS.is_dir(), f"Merkle test vectors missing: {VECTORS}"
    assert (len(INCLUSION), len(CONSISTENCY)) == (98, 98)


@pytest.mark.parametrize("case", INCLUSION)
def test_inclusion_vector(case: dict[str, Any]) -> None:
    def verify() -> None:
        verify_inclusion(_b64(case["leafHash"]), case["leafIdx"], case["treeSize"],
                         _proof(case), _b64(case["root"]))

    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify()
    else:
        verify()


@pytest.mark.parametrize("case", CONSISTENCY)
def test_consistency_vector(case: dict[str, Any]) -> None:
    def verify() -> None:
        verify_consistency(case["size1"], case["size2"], _b64(case["root1"]),
                           _b64(case["root2"]), _proof(case))

    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify()
    else:
        verify()


def _known_tree() -> MemoryNodes:
    return MemoryNodes(leaf_hash(d) for d in KNOWN_LEAVES)


def test_known_roots() -> None:
    nodes = _known_tree()
    assert KNOWN_ROOTS[0] == EMPTY_ROOT
    assert [root(n, nodes.get_node) for n in range(9)] == KNOWN_ROOTS


def test_happy_path_vectors_are_what_we_would_prove() -> None:
    """The vectors' happy paths use the known leaves, so our prover must emit their proofs."""
    nodes = _known_tree()
    checked = 0
    for param in INCLUSION + CONSISTENCY:
        case = param.values[0]
        if case["desc"] != "happy path":
            continue
        checked += 1
        if "leafIdx" in case:
            got = inclusion_proof(case["leafIdx"], case["treeSize"], nodes.get_node)
        else:
            got = consistency_proof(case["size1"], case["size2"], nodes.get_node)
        assert got == _proof(case), param.id
    assert checked == 10


def _mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 9162 section 2.1.1 MTH, straight from the definition."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


def _within(nodes: MemoryNodes, size: int) -> GetNode:
    """``nodes.get_node`` that fails on any node not complete within the first ``size``
    leaves: a historical root or proof must not depend on later leaves."""
    def get_node(level: int, index: int) -> bytes:
        assert (index + 1) << level <= size, (level, index, size)
        return nodes.get_node(level, index)
    return get_node


def _flipped(proof: list[bytes], i: int) -> list[bytes]:
    p = bytearray(proof[i])
    p[i % len(p)] ^= 0x01
    return [*proof[:i], bytes(p), *proof[i + 1:]]


def _assert_only_genuine(verify: Callable[..., None], proof: list[bytes]) -> None:
    """``verify(proof=...)`` accepts ``proof`` and rejects every copy with one byte of one
    hash flipped."""
    verify(proof=proof)
    for i in range(len(proof)):
        with pytest.raises(ProofError):
            verify(proof=_flipped(proof, i))


def test_random_trees_match_naive_mth_and_proofs_verify() -> None:
    rng = random.Random(9162)
    nodes = MemoryNodes()
    leaves: list[bytes] = []
    for size2 in range(1, 71):
        leaves.append(leaf_hash(rng.randbytes(rng.randrange(0, 40))))
        for level, index, value in nodes_to_store(size2 - 1, leaves[-1], nodes.get_node):
            nodes.put(level, index, value)
        assert nodes.size == size2
        roots = [_mth(leaves[:n]) for n in range(size2 + 1)]
        # Every prefix, including historical ones, from perfect nodes only.
        assert [root(n, _within(nodes, n)) for n in range(size2 + 1)] == roots
        root2 = roots[size2]
        for index in range(size2):
            proof = inclusion_proof(index, size2, _within(nodes, size2))
            verify = partial(verify_inclusion, leaves[index], index, size2, root=root2)
            _assert_only_genuine(verify, proof)
        for size1 in range(1, size2 + 1):
            proof = consistency_proof(size1, size2, _within(nodes, size2))
            verify = partial(verify_consistency, size1, size2, roots[size1], root2)
            _assert_only_genuine(verify, proof)


def test_append_stores_leaf_then_completed_nodes() -> None:
    nodes = MemoryNodes(leaf_hash(bytes([i])) for i in range(7))
    h = [nodes.get_node(0, i) for i in range(7)]
    new = leaf_hash(b"\x07")
    n01, n23, n45 = node_hash(h[0], h[1]), node_hash(h[2], h[3]), node_hash(h[4], h[5])
    n67 = node_hash(h[6], new)
    n0123, n4567 = node_hash(n01, n23), node_hash(n45, n67)
    assert nodes_to_store(7, new, nodes.get_node) == [
        (0, 7, new), (1, 3, n67), (2, 1, n4567), (3, 0, node_hash(n0123, n4567)),
    ]
    assert nodes_to_store(0, new, nodes.get_node) == [(0, 0, new)]


def test_rejects_bad_arguments() -> None:
    nodes = _known_tree()
    leaf = nodes.get_node(0, 0)
    with pytest.raises(ValueError, match="32 bytes"):
        nodes.append(b"short")
    for index, size in [(0, 0), (8, 8), (-1, 8)]:
        with pytest.raises(ValueError, match="not in a tree"):
            inclusion_proof(index, size, nodes.get_node)
        with pytest.raises(ProofError, match="not in a tree"):
            verify_inclusion(leaf, index, size, [], KNOWN_ROOTS[1])
    for size1, size2 in [(0, 0), (0, 4), (5, 4)]:
        with pytest.raises(ValueError, match="size1"):
            consistency_proof(size1, size2, nodes.get_node)
    with pytest.raises(ValueError, match="non-negative"):
        root(-1, nodes.get_node)
    proof = consistency_proof(4, 8, nodes.get_node)
    with pytest.raises(ProofError, match="root1 is 31 bytes"):
        verify_consistency(4, 8, KNOWN_ROOTS[4][:31], KNOWN_ROOTS[8], proof)
    proof = consistency_proof(3, 8, nodes.get_node)
    with pytest.raises(ProofError, match=r"proof\[1\] is 31 bytes"):
        verify_consistency(3, 8, KNOWN_ROOTS[3], KNOWN_ROOTS[8], [proof[0], proof[1][:31]])


def test_level_nodes_rebuild_the_same_tree_as_appending() -> None:
    """What ``audit verify`` rebuilds in one pass per level answers every root and proof
    exactly as the tree grown leaf by leaf."""
    rng = random.Random(16)
    leaves = [leaf_hash(rng.randbytes(rng.randrange(0, 40))) for _ in range(70)]
    for size in (1, 2, 3, 7, 8, 9, 64, 70):
        grown, built = MemoryNodes(leaves[:size]), LevelNodes(leaves[:size])
        assert built.size == size
        for n in range(1, size + 1):
            assert root(n, built.get_node) == root(n, grown.get_node)
            assert consistency_proof(n, size, built.get_node) == \
                consistency_proof(n, size, grown.get_node)
        for index in range(size):
            assert inclusion_proof(index, size, built.get_node) == \
                inclusion_proof(index, size, grown.get_node)
        # Built in aligned parts (as a verification split over processes builds it).
        for aligned in (0, 1, 3):
            step = 1 << aligned
            for cut in range(0, size + 1, step):
                for cut2 in range(cut, size + 1, step * 3):
                    parts = [LevelNodes(leaves[:cut]), LevelNodes(leaves[cut:cut2]),
                             LevelNodes(leaves[cut2:size])]
                    assert LevelNodes.joined(parts, aligned).levels == built.levels
    with pytest.raises(IndexError):
        LevelNodes(leaves[:5]).get_node(0, 5)
    with pytest.raises(ValueError, match="multiple"):
        LevelNodes.joined([LevelNodes(leaves[:3]), LevelNodes(leaves[3:8])], 1)
