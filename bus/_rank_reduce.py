"""Cross-rank reduction: the ranks of one job become one series, without a collective.

Every rank of a job logs its own values (an `Origin` with its `rank`), and only appends, as any
process does. A `RankReducer`, wherever the events meet (the aggregator of `metricbus aggregate`,
a job's sink host), turns them into the job's own series: per step, per metric, the `mean` (or
`sum`, `min`, `max`, `std`, `count`) over the ranks, as one `Metrics` row whose origin is the
ranks' origin without rank and node (`Origin(site=...)`: a job is one site; its ranks may run on
many nodes). The per-rank events go on to the sinks too, unless `keep_ranks=False`.

When is a step done? A rank may log a step in several calls (a loss, then a learning rate), and
they may arrive in different batches, so a step is done for a rank once that rank has moved on
to another step. It closes when every rank is done with it, or `deadline` seconds after its
first value arrived: then it is reduced over the ranks present, and the ranks that sent nothing
for it are named, never hidden in a partial mean:

- the row of the job carries `metricbus/ranks/missing` (how many) at that step, and 0 at the
  first full step after, so a chart shows where ranks were lost and found again;
- `stats().missing` says per rank from which step to which it was missing ("rank 3 missing from
  step 1,200"), which `missing_lines` writes as the lines a stats table shows.

A rank that missed a step's deadline is not waited for again until it is heard from, so a rank
killed mid-run costs one deadline, not one per step. Values that come for a step already closed
(a straggler beyond the deadline) are counted `late` and passed on as the rank's own series:
never folded into a row already written, never lost.

Memory is bounded: at most `max_open_steps` steps are open per reducer; above that the oldest is
closed early, over the ranks present (counted `forced`).

Values reduce as numpy would over the ranks: NaN in, NaN out (min/max/mean/std/sum); `std` is
the population standard deviation (numpy's default, ddof=0); `count` is the ranks that logged
the value. Events of other kinds, and events without a rank, pass through untouched.

The ranks may say how their metrics reduce, in the stream itself: a `RunConfig` whose values hold
`REDUCE_KEY` (`declare_reductions` builds it), sent by a rank before the values it describes (a
framework adapter knows, when the user logs, what the framework would have done: Lightning's
`self.log(..., sync_dist=True, reduce_fx="sum")`). A declared reduction is the job's own (per
`origin.site`) and comes first: before `RankReduce.metrics`, then `reduce`. It names metrics
exactly (no glob patterns); entries that are not a reduction are ignored. The RunConfig passes on
to the sinks like any other (W&B shows it in the rank's run config).
"""

from __future__ import annotations

import fnmatch
import math
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

import msgspec

from ._errors import InvalidConfig
from ._events import DEFAULT_ORIGIN, Context, Event, Metrics, Origin, RunConfig
from ._flatten import metric_items

__all__ = [
    "MISSING_METRIC",
    "REDUCE_KEY",
    "MissingRank",
    "RankReduce",
    "RankReducer",
    "RankReduction",
    "RankStats",
    "declare_reductions",
    "missing_lines",
    "reduce_values",
]

RankReduction: TypeAlias = Literal["mean", "sum", "min", "max", "std", "count", "none"]
_REDUCTIONS = ("mean", "sum", "min", "max", "std", "count", "none")

MISSING_METRIC = "metricbus/ranks/missing"
"""The job's series of how many ranks sent nothing for a step (written only around losses)."""

REDUCE_KEY = "metricbus/ranks/reduce"
"""The RunConfig key under which ranks declare how their metrics reduce ({name: reduction})."""

_RECENT = 4096  # closed steps remembered per job, to tell a late value from a new step


