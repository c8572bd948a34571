"""LogFrequency: one way to say how often to log, shared by every producer.

    LogFrequency.parse(5)        every 5th step: 0, 5, 10, ...   (itwinai log_freq=5, NeMo step_freq)
    LogFrequency.parse("batch")  every step
    LogFrequency.parse("epoch")  only at epoch ends (a call with epoch_end=True, or with no step)

A call marked epoch_end=True is logged under every rule: an epoch's summary is never skipped.
    LogFrequency(first=100)      the first 100 steps: 0..99
    LogFrequency(once=0)         exactly one step (Ignite's `once`)

A producer asks `freq(step)` before it builds an event, so a skipped call costs one comparison.
"""

from __future__ import annotations

from typing import Literal

from bus import InvalidConfig

__all__ = ["LogFrequency"]


class LogFrequency:
    """A rule deciding whether a given step is logged."""

    __slots__ = ("epoch_only", "every", "first", "once")

    def __init__(
        self,
        *,
        every: int | None = None,
        first: int | None = None,
        once: int | None = None,
        epoch_only: bool = False,
    ) -> None:
        chosen = [every is not None, first is not None, once is not None, epoch_only]
        if sum(chosen) != 1:
            raise InvalidConfig("give exactly one of every=, first=, once=, epoch_only=True")
        for name, value in (("every", every), ("first", first), ("once", once)):
            if value is not None and (type(value) is not int or value < (1 if name != "once" else 0)):
                raise InvalidConfig(f"{name} must be an int >= {1 if name != 'once' else 0}, got {value!r}")
        self.every = every
        self.first = first
        self.once = once
        self.epoch_only = epoch_only

    @classmethod
    def parse(cls, spec: int | Literal["batch", "step", "epoch"] | LogFrequency) -> LogFrequency:
        """An int N (every N steps), "batch"/"step" (every step), "epoch", or a LogFrequency."""
        if isinstance(spec, LogFrequency):
            return spec
        if isinstance(spec, bool):
            raise InvalidConfig(f"log frequency must be an int, 'batch', 'step' or 'epoch', got {spec!r}")
        if isinstance(spec, int):
            return cls(every=spec)
        if spec in ("batch", "step"):
            return cls(every=1)
        if spec == "epoch":
            return cls(epoch_only=True)
        raise InvalidConfig(f"log frequency must be an int, 'batch', 'step' or 'epoch', got {spec!r}")

    def __call__(self, step: int | None = None, *, epoch_end: bool = False) -> bool:
        """Whether to log at `step`. Epoch ends are always logged, whatever the rule."""
        if epoch_end:
            return True
        if self.epoch_only:
            return step is None  # a call without a step is an epoch-level call
        if step is None:
            return False
        if self.every is not None:
            return step % self.every == 0
        if self.first is not None:
            return step < self.first
        return step == self.once

    def __repr__(self) -> str:
        for name in ("every", "first", "once"):
            value = getattr(self, name)
            if value is not None:
                return f"LogFrequency({name}={value})"
        return "LogFrequency(epoch_only=True)"
