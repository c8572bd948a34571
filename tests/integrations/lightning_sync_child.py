"""One rank of tests/integrations/test_lightning_ranks.py, under torchrun (2 processes, gloo):

    torchrun --standalone --nproc_per_node=2 tests/integrations/lightning_sync_child.py URL STREAM OUT

The same seed, model and data are fitted three times with `strategy="ddp"`, each logging with
`self.log(..., sync_dist=True)` (mean, sum, max, min; on step and on epoch; training and
validation):

- "lightning": Lightning's own CSVLogger (rank 0 writes OUT/lightning/version_0/metrics.csv), Lightning
  syncing every value with an all_reduce, as it does without metricbus;
- "reduced": MetricBusLogger(reduce_ranks=True) over a RedisSink, site "reduced";
- "monitored": the same, site "monitored", with an EarlyStopping that monitors val_loss.

Every `torch.distributed.all_reduce` is wrapped before Lightning is imported, and counted by the
name of the logged value it syncs (found on the stack: Lightning syncs in its result collection),
else as "other" (Lightning's own, e.g. should_stop). Each rank writes OUT/rank<r>.json: per fit
those counts, the `trainer.callback_metrics` it ended with, and whether the module's `log` is
Lightning's own again.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SYNCED_IN = os.path.join("logger_connector", "result.py")


def count_all_reduce() -> dict[str, int]:
    """Wrap torch.distributed.all_reduce; the returned dict counts calls by logged name."""
    import torch.distributed as dist

    counts: dict[str, int] = {}
    original = dist.all_reduce

    def counted(*args: Any, **kwargs: Any) -> Any:
        frame = sys._getframe(1)
        name = "other"
        while frame is not None:
            meta = getattr(frame.f_locals.get("self"), "meta", None)
            if frame.f_code.co_filename.endswith(SYNCED_IN) and meta is not None:
                name = meta.name
                break
            frame = frame.f_back  # type: ignore[assignment]
        counts[name] = counts.get(name, 0) + 1
        return original(*args, **kwargs)

    dist.all_reduce = counted
    return counts


def main() -> None:
    url, stream, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    counts = count_all_reduce()  # before Lightning is imported

    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import EarlyStopping
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    from bus import Origin
    from producers.integrations import MetricBusLogger
    from sinks import RedisSink

    class Net(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def _errors(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            x, y = batch
            return (self.layer(x) - y).pow(2)

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
            err = self._errors(batch)
            loss = err.mean()
            self.log("train_loss", loss, sync_dist=True)  # reduce_fx="mean", on step
            self.log("target_sum", batch[1].sum(), sync_dist=True, reduce_fx="sum")
            self.log("err_max", err.max(), sync_dist=True, reduce_fx="max")
            self.log("err_min", err.min(), sync_dist=True, reduce_fx=torch.min)
            self.log("loss", loss, sync_dist=True, on_step=True, on_epoch=True)  # loss_step and loss_epoch
            return loss

        def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
            err = self._errors(batch)
            self.log("val_loss", err.mean(), sync_dist=True)  # on epoch: the mean over batches and ranks
            self.log("val_worst", err.max(), sync_dist=True, reduce_fx="max")

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    def data(n: int) -> DataLoader[Any]:
        generator = torch.Generator().manual_seed(n)
        x, y = torch.randn(n, 4, generator=generator), torch.randn(n, 1, generator=generator)
        return DataLoader(TensorDataset(x, y), batch_size=4)  # Lightning adds a DistributedSampler

    report: dict[str, Any] = {}
    for fit in ("lightning", "reduced", "monitored"):
        if fit == "lightning":
            logger: Any = CSVLogger(out, name="lightning", version=0)
        else:
            sink = RedisSink(url, stream=stream)
            logger = MetricBusLogger(sinks=[sink], origin=Origin(site=fit), reduce_ranks=True)
        callbacks = [EarlyStopping(monitor="val_loss", patience=100)] if fit == "monitored" else []
        pl.seed_everything(0, verbose=False)
        model = Net()
        trainer = pl.Trainer(
            logger=logger,
            callbacks=callbacks,
            accelerator="cpu",
            devices=2,
            strategy="ddp",
            max_epochs=2,
            log_every_n_steps=1,
            num_sanity_val_steps=0,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=out,
        )
        counts.clear()
        trainer.fit(model, data(48), data(16))
        report[fit] = {
            "all_reduce": dict(counts),
            "callback_metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "log_restored": "log" not in model.__dict__,
        }
    rank = int(os.environ["RANK"])
    (out / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
