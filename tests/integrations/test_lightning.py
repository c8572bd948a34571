"""Lightning: MetricBusLogger's sinks hold exactly what Lightning's own CSVLogger holds, in every
stage of one Trainer (fit, validate, test, fit again), in the same files; real DDP ranks get their
own origins."""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, TensorDataset

from bus import Hparams, InvalidConfig, Metrics, Origin
from producers import MetricLogger
from producers.integrations import MetricBusLogger
from sinks import CsvSink, JsonlSink, MemorySink, TensorBoardSink, read_jsonl


class Tiny(pl.LightningModule):
    def __init__(self, lr: float = 0.05, hidden: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)

    def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss)
        self.log("weight_norm", self.layer.weight.norm())
        return loss

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("test_loss", self._loss(batch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


class Validated(Tiny):
    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch))


def _data() -> DataLoader[Any]:
    torch.manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(32, 4), torch.randn(32, 1)), batch_size=4)


def _trainer(logger: Any, **kwargs: Any) -> pl.Trainer:
    options: dict[str, Any] = {
        "max_steps": 6,
        "log_every_n_steps": 1,
        "accelerator": "cpu",
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return pl.Trainer(logger=logger, **{**options, **kwargs})


def _stages_trainer(loggers: list[Any]) -> pl.Trainer:
    """A Trainer whose fit is one epoch of 3 steps, validated on 2 batches; tested on 2."""
    limits = {"limit_train_batches": 3, "limit_val_batches": 2, "limit_test_batches": 2}
    return _trainer(loggers, max_steps=-1, max_epochs=1, **limits)


def _reference(log_dir: str) -> list[dict[str, str]]:
    with open(Path(log_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_fit_publishes_every_metric_and_hparam_lightning_logged(
    tmp_path: Path, no_leftover_loggers: Callable[[], None]
) -> None:
    memory = MemorySink()
    ours = MetricBusLogger(sinks=[memory, CsvSink(tmp_path / "m.csv"), JsonlSink(tmp_path / "e.jsonl")])
    reference = CSVLogger(tmp_path, name="ref")
    _trainer([ours, reference]).fit(Tiny(), _data())

    assert memory.closed  # finalize() flushed and closed the bus at the end of fit
    no_leftover_loggers()
    rows = _reference(reference.log_dir)
    with open(tmp_path / "m.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    jsonl = [e for e in read_jsonl(tmp_path / "e.jsonl") if isinstance(e, Metrics)]
    for name in ("train_loss", "weight_norm", "epoch"):
        expected = [(int(r["step"]), float(r[name])) for r in rows if r[name]]
        assert [s for s, _ in expected] == list(range(6))
        from_csv = [(int(r["step"]), float(r["value"])) for r in csv_rows if r["name"] == name]
        from_jsonl = [(e.step, e.values[name]) for e in jsonl if name in e.values]
        for got in (memory.values(name), from_csv, from_jsonl):
            assert [s for s, _ in got] == [s for s, _ in expected]
            assert all(math.isclose(a, b, rel_tol=1e-6) for (_, a), (_, b) in zip(got, expected, strict=True))
    (hparams,) = [e for e in memory.events if isinstance(e, Hparams)]
    assert hparams.params == {"lr": 0.05, "hidden": 4}


def _logged(rows: list[dict[str, str]]) -> list[tuple[int, dict[str, float]]]:
    """Lightning's CSV rows (one per `log_metrics` call) as (step, the values logged)."""
    return [(int(r["step"]), {k: float(v) for k, v in r.items() if v and k != "step"}) for r in rows]


def test_fit_validate_test_and_fit_again_on_one_trainer_reach_the_same_files_as_in_lightnings_csv(
    tmp_path: Path, no_leftover_loggers: Callable[[], None]
) -> None:
    ours = MetricBusLogger(sinks=[CsvSink(tmp_path / "m.csv"), JsonlSink(tmp_path / "e.jsonl")])
    reference = CSVLogger(tmp_path, name="ref")
    trainer = _stages_trainer([ours, reference])
    model = Validated()
    trainer.fit(model, _data(), _data())  # each stage ends with finalize, which closes our logger
    trainer.validate(model, _data(), verbose=False)
    trainer.test(model, _data(), verbose=False)
    trainer.fit_loop.max_epochs = 2  # the same Trainer fits on from where it stopped: no new Trainer needed
    trainer.fit(model, _data(), _data())

    no_leftover_loggers()
    expected = _logged(_reference(reference.log_dir))
    # fit (steps 0-2, validation at 2), validate and test (at 3), fit again (3-5, validation at 5)
    assert [step for step, _ in expected] == [0, 1, 2, 2, 3, 3, 3, 4, 5, 5]
    assert {"val_loss", "test_loss"} <= {name for _, values in expected for name in values}
    events = read_jsonl(tmp_path / "e.jsonl")
    jsonl = [(e.step, e.values) for e in events if isinstance(e, Metrics)]
    assert jsonl == expected  # every call of every stage, in order, once, with Lightning's steps and values
    assert sum(isinstance(e, Hparams) for e in events) == 4  # Lightning logs the hparams at each stage's start
    with open(tmp_path / "m.csv", newline="") as f:  # one file, appended to by each stage
        calls = itertools.groupby(csv.DictReader(f), key=lambda r: (r["wall_time"], int(r["step"])))
        from_csv = [(step, {r["name"]: float(r["value"]) for r in rows}) for (_, step), rows in calls]
    assert from_csv == expected


def test_a_later_stage_adds_an_event_file_to_the_same_tensorboard_run(
    tmp_path: Path, no_leftover_loggers: Callable[[], None]
) -> None:
    ours = MetricBusLogger(sinks=[TensorBoardSink(tmp_path / "tb")])
    reference = CSVLogger(tmp_path, name="ref")
    trainer = _stages_trainer([ours, reference])
    model = Validated()
    trainer.fit(model, _data(), _data())
    trainer.test(model, _data(), verbose=False)

    no_leftover_loggers()
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 2  # one per stage, side by side
    run = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    run.Reload()  # reads every event file of the directory: one run
    expected = _logged(_reference(reference.log_dir))
    for name in ("train_loss", "val_loss", "test_loss", "epoch"):
        series = [(step, values[name]) for step, values in expected if name in values]
        got = [(e.step, e.value) for e in run.Scalars(name)]
        assert [s for s, _ in got] == [s for s, _ in series]
        assert all(math.isclose(a, b, rel_tol=1e-6) for (_, a), (_, b) in zip(got, series, strict=True))
    assert [e.step for e in run.Scalars("test_loss")] == [3]  # after fit's steps 0-2


def test_ddp_ranks_publish_with_their_own_origin_or_only_rank_zero(tmp_path: Path) -> None:
    every_rank = MetricBusLogger(sinks=[TensorBoardSink(tmp_path / "all")], all_ranks=True)
    rank_zero = MetricBusLogger(sinks=[TensorBoardSink(tmp_path / "zero")])
    trainer = _trainer([every_rank, rank_zero], max_steps=3, devices=2, strategy="ddp_spawn")
    trainer.fit(Tiny(), _data())

    def losses(run: Path) -> list[int]:
        acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
        acc.Reload()
        return [e.step for e in acc.Scalars("train_loss")]

    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["rank0", "rank1"]
    assert losses(tmp_path / "all" / "rank0") == losses(tmp_path / "all" / "rank1") == [0, 1, 2]
    assert all(p.is_file() for p in (tmp_path / "zero").iterdir())  # one run: no per-rank folders
    assert losses(tmp_path / "zero") == [0, 1, 2]


def test_a_given_logger_is_flushed_not_closed_and_keeps_the_given_origin(
    no_leftover_loggers: Callable[[], None],
) -> None:
    memory = MemorySink()
    with MetricLogger(sinks=[memory]) as log:
        _trainer(MetricBusLogger(logger=log, origin=Origin(site="lab")), max_steps=2).fit(Tiny(), _data())
        assert not memory.closed and len(memory.values("train_loss")) == 2  # flushed by finalize
        log.scalar("after_fit", 1.0, step=2)
    assert {e.origin.label for e in memory.events if isinstance(e, Metrics)} == {"lab"}
    no_leftover_loggers()


def test_sinks_xor_logger() -> None:
    with pytest.raises(InvalidConfig, match="either"), MetricLogger() as log:
        MetricBusLogger(sinks=[MemorySink()], logger=log)
    with pytest.raises(InvalidConfig, match="pass sinks"):
        MetricBusLogger()


def test_without_lightning_the_error_names_the_extra(import_error_without: Callable[[str, str], str]) -> None:
    assert "pip install 'metricbus[lightning]'" in import_error_without("lightning.pytorch", "MetricBusLogger")
