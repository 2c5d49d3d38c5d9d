import numpy as np


class SumTree:
    """
    A sum tree over ``capacity`` non-negative leaves, vectorised with NumPy: a batch of leaves is updated, or
    a batch of values is located, with one array operation per tree level (``O(log capacity)`` levels, no
    per-item Python loop).

    The tree is a flat array of ``2 * size`` entries (``size``: ``capacity`` rounded up to a power of two):
    node ``i`` has children ``2i`` and ``2i + 1``, the root is node 1, leaf ``j`` is node ``size + j``.

    :param capacity: Number of leaves
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}.")
        self.capacity = capacity
        self.depth = max(int(np.ceil(np.log2(capacity))), 0)
        self.size = 2**self.depth
        self.nodes = np.zeros(2 * self.size, dtype=np.float64)

    @property
    def total(self) -> float:
        """Sum of all leaves (node 1: the root, or the only leaf when ``size`` is 1)."""
        return float(self.nodes[1])

    def __getitem__(self, leaves: np.ndarray) -> np.ndarray:
        return self.nodes[self.size + np.asarray(leaves)]

    def update(self, leaves: np.ndarray, values: np.ndarray) -> None:
        """
        Set leaves to values (where a leaf appears several times, its last value is kept) and update the sums.

        :param leaves: Leaf indices in ``[0, capacity)``
        :param values: Non-negative values, same length
        """
        leaves = np.asarray(leaves, dtype=np.int64).reshape(-1)
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if len(leaves) == 0:
            return
        if np.any(values < 0) or not np.all(np.isfinite(values)):
            raise ValueError("Sum tree values must be finite and non-negative.")
        nodes = self.size + leaves
        self.nodes[nodes] = values
        if len(nodes) <= 4:
            # A few leaves (a step added by a few envs): scalar walks up the tree are cheaper than array operations
            tree = self.nodes
            for node in nodes.tolist():
                node //= 2
                while node >= 1:
                    tree[node] = tree[2 * node] + tree[2 * node + 1]
                    node //= 2
            return
        # Level by level up to the root: a parent listed twice gets the same sum twice, so no deduplication
        for _ in range(self.depth):
            nodes //= 2
            self.nodes[nodes] = self.nodes[2 * nodes] + self.nodes[2 * nodes + 1]

    def find(self, values: np.ndarray) -> np.ndarray:
        """
        Locate values in the cumulative sums of the leaves: for each ``v`` in ``[0, total)``, the leaf ``j`` with
        ``sum(leaves[:j]) <= v < sum(leaves[:j + 1])`` (never a zero leaf).

        :param values: Values in ``[0, total)``
        :return: Leaf indices
        """
        remaining = np.asarray(values, dtype=np.float64).reshape(-1).copy()
        nodes = np.ones(len(remaining), dtype=np.int64)
        for _ in range(self.depth):
            left = 2 * nodes
            left_sums = self.nodes[left]
            go_right = remaining >= left_sums
            # Rounding can leave a value just past a subtree's sum: never step into an empty subtree
            go_right &= self.nodes[left + 1] > 0
            go_right |= left_sums <= 0
            remaining = np.where(go_right, remaining - left_sums, remaining)
            nodes = left + go_right
        return nodes - self.size
