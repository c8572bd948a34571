"""LogFrequency: one way to say how often to log, shared by every producer.

    LogFrequency.parse(5)        every 5th step: 0, 5, 10, ...   (itwinai log_freq=5, NeMo step_freq)
    LogFrequency.parse("batch")  every step ("step" is a synonym)
    LogFrequency.parse("epoch")  only epoch ends (a call with epoch_end=True, or with no step)
    LogFrequency(first=100)      the first 100 steps: 0..99
    LogFrequency(once=0)         exactly one step (Ignite's `once`)

A call marked epoch_end=True is logged under every rule: an epoch's summary is never skipped.
A producer asks `freq.should_log(step)` (or `freq(step)`) before it builds an event, so a skipped
call costs one method call and a comparison (`bench_summary_writer` measures it).
"""

from __future__ import annotations

from typing import Literal, TypeAlias

from bus import InvalidConfig

__all__ = ["FrequencySpec", "LogFrequency"]

_SPEC_HELP = "an int N >= 1 (every N steps), 'batch', 'step', 'epoch' or a LogFrequency"


class LogFrequency:
    """A rule deciding whether a given step is logged. Immutable; compare with ==."""

    __slots__ = ("epoch_only", "every", "first", "once")

    every: int | None
    first: int | None
    once: int | None
    epoch_only: bool

    def __init__(
        self,
        *,
        every: int | None = None,
        first: int | None = None,
        once: int | None = None,
        epoch_only: bool = False,
    ) -> None:
        if sum((every is not None, first is not None, once is not None, epoch_only is True)) != 1:
            raise InvalidConfig("give exactly one of every=, first=, once=, epoch_only=True")
        for name, value, least in (("every", every, 1), ("first", first, 1), ("once", once, 0)):
            if value is not None and (type(value) is not int or value < least):
                raise InvalidConfig(f"{name} must be an int >= {least}, got {value!r}")
        for name, value in (("every", every), ("first", first), ("once", once), ("epoch_only", epoch_only)):
            object.__setattr__(self, name, value)

    @classmethod
    def parse(cls, spec: FrequencySpec) -> LogFrequency:
        """An int N (every N steps), "batch"/"step" (every step), "epoch", or a LogFrequency."""
        if isinstance(spec, LogFrequency):
            return spec
        if type(spec) is int:
            if spec < 1:
                raise InvalidConfig(f"log frequency must be {_SPEC_HELP}; got {spec!r}")
            return cls(every=spec)
        if spec in ("batch", "step"):
            return cls(every=1)
        if spec == "epoch":
            return cls(epoch_only=True)
        raise InvalidConfig(f"log frequency must be {_SPEC_HELP}; got {spec!r}")

    def should_log(self, step: int | None = None, epoch_end: bool = False) -> bool:
        """Whether a call at `step` is logged. Epoch ends are always logged, whatever the rule;
        a call without a step is an epoch-level call (logged only under "epoch")."""
        if epoch_end:
            return True
        if self.epoch_only:
            return step is None
        if step is None:
            return False
        if self.every is not None:
            return step % self.every == 0
        if self.first is not None:
            return step < self.first
        return step == self.once

    # `freq(step)` is the short spelling producers use on their hot path; one function, no wrapper.
    __call__ = should_log

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"LogFrequency is immutable; build a new one instead of setting {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LogFrequency):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[int | None, int | None, int | None, bool]:
        return (self.every, self.first, self.once, self.epoch_only)

    def __repr__(self) -> str:
        for name in ("every", "first", "once"):
            value = getattr(self, name)
            if value is not None:
                return f"LogFrequency({name}={value})"
        return "LogFrequency(epoch_only=True)"


#: What `LogFrequency.parse` (and every producer's `log_freq=`) accepts.
FrequencySpec: TypeAlias = int | Literal["batch", "step", "epoch"] | LogFrequency