class RankReduce(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How the ranks of a job are reduced: `world_size` ranks (0 .. world_size-1); `reduce`, the
    reduction of every metric not named in `metrics` (a dict of name or glob pattern to a
    reduction; "none" keeps a metric per rank only); `deadline`, seconds a step waits for its
    missing ranks; `keep_ranks`, whether each rank's own series goes on to the sinks too;
    `max_open_steps`, the bound on steps held open."""

    world_size: int
    reduce: RankReduction = "mean"
    metrics: dict[str, RankReduction] = {}
    deadline: float = 10.0
    keep_ranks: bool = True
    max_open_steps: int = 10_000

    def __post_init__(self) -> None:
        if type(self.world_size) is not int or self.world_size < 1:
            raise InvalidConfig(f"world_size must be an int >= 1, got {self.world_size!r}")
        for name, how in [("reduce", self.reduce), *((f"metrics[{k!r}]", v) for k, v in self.metrics.items())]:
            if how not in _REDUCTIONS:
                raise InvalidConfig(f"{name} must be one of {', '.join(map(repr, _REDUCTIONS))}, got {how!r}")
        if not (isinstance(self.deadline, (int, float)) and 0 < self.deadline < math.inf):
            raise InvalidConfig(f"deadline must be a positive number of seconds, got {self.deadline!r}")
        if type(self.keep_ranks) is not bool:
            raise InvalidConfig(f"keep_ranks must be True or False, got {self.keep_ranks!r}")
        if type(self.max_open_steps) is not int or self.max_open_steps < 1:
            raise InvalidConfig(f"max_open_steps must be an int >= 1, got {self.max_open_steps!r}")

    def reduction(self, name: str) -> RankReduction:
        """The reduction of metric `name`: `named(name)`, else `reduce`."""
        how = self.named(name)
        return self.reduce if how is None else how

    def named(self, name: str) -> RankReduction | None:
        """The reduction `metrics` gives `name`: its own entry, else the first glob pattern that
        matches it (in the order given); None if none does."""
        how = self.metrics.get(name)
        if how is not None:
            return how
        for pattern, how in self.metrics.items():
            if fnmatch.fnmatchcase(name, pattern):
                return how
        return None


class MissingRank(msgspec.Struct, frozen=True):
    """One rank's absences: how many steps closed without it, the first and the last of them."""

    steps: int
    first_step: int
    last_step: int


class RankStats(msgspec.Struct, frozen=True):
    """What a RankReducer did. `steps` closed = `complete` (every rank) + `partial` (some missing);
    `forced`: of those, closed early by `max_open_steps`; `late`: values for a step already
    closed (passed on per rank); `outside`: events of a rank >= world_size (passed on untouched);
    `missing`: per rank label ('rank3', 'site/rank3'), its absences."""

    steps: int
    complete: int
    partial: int
    forced: int
    late: int
    outside: int
    open_steps: int
    missing: dict[str, MissingRank]


def declare_reductions(
    metrics: Mapping[str, RankReduction], *, origin: Origin = DEFAULT_ORIGIN, context: Context | None = None
) -> RunConfig:
    """The event by which a rank tells the reducer how `metrics` ({name: reduction}) reduce over
    the ranks of its job; publish it (with the rank's origin) before the values it describes."""
    declared: dict[str, str] = {}
    for name, how in metrics.items():
        if type(name) is not str or not name:
            raise InvalidConfig(f"a declared metric name must be a non-empty str, got {name!r}")
        if how not in _REDUCTIONS:
            choices = ", ".join(map(repr, _REDUCTIONS))
            raise InvalidConfig(f"{name!r}: the reduction must be one of {choices}, got {how!r}")
        declared[name] = how
    return RunConfig({REDUCE_KEY: declared}, origin=origin, context=context)


def _declared(event: Event) -> dict[str, RankReduction] | None:
    """The reductions a RunConfig declares (the valid entries), None if it declares none."""
    if type(event) is not RunConfig:
        return None
    table = event.values.get(REDUCE_KEY)  # type: ignore[union-attr]  # a RunConfig
    if not isinstance(table, dict):
        return None
    return {k: v for k, v in table.items() if isinstance(k, str) and v in _REDUCTIONS}


def missing_lines(stats: RankStats) -> list[str]:
    """One line per rank that missed steps, as a stats table shows it:
    'rank 3 missing from step 1,200 (57 steps, last 1,256)'."""
    lines = []
    for label, gone in sorted(stats.missing.items()):
        who = label.replace("rank", "rank ") if label.startswith("rank") else label
        more = f" ({gone.steps:,} steps, last {gone.last_step:,})" if gone.steps > 1 else ""
        lines.append(f"{who} missing from step {gone.first_step:,}{more}")
    return lines


@dataclass
class _Step:
    """One open step of one job: per metric its value from each rank, which ranks reported and
    which moved on, the ranks it does not wait for, the latest wall time, the first context, and
    the smallest token fed."""

    opened: float
    token: int
    wall_time: float = 0.0
    context: Context | None = None
    values: dict[str, dict[int, float]] = field(default_factory=dict)
    reported: set[int] = field(default_factory=set)
    done: set[int] = field(default_factory=set)
    skip: frozenset[int] = frozenset()  # ranks not waited for when the step opened


@dataclass
class _Job:
    """A job's state: each rank's current step, the ranks not waited for (they missed a deadline
    and have not been heard from since), the recently closed steps, whether the last closed step
    missed ranks, the reductions its ranks declared, and the steps a reducer before this one
    wrote (`RankReducer.recover`)."""

    origin: Origin
    declared: dict[str, RankReduction] = field(default_factory=dict)
    current: dict[int, int] = field(default_factory=dict)
    absent: set[int] = field(default_factory=set)
    closed: set[int] = field(default_factory=set)
    closed_order: deque[int] = field(default_factory=deque)
    was_missing: bool = False
    written: set[int] = field(default_factory=set)  # steps a reducer before this one wrote (`recover`)


class RankReducer:
    """Reduces the ranks' Scalar/Metrics events of each job (one job per `origin.site`) into the
    job's rows, per `RankReduce`. Feed it in arrival order with `add_many`; call `expired` now and
    then for steps past their deadline, and `drain` at the end.

    `token`: a number the caller raises with each batch it feeds (a read of a stream, say);
    `held_token()` is the smallest token whose values are still in an open step, so a caller
    that acknowledges its input only once the output is written acknowledges only batches below
    it (at-least-once holds for the reduced rows too)."""

    def __init__(self, settings: RankReduce) -> None:
        if not isinstance(settings, RankReduce):
            raise InvalidConfig(f"RankReducer takes a RankReduce, got {type(settings).__name__}")
        self.settings = settings
        self._jobs: dict[str, _Job] = {}
        self._open: dict[tuple[str, int], _Step] = {}  # in the order they opened
        self._how: dict[str, RankReduction] = {}
        self._steps = self._complete = self._partial = self._forced = self._late = self._outside = 0
        self._missing: dict[str, list[int]] = {}  # label -> [steps, first, last]

    @property
    def open_steps(self) -> int:
        return len(self._open)

    def held_token(self) -> int | None:
        """The smallest token fed into a step still open (None: nothing is held)."""
        return min((s.token for s in self._open.values()), default=None)

    def stats(self) -> RankStats:
        return RankStats(
            steps=self._steps,
            complete=self._complete,
            partial=self._partial,
            forced=self._forced,
            late=self._late,
            outside=self._outside,
            open_steps=len(self._open),
            missing={label: MissingRank(*m) for label, m in self._missing.items()},
        )

    # ---- feeding ----

    def add_many(self, events: Iterable[Event], token: int = 0) -> list[Event]:
        """Take events in arrival order; returns what goes on to the sinks, in order: events
        passed through, and the rows of the steps they closed."""
        out: list[Event] = []
        now = time.monotonic()
        world, keep = self.settings.world_size, self.settings.keep_ranks
        for event in events:
            rank = event.origin.rank
            items = metric_items(event) if rank is not None else ()
            if not items:
                declared = _declared(event)
                if declared:
                    self._job(event.origin.site).declared.update(declared)
                out.append(event)
                continue
            assert rank is not None  # items is empty otherwise
            if rank >= world:
                self._outside += 1
                out.append(event)
                continue
            late = self._fold(event, rank, items, now, token, out)
            if keep or late or self._unreduced(self._jobs[event.origin.site], items):
                out.append(event)
        if len(self._open) > self.settings.max_open_steps:
            self._force(out)
        return out

    def expired(self) -> list[Event]:
        """The rows of the steps whose deadline has passed, oldest first."""
        out: list[Event] = []
        limit = time.monotonic() - self.settings.deadline
        while self._open:
            key, step = next(iter(self._open.items()))
            if step.opened > limit:
                break
            self._close(key, out, deadline=True)
        return out

    def leave(self, site: str, rank: int) -> list[Event]:
        """Rank `rank` of job `site` is gone (its process closed its logger, or died): the step it
        was on is done for it, and no step waits for it any more (until it is heard from again).
        Returns the rows of the steps that closes; a step it never reported names it missing."""
        out: list[Event] = []
        job = self._jobs.get(site)
        if job is None:
            return out
        job.absent.add(rank)
        current = job.current.pop(rank, None)
        if current is not None:
            self._moved_on(job, site, current, rank, out)
        for key in [k for k in self._open if k[0] == site]:
            step = self._open.get(key)
            if step is not None and self._finished(job, step):
                self._close(key, out, deadline=False)
        return out

    def recover(self, site: str, steps: Iterable[int]) -> None:
        """The rows of these steps of job `site` were written by a reducer before this one (a job
        host that crashed; its ranks send again what it had not acknowledged): they are not
        reduced again, and values that come for them are neither folded nor `late` (they go on
        as their rank's own series as `keep_ranks` says, as they did the first time)."""
        self._job(site).written.update(steps)

    def drain(self) -> list[Event]:
        """Every open step's row, over the ranks present (the end of the run: the ranks that
        sent nothing for a step are named as missing)."""
        out: list[Event] = []
        while self._open:
            self._close(next(iter(self._open)), out, deadline=True)
        return out

    # ---- inside ----

    def _job(self, site: str) -> _Job:
        job = self._jobs.get(site)
        if job is None:
            job = self._jobs[site] = _Job(Origin(site=site))
        return job

    def _unreduced(self, job: _Job, items: Iterable[tuple[str, float]]) -> bool:
        """True if some of these metrics are not reduced ("none"): without keep_ranks their event
        still goes on, or they would be lost."""
        return any(self._reduction(job, name) == "none" for name, _ in items)

    def _reduction(self, job: _Job, name: str) -> RankReduction:
        """The job's declared reduction of `name`, else the settings' (cached: globs are slow)."""
        how = job.declared.get(name) if job.declared else None
        if how is not None:
            return how
        how = self._how.get(name)
        if how is None:
            if len(self._how) >= 100_000:  # many distinct names: do not keep them all
                self._how.clear()
            how = self._how[name] = self.settings.reduction(name)
        return how

    def _fold(
        self, event: Event, rank: int, items: Iterable[tuple[str, float]], now: float, token: int, out: list[Event]
    ) -> bool:
        """Fold one rank's values into its step; True if they came late (the step is closed), so
        they go on as the rank's own series whatever `keep_ranks` says."""
        site, number = event.origin.site, event.step
        job = self._job(site)
        job.absent.discard(rank)
        previous = job.current.get(rank)
        job.current[rank] = number
        key = (site, number)
        step = self._open.get(key)
        late = False
        if step is None:
            if number in job.written:
                pass  # reduced before a crash of the host: sent again, not new
            elif number in job.closed:
                self._late += 1
                late = True
            else:
                step = self._open[key] = _Step(now, token, skip=frozenset(job.absent))
        if step is not None:
            step.reported.add(rank)
            step.wall_time = max(step.wall_time, event.wall_time)
            if step.context is None:
                step.context = event.context
            values = step.values
            for name, value in items:
                per_rank = values.get(name)
                if per_rank is None:
                    values[name] = {rank: value}
                else:
                    per_rank[rank] = value
        if previous is not None and previous != number:
            self._moved_on(job, site, previous, rank, out)
        return late

    def _moved_on(self, job: _Job, site: str, number: int, rank: int, out: list[Event]) -> None:
        step = self._open.get((site, number))
        if step is None:
            return
        step.done.add(rank)
        if self._finished(job, step):
            self._close((site, number), out, deadline=False)

    def _finished(self, job: _Job, step: _Step) -> bool:
        world = self.settings.world_size
        if len(step.done) == world:
            return True
        done, absent, skip = step.done, job.absent, step.skip
        return all(r in done or r in absent or r in skip for r in range(world))

    def _force(self, out: list[Event]) -> None:
        while len(self._open) > self.settings.max_open_steps:
            self._forced += 1
            self._close(next(iter(self._open)), out, deadline=True)

    def _close(self, key: tuple[str, int], out: list[Event], *, deadline: bool) -> None:
        """Write the step's row (and its missing count), forget it, and, when it closed without
        some ranks, stop waiting for them and close what that finishes."""
        site, number = key
        step = self._open.pop(key)
        job = self._jobs[site]
        job.closed.add(number)
        job.closed_order.append(number)
        if len(job.closed_order) > _RECENT:
            job.closed.discard(job.closed_order.popleft())
        values = self._reduce(job, step)
        missing = [r for r in range(self.settings.world_size) if r not in step.reported]
        self._steps += 1
        if missing:
            self._partial += 1
            values[MISSING_METRIC] = float(len(missing))
            for r in missing:
                self._note_missing(Origin(site=site, rank=r).label, number)
        else:
            self._complete += 1
            if job.was_missing:
                values[MISSING_METRIC] = 0.0
        job.was_missing = bool(missing)
        if values:
            out.append(Metrics(values, number, wall_time=step.wall_time, origin=job.origin, context=step.context))
        if deadline and missing:
            job.absent.update(missing)
            for other_key in [k for k in self._open if k[0] == site]:
                other = self._open.get(other_key)
                if other is not None and self._finished(job, other):
                    self._close(other_key, out, deadline=False)

    def _note_missing(self, label: str, number: int) -> None:
        seen = self._missing.get(label)
        if seen is None:
            self._missing[label] = [1, number, number]
        else:
            seen[0] += 1
            seen[1] = min(seen[1], number)
            seen[2] = max(seen[2], number)

    def _reduce(self, job: _Job, step: _Step) -> dict[str, float]:
        reduced: dict[str, float] = {}
        for name, per_rank in step.values.items():
            how = self._reduction(job, name)
            if how != "none":
                reduced[name] = reduce_values(how, [per_rank[r] for r in sorted(per_rank)])
        return reduced


def reduce_values(how: str, values: list[float]) -> float:
    """`how` over `values` (not empty) as numpy computes it: NaN propagates, std has ddof=0."""
    n = len(values)
    if how == "count":
        return float(n)
    if how == "sum":
        return float(sum(values))
    if how == "mean":
        return float(sum(values)) / n
    if how in ("min", "max"):
        if any(math.isnan(v) for v in values):
            return math.nan
        return min(values) if how == "min" else max(values)
    mean = float(sum(values)) / n  # std
    if not math.isfinite(mean):
        return math.nan
    return math.sqrt(sum((v - mean) ** 2 for v in values) / n)
