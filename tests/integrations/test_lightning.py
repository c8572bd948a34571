"""Lightning: MetricBusLogger holds exactly what Lightning's own CSVLogger holds, same run."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from bus import Hparams
from producers.integrations import MetricBusLogger
from sinks import MemorySink


class Tiny(pl.LightningModule):
    def __init__(self, lr: float = 0.05, hidden: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        self.log("weight_norm", self.layer.weight.norm())
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def test_fit_publishes_every_metric_and_hparam_lightning_logged(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(32, 4), torch.randn(32, 1)), batch_size=4)
    sink = MemorySink()
    ours = MetricBusLogger(sinks=[sink])
    reference = CSVLogger(tmp_path, name="ref")
    trainer = pl.Trainer(
        logger=[ours, reference],
        max_steps=6,
        log_every_n_steps=1,
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(), data)

    assert sink.closed  # finalize() flushed and closed the bus at the end of fit
    with open(Path(reference.log_dir) / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for name in ("train_loss", "weight_norm"):
        expected = [(int(r["step"]), float(r[name])) for r in rows if r[name]]
        got = sink.values(name)
        assert [s for s, _ in got] == [s for s, _ in expected] == list(range(6))
        assert all(math.isclose(a, b, rel_tol=1e-6) for (_, a), (_, b) in zip(got, expected, strict=True))
    (hparams,) = [e for e in sink.events if isinstance(e, Hparams)]
    assert hparams.params == {"lr": 0.05, "hidden": 4}


def test_rank_zero_only_by_default_and_per_rank_origins_when_asked(tmp_path: Path) -> None:
    from lightning.pytorch.utilities import rank_zero_only

    sink = MemorySink()
    logger = MetricBusLogger(sinks=[sink], all_ranks=True)
    quiet = MetricBusLogger(sinks=[MemorySink("quiet")])
    saved = rank_zero_only.rank
    try:
        rank_zero_only.rank = 3  # what Lightning sets on the fourth process of a DDP job
        logger.log_metrics({"loss": 1.0}, step=0)
        quiet.log_metrics({"loss": 1.0}, step=0)
        assert quiet._handle._logger is None  # nothing was started on a non-zero rank
        logger.finalize("success")
    finally:
        rank_zero_only.rank = saved
    assert [e.origin.label for e in sink.events] == ["rank3"]
