"""`metricbus replay` of a JSONL log into W&B (offline, read back from its run files) and MLflow
(read back with MlflowClient), every value and step compared; and replay is not live traffic for
a rate-limited sink: one row per step, or a reduction by steps."""

from __future__ import annotations

import math
from pathlib import Path

import anyio
import pytest
from mlflow import MlflowClient

from bus import MetricBus, Metrics, Origin, RateLimit, Scalar
from producers import replay
from producers._cli import main
from sinks import JsonlSink, MemorySink, WandbSink
from sinks._mlflow import ORIGIN_TAG
from sinks._wandb import STEP_KEY
from tests.helpers import normalized
from tests.wandb_reader import read_resumed_runs

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*")

T0 = 1_700_000_000.0
STEPS = 2_000
ORIGINS = [Origin(site="site-1"), Origin(node="site-1", rank=2)]


def recorded_run(path: Path) -> list[Scalar | Metrics]:
    """2,000 steps logged within 0.1 s from two origins (a fast loop), written by JsonlSink."""
    events: list[Scalar | Metrics] = []
    for step in range(STEPS):
        t = T0 + step * 0.1 / STEPS
        for k, origin in enumerate(ORIGINS):
            events.append(Scalar("train/loss", 1 / (step + 1) + k, step=step, wall_time=t, origin=origin))
            if step % 100 == 0:
                values = {"val/acc": step / STEPS + k, "val/nan": math.nan}
                events.append(Metrics(values, step=step, wall_time=t + 1e-6, origin=origin))

    async def write() -> None:
        async with MetricBus() as bus:
            bus.add_sink(JsonlSink(path), isolate="none")
            await bus.publish_many(events)

    anyio.run(write)
    return events


def expected_points(events: list[Scalar | Metrics], origin: Origin) -> dict[str, list[tuple[int, float, float]]]:
    """(step, wall time, value) of every value of `origin`, by name."""
    points: dict[str, list[tuple[int, float, float]]] = {}
    for e in events:
        if e.origin == origin:
            values = {e.name: e.value} if isinstance(e, Scalar) else e.values
            for name, value in values.items():
                points.setdefault(name, []).append((e.step, e.wall_time, value))
    return points


def same(a: float, b: float) -> bool:
    return repr(float(a)) == repr(float(b))  # exact doubles, NaN equal to NaN (W&B's JSON writes 1.0 as 1)


def test_replay_into_wandb_gives_every_step_and_value_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "e.jsonl"
    events = recorded_run(source)
    for name, value in {"MODE": "offline", "SILENT": "true", "DIR": str(tmp_path), "DISABLE_GIT": "true"}.items():
        monkeypatch.setenv(f"WANDB_{name}", value)
    assert main(["replay", str(source), "--to", "wandb:p"]) == 0  # WandbSink's default rate: 10 rows/s

    runs = {run.name: run for run in read_resumed_runs(tmp_path / "wandb").values()}
    assert sorted(runs) == sorted(o.label for o in ORIGINS)
    for origin in ORIGINS:
        got: dict[str, list[tuple[int, float]]] = {}
        assert (
            len(runs[origin.label].history) == STEPS
        )  # one row per step: nothing reduced, nothing merged across steps
        for row in runs[origin.label].history:
            for name, value in row.items():
                if not name.startswith("_") and name != STEP_KEY:
                    got.setdefault(name, []).append((row[STEP_KEY], value))
        want = expected_points(events, origin)
        assert sorted(got) == sorted(want)
        for name, points in want.items():
            assert len(got[name]) == len(points)
            assert all(s == gs and same(v, gv) for (s, _t, v), (gs, gv) in zip(points, got[name], strict=True))


def test_replay_into_mlflow_gives_every_step_time_and_value_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "e.jsonl"
    events = recorded_run(source)
    monkeypatch.chdir(tmp_path)  # MLflow puts a sqlite store's artifacts under the current directory
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["replay", str(source), "--to", f"mlflow:{uri}"]) == 0

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("metricbus")
    assert experiment is not None
    runs = {r.data.tags[ORIGIN_TAG]: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == sorted(o.label for o in ORIGINS)
    for origin in ORIGINS:
        run = runs[origin.label]
        assert run.info.status == "FINISHED"
        want = expected_points(events, origin)
        assert sorted(run.data.metrics) == sorted(want)
        for name, points in want.items():
            history = sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run.info.run_id, name))
            expected = sorted((s, int(t * 1000), v) for s, t, v in points)
            assert len(history) == len(expected)
            assert all(g[:2] == e[:2] and same(g[2], e[2]) for g, e in zip(history, expected, strict=True))


def test_replay_keeps_a_rate_limit_in_steps_and_drops_one_in_time(tmp_path: Path) -> None:
    source = tmp_path / "e.jsonl"
    events = recorded_run(source)
    by_steps, by_time, default = MemorySink("by-steps"), MemorySink("by-time"), WandbLike()
    stats = replay(
        [source],
        [
            (by_steps, {"rate": RateLimit(every=100, reduce="mean")}),
            (by_time, {"rate": RateLimit(per_second=10)}),
            default,  # its own default is a time limit, as WandbSink's
        ],
    )
    assert stats.ok and stats.events == len(events)
    assert normalized(by_time.events) == normalized(default.events) == normalized(events)  # every step
    per_origin = {o: [e for e in by_steps.events if e.origin == o] for o in ORIGINS}
    for k, origin in enumerate(ORIGINS):
        rows = per_origin[origin]  # a window of 100 steps: the eval at its first step, then the mean loss
        assert [e.step for e in rows] == [s for w in range(0, STEPS, 100) for s in (w, w + 99)]
        assert all(isinstance(e, Metrics) for e in rows)
        means = [e.values["train/loss"] for e in rows if "train/loss" in e.values]  # type: ignore[union-attr]
        assert means == pytest.approx(
            [sum(1 / (s + 1) + k for s in range(w, w + 100)) / 100 for w in range(0, STEPS, 100)]
        )
    assert stats.sinks["by-steps"].reduced == len(events) - len(by_steps.events) and stats.sinks["by-steps"].balanced


class WandbLike(MemorySink):
    """A MemorySink whose own default rate limit is W&B's."""

    rate = WandbSink.rate

    def __init__(self) -> None:
        super().__init__("wandb-like")
