"""RFC 9162 Merkle tree (RFC 6962 hashing) over perfect nodes kept in a table.

A perfect node ``(level, index)`` is the hash of the complete subtree of ``2**level`` leaves
starting at leaf ``index * 2**level``; level 0 holds the leaf hashes. Readers take a
``get_node(level, index)`` callable and ask only for perfect nodes that lie entirely within the
tree size they were given, so roots and proofs for an older size still work after the log has
grown.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import TypeAlias

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "GetNode",
    "LevelNodes",
    "MemoryNodes",
    "ProofError",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "nodes_to_store",
    "root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Length in bytes of every hash in the tree (SHA-256)."""

GetNode: TypeAlias = Callable[[int, int], bytes]
"""``get_node(level, index)``: the stored perfect node; may raise (e.g. KeyError) if absent."""

EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()
"""Root of the empty tree: SHA-256 of the empty string."""


class ProofError(ValueError):
    """An inclusion or consistency proof failed to verify; the message says why."""


def leaf_hash(data: bytes) -> bytes:
    """Hash of a leaf: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash of an interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n >= 2``): where MTH splits."""
    return 1 << ((n - 1).bit_length() - 1)


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _subtree(start: int, end: int, get_node: GetNode) -> bytes:
    """MTH of leaves ``[start, end)`` (non-empty) from perfect nodes only.

    Every range reached from MTH's recursion starts on a multiple of the smallest power of two
    that is >= its length, so each power-of-two piece is exactly one perfect node.
    """
    n = end - start
    if _is_power_of_two(n):
        level = n.bit_length() - 1
        return get_node(level, start >> level)
    k = _split(n)
    return node_hash(_subtree(start, start + k, get_node), _subtree(start + k, end, get_node))


def nodes_to_store(index: int, leaf: bytes, get_node: GetNode) -> list[tuple[int, int, bytes]]:
    """The perfect nodes ``(level, index, hash)`` to store when leaf hash ``leaf`` is appended
    at position ``index`` (the current tree size): the leaf itself first, then every node this
    append completes, lowest level first. Reads only the left siblings on the way up."""
    if index < 0:
        raise ValueError(f"leaf index must be non-negative, got {index}")
    if len(leaf) != HASH_SIZE:
        raise ValueError(f"leaf hash must be {HASH_SIZE} bytes, got {len(leaf)}")
    nodes = [(0, index, leaf)]
    level, i, h = 0, index, leaf
    # A node with an odd index is a right child, so appending it completes its parent.
    while i & 1:
        h = node_hash(get_node(level, i - 1), h)
        level, i = level + 1, i >> 1
        nodes.append((level, i, h))
    return nodes


def root(size: int, get_node: GetNode) -> bytes:
    """Root (MTH) of the first ``size`` leaves, for any size up to the current one; uses one
    lookup per set bit of ``size``."""
    if size < 0:
        raise ValueError(f"tree size must be non-negative, got {size}")
    if size == 0:
        return EMPTY_ROOT
    return _subtree(0, size, get_node)


def inclusion_proof(index: int, size: int, get_node: GetNode) -> list[bytes]:
    """RFC 9162 section 2.1.3.1 inclusion proof (audit path) for leaf ``index`` in the tree of
    the first ``size`` leaves, bottom-up."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    proof: list[bytes] = []
    start, end = 0, size
    # Walk down from the root; the RFC lists siblings from the leaf up, hence the reverse.
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            proof.append(_subtree(start + k, end, get_node))
            end = start + k
        else:
            proof.append(_subtree(start, start + k, get_node))
            start += k
    proof.reverse()
    return proof


def consistency_proof(size1: int, size2: int, get_node: GetNode) -> list[bytes]:
    """RFC 9162 section 2.1.4.1 consistency proof that the tree of the first ``size1`` leaves
    is a prefix of the tree of the first ``size2``; empty when the sizes are equal."""
    if not 0 < size1 <= size2:
        raise ValueError(f"need 0 < size1 <= size2, got size1={size1}, size2={size2}")
    proof: list[bytes] = []
    start, end = 0, size2
    # SUBPROOF walked top-down: each step adds the subtree on the side that does not contain
    # the old tree's right edge; the RFC lists them innermost first, hence the reverse.
    while end != size1:
        k = _split(end - start)
        if size1 <= start + k:
            proof.append(_subtree(start + k, end, get_node))
            end = start + k
        else:
            proof.append(_subtree(start, start + k, get_node))
            start += k
    # SUBPROOF's flag b turned false once we went right: the verifier cannot derive this
    # subtree of the old tree from root1, so it is sent.
    if start != 0:
        proof.append(_subtree(start, end, get_node))
    proof.reverse()
    return proof


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{name} is {len(value)} bytes, expected a {HASH_SIZE}-byte hash")


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for i, p in enumerate(proof):
        _check_hash(f"proof[{i}]", p)


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Return if ``proof`` shows that leaf hash ``leaf`` is leaf ``index`` of the tree of
    ``size`` leaves with root hash ``root`` (RFC 9162 section 2.1.3.2); raise ProofError
    otherwise."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    # Every value fed into node_hash must be a real hash; roots are only compared.
    _check_hash("leaf hash", leaf)
    _check_proof_hashes(proof)
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError(
                f"inclusion proof is too long for leaf {index} of a tree of size {size}"
            )
        if fn & 1 or fn == sn:
            # p is a left sibling. If fn is even (fn == sn: the right edge, with no sibling
            # at this level) the node rose unchanged until it was a right child: skip those.
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError(f"inclusion proof is too short for leaf {index} of a tree of size {size}")
    if r != root:
        raise ProofError(f"inclusion proof for leaf {index} does not lead to the given root")


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Return if ``proof`` shows that the tree of ``size1`` leaves with root ``root1`` is a
    prefix of the tree of ``size2`` leaves with root ``root2`` (RFC 9162 section 2.1.4.2);
    raise ProofError otherwise. Equal sizes need an empty proof and equal roots; a proof from
    the empty tree (``size1 == 0``) is rejected because it proves nothing."""
    if size1 < 0 or size2 < 0:
        raise ProofError(f"tree sizes must be non-negative, got {size1} and {size2}")
    if size1 == 0:
        raise ProofError("a consistency proof from the empty tree proves nothing")
    if size1 > size2:
        raise ProofError(f"size1 ({size1}) is larger than size2 ({size2})")
    _check_proof_hashes(proof)
    if size1 == size2:
        # Nothing is hashed here, so the roots are compared as given (the vectors accept
        # equal placeholder roots that are not 32 bytes).
        if proof:
            raise ProofError("tree sizes are equal, so the consistency proof must be empty")
        if root1 != root2:
            raise ProofError(f"tree sizes are equal ({size1}) but the roots differ")
        return
    if not proof:
        raise ProofError(f"empty consistency proof between sizes {size1} and {size2}")
    path = list(proof)
    if _is_power_of_two(size1):
        # The old tree is one perfect subtree of the new one, so its root starts the chain
        # and, like any hashed value, must be a real hash.
        _check_hash("root1", root1)
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof is too long for sizes {size1} and {size2}")
        if fn & 1 or fn == sn:
            # A left sibling, inside both trees; skip levels as in verify_inclusion.
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            # A node right of the old tree's edge: only the new root covers it.
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError(f"consistency proof is too short for sizes {size1} and {size2}")
    if fr != root1:
        raise ProofError(f"consistency proof does not lead to root1 (size {size1})")
    if sr != root2:
        raise ProofError(f"consistency proof does not lead to root2 (size {size2})")


