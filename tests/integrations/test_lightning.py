"""Lightning: MetricBusLogger's sinks hold exactly what Lightning's own CSVLogger holds, same run;
a later stage (test) after fit still reaches the sinks; real DDP ranks get their own origins."""

from __future__ import annotations

import csv
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


def test_a_test_run_after_fit_reaches_the_same_sinks(tmp_path: Path, no_leftover_loggers: Callable[[], None]) -> None:
    ours = MetricBusLogger(sinks=[CsvSink(tmp_path / "m.csv")])
    reference = CSVLogger(tmp_path, name="ref")
    trainer = _trainer([ours, reference])
    model = Tiny()
    trainer.fit(model, _data())
    trainer.test(model, _data(), verbose=False)  # the bus was closed by fit's finalize

    no_leftover_loggers()
    with open(tmp_path / "m.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    (test_loss,) = [float(r["value"]) for r in rows if r["name"] == "test_loss"]
    (expected,) = [float(r["test_loss"]) for r in _reference(reference.log_dir) if r.get("test_loss")]
    assert math.isclose(test_loss, expected, rel_tol=1e-6)
    assert sum(r["name"] == "train_loss" for r in rows) == 6  # fit's rows are kept: the file was appended to


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
