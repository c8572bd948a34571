"""MLflowSink with a real local sqlite store, read back with MlflowClient.

One store serves the module (creating its tables takes MLflow ~1.5 s); each test writes into an
experiment of its own. The one spy counts log_batch calls to see the chunking.
"""

from __future__ import annotations

import logging
import math
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities import Run

from bus import Event, Histogram, Hparams, MetricBus, Metrics, Origin, Scalar, Text
from sinks import MLflowSink, read_jsonl
from sinks._mlflow import GROUP_TAG, ORIGIN_TAG
from tests.helpers import normalized

pytestmark = [
    pytest.mark.anyio,
    # MLflow's store still uses an SQLAlchemy loader option that SQLAlchemy 2.1 deprecates.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*"),
]

FLOAT_MAX = sys.float_info.max  # what MLflow's SQL store keeps for +inf


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("mlflow")


@pytest.fixture
def experiment(request: pytest.FixtureRequest) -> str:
    return str(request.node.name)


def client_of(store: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{store / 'mlruns.db'}")


def runs_of(store: Path, experiment: str) -> dict[str, Run]:
    """The experiment's runs by origin label."""
    client = client_of(store)
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    return {run.data.tags[ORIGIN_TAG]: run for run in client.search_runs([found.experiment_id])}


def history(store: Path, run: Run, key: str) -> list[tuple[int, int, Any]]:
    """(step, timestamp ms, value) of every point, sorted; NaN as a marker so lists compare."""
    points = client_of(store).get_metric_history(run.info.run_id, key)
    return sorted((m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value) for m in points)


def expected(events: list[Event], key: str) -> list[tuple[int, int, Any]]:
    out = []
    for event in events:
        values = {event.name: event.value} if isinstance(event, Scalar) else getattr(event, "values", {})
        if key in values:
            value = values[key]
            value = "nan" if math.isnan(value) else math.copysign(FLOAT_MAX, value) if math.isinf(value) else value
            out.append((event.step, int(event.wall_time * 1000), value))
    return sorted(out)


async def test_every_value_step_and_time_reads_back_from_the_worker_process(store: Path, experiment: str) -> None:
    steps = [10, 5, 7, 7, 0]  # backwards and repeated: MLflow keeps every point
    odd = [math.nan, math.inf, -math.inf, 0.5, -0.0]  # NaN reads back NaN, ±inf as ±FLOAT_MAX
    events: list[Event] = []
    for i, step in enumerate(steps):
        wall = 1_700_000_000.123 + i
        events.append(Scalar("train/loss", step / 10 + i, step=step, wall_time=wall))
        events.append(Metrics({"acc": step / 100, "odd": odd[i]}, step=step, wall_time=wall))
    async with MetricBus() as bus:
        name = bus.add_sink(MLflowSink(dir=store, experiment=experiment))  # isolation="process": its worker
        await bus.publish_many(events)
    assert bus.stats()[name].delivered == len(events) and bus.stats()[name].restarts == 0
    (run,) = runs_of(store, experiment).values()
    for key in ("train/loss", "acc", "odd"):
        assert history(store, run, key) == expected(events, key)
    assert run.info.status == "FINISHED" and run.info.run_name == "main"


async def test_log_batch_calls_stay_within_mlflows_limits(
    store: Path, experiment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[tuple[int, int]] = []
    real = MlflowClient.log_batch

    def spy(self: MlflowClient, run_id: str, metrics: Any = (), params: Any = (), **kwargs: Any) -> None:
        sizes.append((len(metrics), len(params)))
        real(self, run_id, metrics=metrics, params=params, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", spy)
    values = {f"m/{i}": float(i) for i in range(2500)}
    params = {f"p{i}": i for i in range(150)}
    async with MetricBus() as bus:
        bus.add_sink(MLflowSink(dir=store, experiment=experiment), isolate="none")
        await bus.publish(Metrics(values, step=3))
        await bus.publish(Hparams(params))
    assert sizes == [(1000, 0), (1000, 0), (500, 0), (0, 100), (0, 50)]
    (run,) = runs_of(store, experiment).values()
    assert run.data.metrics == values
    assert run.data.params == {k: str(v) for k, v in params.items()}


async def test_one_run_per_origin_tagged_with_the_group(store: Path, experiment: str) -> None:
    sink = MLflowSink(dir=store, experiment=experiment, run_name="fedavg", tags={"team": "vision"})
    async with MetricBus() as bus:
        bus.add_sink(sink, isolate="none")
        for rnd in range(3):
            for site in ("site-1", "site-2"):
                await bus.publish(Scalar("val/acc", 0.5 + rnd / 10, step=rnd, origin=Origin(site=site)))
        await bus.publish(Scalar("server/loss", 0.1, step=0))  # the default origin: named run_name alone
    runs = runs_of(store, experiment)
    assert sorted(runs) == ["main", "site-1", "site-2"]
    assert sink.group.startswith("metricbus-")
    for label, run in runs.items():
        assert run.data.tags[GROUP_TAG] == sink.group and run.data.tags["team"] == "vision"
        assert run.info.run_name == ("fedavg" if label == "main" else f"fedavg/{label}")
        assert run.info.status == "FINISHED"
    for site in ("site-1", "site-2"):
        assert [(s, v) for s, _t, v in history(store, runs[site], "val/acc")] == [(r, 0.5 + r / 10) for r in range(3)]


async def test_a_reopened_sink_continues_its_runs(store: Path, experiment: str) -> None:
    sink = MLflowSink(dir=store, experiment=experiment, group="job-7")
    sites = [Origin(site="a"), Origin(site="b")]
    async with MetricBus() as bus:  # stage 1 (fit), in-process
        bus.add_sink(sink, isolate="none")
        await bus.publish_many([Scalar("loss", 1.0, step=s, origin=o) for s in range(3) for o in sites])
        await bus.publish(Hparams({"lr": 0.1}, origin=sites[0]))
    first = {label: run.info.run_id for label, run in runs_of(store, experiment).items()}
    async with MetricBus() as bus:  # stage 2 (test), the same sink in its worker process
        bus.add_sink(sink)
        await bus.publish_many([Scalar("loss", 2.0, step=s, origin=o) for s in range(3, 5) for o in sites])
        await bus.publish(Hparams({"lr": 0.1}, origin=sites[0]))  # the same value again: accepted
        await bus.publish(Scalar("loss", 3.0, step=0, origin=Origin(site="c")))  # a new origin: a new run
    async with MetricBus() as bus:  # stage 3, a new sink object for the same group
        bus.add_sink(MLflowSink(dir=store, experiment=experiment, group="job-7"), isolate="none")
        await bus.publish(Scalar("loss", 4.0, step=5, origin=sites[1]))
    runs = runs_of(store, experiment)
    assert sorted(runs) == ["a", "b", "c"] and {k: runs[k].info.run_id for k in first} == first
    assert [(s, v) for s, _t, v in history(store, runs["a"], "loss")] == [
        (0, 1.0),
        (1, 1.0),
        (2, 1.0),
        (3, 2.0),
        (4, 2.0),
    ]
    assert [s for s, _t, _v in history(store, runs["b"], "loss")] == [0, 1, 2, 3, 4, 5]
    assert runs["a"].data.params == {"lr": "0.1"}
    assert all(run.info.status == "FINISHED" for run in runs.values())


async def test_hparams_become_params_and_a_changed_param_is_refused(
    store: Path, experiment: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="metricbus")
    params = {"lr": 0.1, "optimizer": "sgd", "layers": 3, "nesterov": True, "config": "x" * 7000}
    async with MetricBus(raise_on_loss=False) as bus:
        name = bus.add_sink(MLflowSink(dir=store, experiment=experiment), isolate="none")
        await bus.publish(Hparams(params, {"hp/loss": 0.25}, step=4))
        await bus.flush()
        await bus.publish(Hparams({"lr": 0.2}))  # MLflow params cannot change: refused
        await bus.publish(Hparams({"lr": 0.1, "seed": 7}))  # same lr, one new param: accepted
    stats = bus.stats()[name]
    assert stats.dropped == {"rejected": 1} and stats.delivered == 2 and stats.balanced
    (run,) = runs_of(store, experiment).values()
    assert run.data.params == {
        "lr": "0.1",
        "optimizer": "sgd",
        "layers": "3",
        "nesterov": "True",
        "config": "x" * 6000,
        "seed": "7",
    }
    assert [(s, v) for s, _t, v in history(store, run, "hp/loss")] == [(4, 0.25)]
    assert "param values cut to 6000 characters: ['config']" in caplog.text
    assert "1 events refused: params whose value MLflow cannot change" in caplog.text and "['lr']" in caplog.text


async def test_text_and_histograms_become_artifacts(store: Path, experiment: str, tmp_path: Path) -> None:
    texts = [Text("sample", 'a, "quoted"\nline ü', step=1), Text("gen/out", "second", step=20)]
    histograms = [
        Histogram("w", 1, values=(1.0, 2.0, 2.0, math.nan, math.inf)),
        Histogram("w", 2, bucket_limits=(0.0, 1.0, 2.0), bucket_counts=(3.0, 0.0, 1.0)),
    ]
    async with MetricBus() as bus:
        bus.add_sink(MLflowSink(dir=store, experiment=experiment), isolate="none")
        await bus.publish_many([*texts, *histograms])
    (run,) = runs_of(store, experiment).values()
    client, run_id = client_of(store), run.info.run_id
    assert run.info.artifact_uri.startswith((store / "artifacts").as_uri())  # the local store keeps them under dir
    assert [f.path for f in client.list_artifacts(run_id, "text/gen/out")] == ["text/gen/out/step_20.txt"]
    for text in texts:
        path = client.download_artifacts(run_id, f"text/{text.name}/step_{text.step}.txt", str(tmp_path))
        assert Path(path).read_text(encoding="utf-8") == text.text
    assert [f.path for f in client.list_artifacts(run_id, "histograms/w")] == [
        "histograms/w/step_1.json",
        "histograms/w/step_2.json",
    ]
    for histogram in histograms:
        path = client.download_artifacts(run_id, f"histograms/w/step_{histogram.step}.json", str(tmp_path))
        assert normalized(read_jsonl(path)) == normalized([histogram])


async def test_names_mlflow_rejects_are_counted_and_the_rest_delivered(
    store: Path, experiment: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="metricbus")
    bad: list[Event] = [
        Scalar("bad key!", 1.0, step=0),
        Scalar("k" * 251, 1.0, step=0),
        Scalar("../escape", 1.0, step=0),
        Metrics({"ok/a": 1.0, "a,b": 2.0}, step=0),  # refused whole: an event is written whole or not at all
        Text("/abs/path", "x", step=0),
        Hparams({"bad key?": 1}),
    ]
    good: list[Event] = [Scalar("ok", 1.0, step=0), Metrics({"ok/b": 2.0, "with space: and/slash": 3.0}, step=1)]
    async with MetricBus(raise_on_loss=False) as bus:
        name = bus.add_sink(MLflowSink(dir=store, experiment=experiment), isolate="none")
        await bus.publish_many([*bad[:3], good[0], *bad[3:], good[1]])
    stats = bus.stats()[name]
    assert stats.dropped == {"rejected": len(bad)} and stats.delivered == len(good) and stats.balanced
    (run,) = runs_of(store, experiment).values()
    assert run.data.metrics == {"ok": 1.0, "ok/b": 2.0, "with space: and/slash": 3.0} and run.data.params == {}
    assert client_of(store).list_artifacts(run.info.run_id) == []
    assert "6 events refused: names MLflow rejects" in caplog.text
    for key in ("bad key!", "../escape", "a,b", "/abs/path", "bad key?"):
        assert repr(key) in caplog.text


async def test_a_batch_written_again_is_stored_once(store: Path, experiment: str) -> None:
    """A retried batch (or one a restarted worker writes again) duplicates nothing."""
    batch: list[Event] = [
        Scalar("loss", 0.5, step=1),
        Metrics({"acc": 0.9, "nan": math.nan}, step=1),
        Hparams({"lr": 0.1}, {"best": 0.8}),
        Text("note", "x", step=1),
    ]
    sink = MLflowSink(dir=store, experiment=experiment)
    await sink.open()
    assert [await sink.write_batch(batch) for _ in range(2)] == [0, 0]
    await sink.close()
    (run,) = runs_of(store, experiment).values()
    assert [len(history(store, run, key)) for key in ("loss", "acc", "nan", "best")] == [1, 1, 1, 1]
    assert run.data.params == {"lr": "0.1"}
    assert [f.path for f in client_of(store).list_artifacts(run.info.run_id, "text/note")] == ["text/note/step_1.txt"]


async def test_default_store_is_sqlite_under_mlruns_and_a_tracking_uri_is_used_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with MetricBus() as bus:
        bus.add_sink(MLflowSink(), isolate="none")
        await bus.publish(Text("note", "hello", step=0))
    assert sorted(p.name for p in (tmp_path / "mlruns").iterdir()) == ["artifacts", "mlruns.db"]
    (run,) = runs_of(tmp_path / "mlruns", "metricbus").values()
    assert list((tmp_path / "mlruns" / "artifacts").rglob("step_0.txt"))
    uri, artifacts = f"sqlite:///{tmp_path / 'mlruns' / 'mlruns.db'}", (tmp_path / "elsewhere").as_uri()
    async with MetricBus() as bus:
        bus.add_sink(MLflowSink(uri, experiment="given", artifact_location=artifacts), isolate="none")
        await bus.publish(Text("note", "hello", step=0))
    (run,) = runs_of(tmp_path / "mlruns", "given").values()
    assert run.info.artifact_uri.startswith(artifacts) and list((tmp_path / "elsewhere").rglob("step_0.txt"))


async def test_a_deleted_experiment_fails_at_open(store: Path, experiment: str) -> None:
    client = client_of(store)
    client.delete_experiment(client.create_experiment(experiment, artifact_location=(store / "artifacts").as_uri()))
    with pytest.raises(RuntimeError, match="is deleted: restore it or choose another name"):
        await MLflowSink(dir=store, experiment=experiment).open()


def test_picklable_before_open_and_bad_settings_fail_at_construction() -> None:
    sink = pickle.loads(pickle.dumps(MLflowSink(experiment="e", group="g", tags={"team": "a"})))
    assert (sink.group, sink.tags, sink.name) == ("g", {"team": "a"}, "mlflow:e")
    with pytest.raises(ValueError, match="quotes"):
        MLflowSink(group="it's")
    for tags in ({GROUP_TAG: "x"}, {"bad tag!": "x"}):
        with pytest.raises(ValueError, match="tag key"):
            MLflowSink(tags=tags)


def test_importing_sinks_does_not_import_mlflow() -> None:
    code = "import sys, sinks; sinks.MLflowSink; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


async def test_images_become_png_artifacts_with_their_pixels(store: Path, experiment: str, tmp_path: Path) -> None:
    from PIL import Image as PILImage

    from bus import ChartLayout, Image

    pixels = bytes(i % 256 for i in range(16 * 16 * 3))  # 16 x 16 RGB
    layout = ChartLayout({"losses": {"all": ("Multiline", ["loss"])}})
    async with MetricBus() as bus:
        name = bus.add_sink(MLflowSink(dir=store, experiment=experiment), isolate="none")
        await bus.publish(Image("sample", 7, pixels=pixels, height=16, width=16, channels=3))
        await bus.publish(layout)  # TensorBoard's own dashboard layout: not routed to MLflow
    assert bus.stats()[name].delivered == 1 and bus.stats()[name].dropped == {}
    (run,) = runs_of(store, experiment).values()
    local = client_of(store).download_artifacts(run.info.run_id, "images/sample/step_7.png", str(tmp_path))
    assert PILImage.open(local).convert("RGB").tobytes() == pixels


async def test_at_most_max_open_runs_are_running_and_a_finished_run_is_resumed_as_the_same_run(
    store: Path, experiment: str
) -> None:
    sink = MLflowSink(dir=store, experiment=experiment, group="g", max_open_runs=2)
    origins = [Origin(site="site-1"), Origin(node="site-1"), Origin(rank=0), Origin(site="a", rank=0)]
    client = client_of(store)
    await sink.open()
    experiment_id = client.get_experiment_by_name(experiment).experiment_id  # type: ignore[union-attr]
    running = []
    for step in range(3):
        for i, origin in enumerate(origins):
            await sink.write_batch([Scalar("loss", step + i / 10, step=step, origin=origin)])
            running.append(len(client.search_runs([experiment_id], "attributes.status = 'RUNNING'")))
        await sink.write_batch(
            [Hparams({"lr": 0.1}, {"acc": step + i / 10}, step=step, origin=o) for i, o in enumerate(origins)]
        )
        running.append(len(client.search_runs([experiment_id], "attributes.status = 'RUNNING'")))
    await sink.close()
    assert max(running) == 2
    runs = runs_of(store, experiment)
    assert sorted(runs) == sorted(o.label for o in origins)  # one run per origin, however often it was resumed
    for i, origin in enumerate(origins):
        run = runs[origin.label]
        assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.1"}
        assert [(s, v) for s, _t, v in history(store, run, "loss")] == [(s, s + i / 10) for s in range(3)]
        assert [(s, v) for s, _t, v in history(store, run, "acc")] == [(s, s + i / 10) for s in range(3)]