class MemoryNodes:
    """Perfect nodes in a dict: a ``get_node`` for the functions above plus ``append``, for
    tests and for verifiers that rebuild a tree in memory."""

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        """Start empty, then append each leaf hash in ``leaves``."""
        self._nodes: dict[tuple[int, int], bytes] = {}
        self._size = 0
        for leaf in leaves:
            self.append(leaf)

    @property
    def size(self) -> int:
        """Number of leaves stored."""
        return self._size

    def get_node(self, level: int, index: int) -> bytes:
        """The stored perfect node; KeyError if it is not there."""
        return self._nodes[(level, index)]

    def put(self, level: int, index: int, value: bytes) -> None:
        """Store a perfect node (as a database row would be inserted)."""
        self._nodes[(level, index)] = value
        if level == 0:
            self._size = max(self._size, index + 1)

    def append(self, leaf: bytes) -> int:
        """Append leaf hash ``leaf``, store the nodes it completes, and return its index."""
        index = self._size
        for level, i, value in nodes_to_store(index, leaf, self.get_node):
            self.put(level, i, value)
        return index


class LevelNodes:
    """Every perfect node of a tree whose leaf hashes are all known, one byte string of
    concatenated hashes per level: a ``get_node`` for a verifier that rebuilds a large tree
    at once (cheaper than ``MemoryNodes``' dict of tuples; each level is hashed in one pass
    and pickles as one object). ``joined`` assembles trees built over consecutive spans."""

    def __init__(self, leaves: Sequence[bytes] | bytes) -> None:
        self.levels = [leaves if isinstance(leaves, bytes) else b"".join(leaves)]
        self._grow()

    def _grow(self) -> None:
        sha256, pair = hashlib.sha256, 2 * HASH_SIZE
        while len(lower := self.levels[-1]) > HASH_SIZE:
            # An odd last node has no sibling yet: it is no perfect node's child.
            self.levels.append(b"".join([sha256(b"\x01" + lower[i:i + pair]).digest()
                                         for i in range(0, len(lower) - pair + 1, pair)]))

    @classmethod
    def joined(cls, parts: Sequence[LevelNodes], aligned: int) -> LevelNodes:
        """The tree over the parts' leaves in order, when every part but the last holds a
        multiple of ``2**aligned`` leaves: up to that level the parts' nodes are the whole
        tree's, side by side; the levels above are hashed here."""
        if any(p.size % (1 << aligned) for p in parts[:-1]):
            raise ValueError("every part but the last must hold a multiple of 2**aligned leaves")
        tree = cls.__new__(cls)
        tree.levels = [b"".join(p.levels[level] for p in parts if level < len(p.levels))
                       for level in range(aligned + 1)]
        while len(tree.levels) > 1 and not tree.levels[-1]:
            tree.levels.pop()
        tree._grow()
        return tree

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self.levels[0]) // HASH_SIZE

    def get_node(self, level: int, index: int) -> bytes:
        """The perfect node; IndexError if the tree has no such node."""
        start = index * HASH_SIZE
        if level < 0 or index < 0 or start >= len(self.levels[level]):
            raise IndexError(f"no perfect node at level {level}, index {index}")
        return self.levels[level][start:start + HASH_SIZE]
