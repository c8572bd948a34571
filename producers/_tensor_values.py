"""Tensor values without a host sync on the training thread.

`log.scalar("loss", loss, step)` with a one-element tensor keeps the tensor (detached) in the row
instead of calling `.item()`, which on a GPU waits for every kernel queued before it. The rows of
a batch that holds tensors are resolved off the training thread, all at once: the tensors of one
device and dtype are stacked into one tensor (one kernel), copied with `non_blocking=True` into
pinned host memory, and a CUDA event is recorded; the pump thread polls the event and, once the
copy has landed, reads the values (`float()` of each element equals `.item()` of each tensor).
CPU tensors are read the same way, on the pump thread.

A tensor changed in place after it was logged and before its batch is resolved (a few
milliseconds) is read at its later value: log `t.detach().clone()` if the loop updates it in place.
torch is never imported here: a tensor can only reach us if the caller has imported it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from bus import InvalidEvent

__all__ = ["Unresolved", "is_tensor", "tensor_value"]


def is_tensor(value: object) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def tensor_value(value: Any, field: str) -> Any:
    """A one-element real tensor, detached, checked from its metadata only (no sync)."""
    if value.numel() != 1:
        raise InvalidEvent(field, value, f"must be a single number, not a tensor of shape {tuple(value.shape)}")
    dtype = value.dtype
    if dtype.is_complex or dtype == sys.modules["torch"].bool:
        raise InvalidEvent(field, value, f"must be a real number, not a tensor of dtype {dtype}")
    return value.detach().reshape(())


class TensorBatch:
    """The tensors of one batch of rows, being copied to the host."""

    def __init__(self, items: Sequence[Any]) -> None:
        import torch

        self.items = items
        self._places: list[tuple[int, str | None]] = []  # (item index, key in a Metrics row or None)
        tensors: list[Any] = []
        for i, item in enumerate(items):
            if type(item) is tuple and is_tensor(item[1]):
                self._places.append((i, None))
                tensors.append(item[1])
            elif type(item) is list:
                for key, value in item[0].items():
                    if is_tensor(value):
                        self._places.append((i, key))
                        tensors.append(value)
        self._groups: dict[tuple[Any, Any], list[int]] = {}
        for n, tensor in enumerate(tensors):
            self._groups.setdefault((tensor.device, tensor.dtype), []).append(n)
        self._values: list[float] = [0.0] * len(tensors)
        self._pending: list[tuple[list[int], Any, Any]] = []  # (indices, host tensor, CUDA event)
        for (device, _dtype), indices in self._groups.items():
            stacked = torch.stack([tensors[n] for n in indices]).to(torch.float64)
            if device.type == "cuda":
                host = torch.empty(len(indices), dtype=torch.float64, pin_memory=True)
                host.copy_(stacked, non_blocking=True)
                event = torch.cuda.Event()  # type: ignore[no-untyped-call]
                event.record()
                self._pending.append((indices, host, event))
            else:
                self._pending.append((indices, stacked, None))

    def ready(self) -> bool:
        """True once every copy has landed (never waits)."""
        return all(event is None or event.query() for _, _, event in self._pending)

    def resolved(self) -> list[Any]:
        """The rows with each tensor replaced by its value; call once `ready()`."""
        for indices, host, _ in self._pending:
            for n, value in zip(indices, host.tolist(), strict=True):
                self._values[n] = value
        items = list(self.items)
        for (i, key), value in zip(self._places, self._values, strict=True):
            item = items[i]
            if key is None:
                items[i] = (item[0], value, *item[2:])
            else:
                values = dict(item[0])
                values[key] = value
                items[i] = [values, *item[1:]]
        return items


class Unresolved:
    """A batch waiting for tensor values (or queued behind one, to keep the order), with the
    scope it was logged in. Only the pump thread calls `values`."""

    def __init__(self, scope: Any, items: list[Any]) -> None:
        self.scope = scope
        self.items = items
        self._tensors: TensorBatch | None = None

    def values(self) -> list[Any] | None:
        """The rows with plain values, once the copies have landed; None until then."""
        if self._tensors is None:
            self._tensors = TensorBatch(self.items)
        return self._tensors.resolved() if self._tensors.ready() else None
