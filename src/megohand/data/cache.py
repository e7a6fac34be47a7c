"""A least-recently-used cache bounded by bytes (decoded frames, per-episode hand states, scene facts).

Counting entries is not enough: one long real episode holds as many bytes as hundreds of short synthetic ones.
``functools.lru_cache`` bounds by count only, hence this small class.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Hashable


def nbytes(value: Any) -> int:
    """Bytes held by arrays/tensors in ``value`` (an array, a tensor, or a tuple/list/dict of them, or an object
    whose ``__dict__`` holds them); other things count 0."""
    if value is None:
        return 0
    if hasattr(value, "nbytes"):
        return int(value.nbytes)
    if hasattr(value, "element_size") and hasattr(value, "nelement"):  # torch.Tensor
        return int(value.element_size() * value.nelement())
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if hasattr(value, "__dict__"):
        return sum(nbytes(v) for v in vars(value).values())
    return 0


class BytesLRU:
    """get / put / get_or_make by key; the oldest-used entries leave once the total exceeds ``max_bytes``; a value
    larger than the whole budget is not kept."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes, self.items = int(max_bytes), 0, OrderedDict()

    def __contains__(self, key: Hashable) -> bool:
        return key in self.items

    def get(self, key: Hashable, default=None):
        hit = self.items.get(key)
        if hit is None:
            return default
        self.items.move_to_end(key)
        return hit[0]

    def put(self, key: Hashable, value: Any) -> None:
        size = nbytes(value)
        if size > self.max_bytes:
            return
        old = self.items.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self.items[key] = (value, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, gone) = self.items.popitem(last=False)
            self.bytes -= gone

    def get_or_make(self, key: Hashable, make: Callable[[], Any]):
        """The cached value of ``key``, else ``make()`` (cached, None included: a missing fact is not recomputed)."""
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key][0]
        value = make()
        self.put(key, value)
        return value
