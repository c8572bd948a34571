"""NVIDIA FLARE: site writers on concurrent threads end up as one TensorBoard run and one W&B run
per site, the W&B runs in one group (the layout of NVFlare's server-side receivers)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bus import Metrics, Scalar
from producers import MetricLogger
from producers.integrations import NVFlareWriter
from sinks import MemorySink, TensorBoardSink, WandbSink
from tests.wandb_reader import read_runs

SITES = ["site-1", "site-2", "site-3"]
ROUNDS = 5


def _loss(rnd: int, site: int) -> float:
    return 1.0 / (rnd + 1) + site / 100


def _acc(rnd: int, site: int) -> float:
    return 0.5 + rnd / 10 + site / 100


@pytest.mark.usefixtures("offline_wandb")
def test_sites_become_one_tensorboard_run_and_one_wandb_run_each_in_one_group(tmp_path: Path) -> None:
    (tmp_path / "wb").mkdir()
    log = MetricLogger()
    log.add_sink(TensorBoardSink(tmp_path / "tb"))
    log.add_sink(WandbSink(project="hello-pt", group="hello-pt", dir=tmp_path / "wb"), rate="none")  # every round
    start = threading.Barrier(len(SITES))

    def site(index: int) -> None:
        writer = NVFlareWriter(SITES[index], log)
        start.wait()  # the sites really log at the same time
        for rnd in range(ROUNDS):
            writer.add_scalar("train_loss", _loss(rnd, index), rnd)
            writer.log({"val_acc": _acc(rnd, index)}, rnd)

    threads = [threading.Thread(target=site, args=(i,)) for i in range(len(SITES))]
    with log:
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == SITES
    for i, name in enumerate(SITES):
        acc = EventAccumulator(str(tmp_path / "tb" / name), size_guidance={"scalars": 0})
        acc.Reload()
        for tag, expected in (("train_loss", _loss), ("val_acc", _acc)):
            got = [(e.step, e.value) for e in acc.Scalars(tag)]
            assert got == [(rnd, float(np.float32(expected(rnd, i)))) for rnd in range(ROUNDS)]
    runs = read_runs(tmp_path / "wb")
    assert sorted(runs) == SITES and {r.group for r in runs.values()} == {"hello-pt"}
    for i, name in enumerate(SITES):
        rows = [r for r in runs[name].history if "val_acc" in r]
        assert [r["val_acc"] for r in rows] == [_acc(rnd, i) for rnd in range(ROUNDS)]
        assert [r["train_loss"] for r in runs[name].history if "train_loss" in r] == [
            _loss(rnd, i) for rnd in range(ROUNDS)
        ]


def test_writer_shapes_steps_and_site_names() -> None:
    sink = MemorySink()
    with MetricLogger(sinks=[sink]) as log:
        writer = NVFlareWriter("hospital A", log)
        writer.log({"a": 1.0})  # no step: the site's next step, as wandb.log counts
        writer.log({"a": 2.0})
        writer.log_metrics({"a": 3.0}, step=10)
        writer.log({"a": 4.0})
        writer.add_scalars("loss", {"train": 0.5, "val": 0.7}, global_step=3)
        writer.log_metric("lr", 0.1, step=3)
    assert sink.values("a") == [(0, 1.0), (1, 2.0), (10, 3.0), (11, 4.0)]
    assert sink.values("loss/train") == [(3, 0.5)] and sink.values("loss/val") == [(3, 0.7)]
    assert {e.origin.site for e in sink.events} == {"hospital_A"}
    assert [type(e) for e in sink.events] == [Metrics] * 5 + [Scalar]
