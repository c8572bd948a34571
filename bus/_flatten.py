"""The values an event carries, as (name, value) pairs: what every sink of measurements reads.

A `Scalar` carries one value and a `Metrics` many; both are the same thing to a CSV row, a
callback per value, a NaN check, a rate-limited window or a W&B row. `metric_items` is the one
place that knows how each kind holds its values, so a sink loops over pairs and reads the step,
wall time, origin and context from the event:

    for event in events:
        for name, value in metric_items(event):
            write(event.origin.label, event.step, name, value)

It is one call per event, not a generator (a generator per event costs more than the loop it
feeds), and it copies nothing: a Metrics gives its dict's own items view, a Scalar a one-pair
tuple. `Hparams.metrics` are not included: they are the result of a run, not a point of a
series, and each sink that shows them says how.

Two encoders write a Scalar in one step of their own, because a call per event would cost them
about a tenth of their pace: the CSV long layout (one f-string per row) and TensorBoard (a
Scalar's record head precomputed per name; a Metrics is one record of many values there, not
flattened at all).
"""

from __future__ import annotations

from collections.abc import Collection

from ._events import Event, Metrics, Scalar

__all__ = ["metric_items"]

_NONE: tuple[tuple[str, float], ...] = ()


def metric_items(event: Event) -> Collection[tuple[str, float]]:
    """The (name, value) pairs of a Scalar or Metrics event, in the order they were logged;
    empty for every other kind and for an empty Metrics. Sized, so `if metric_items(event):`
    tells whether the event carries values at all."""
    kind = type(event)
    if kind is Scalar:
        return ((event.name, event.value),)  # type: ignore[union-attr]  # kind is Scalar
    if kind is Metrics:
        return event.values.items()  # type: ignore[union-attr]  # kind is Metrics
    return _NONE
