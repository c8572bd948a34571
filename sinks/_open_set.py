"""OpenSet: at most N things held open at once (event files, W&B runs, MLflow runs), by key.

A sink writes one run per origin, and origins may number thousands (federated sites, every rank
of a big job): holding each run's file or SDK run open would run out of file descriptors (1,024
by default) or memory. The sinks keep the runs they wrote last open and close the least recently
used one to make room; a closed run is opened again, and continues, when its origin writes next.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from bus import InvalidConfig

__all__ = ["OpenSet"]

K = TypeVar("K")
V = TypeVar("V")


class OpenSet(Generic[K, V]):
    """Open things by key, at most `limit` of them; `close(value)` is called on the least recently
    used one to make room. A key leaves the set once its close returns or raises (while a close
    hangs, its key is still in the set: what was left open can be reported)."""

    def __init__(self, limit: int, close: Callable[[V], None], *, option: str = "max_open_runs") -> None:
        if type(limit) is not int or limit < 1:
            raise InvalidConfig(f"{option} must be an int >= 1, got {limit!r}")
        self.limit = limit
        self._close = close
        self._open: OrderedDict[K, V] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._open

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._open))

    def __getitem__(self, key: K) -> V:
        """The open value of `key` (now the most recently used); KeyError if it is not open."""
        self._open.move_to_end(key)
        return self._open[key]

    def get(self, key: K) -> V | None:
        """The open value of `key` (now the most recently used), or None."""
        value = self._open.get(key)
        if value is not None:
            self._open.move_to_end(key)
        return value

    def make_room(self, keep: frozenset[K] | set[K] = frozenset()) -> None:
        """Close the least recently used values until one more fits, sparing those in `keep`
        (when only kept ones are left, the set grows past its limit rather than close them)."""
        for key in list(self._open):
            if len(self._open) < self.limit:
                return
            if key not in keep:
                self._evict(key)  # the least recently used first: the set is in order of use

    def add(self, key: K, value: V) -> None:
        """Hold `value` open under `key`; call `make_room` first."""
        self._open[key] = value

    def close_all(self) -> None:
        """Close every value, least recently used first; the first error is raised after the rest closed."""
        error: BaseException | None = None
        for key in list(self._open):
            try:
                self._evict(key)
            except BaseException as exc:  # close the others anyway
                error = error or exc
        if error is not None:
            raise error

    def _evict(self, key: K) -> None:
        try:
            self._close(self._open[key])
        finally:
            del self._open[key]
