"""Producing processes for tests/integrations/test_redis_integrations.py, each publishing through a
RedisSink, and the plan callback their aggregator calls.

    python tests/integrations/redis_site.py ddp URL STREAM OUT STEPS
        a Lightning fit with strategy="ddp" on 2 CPU processes (gloo), MetricBusLogger(all_ranks=True)
        over a RedisSink; every rank writes what Lightning handed its loggers to OUT/lightning-rank<r>.json,
        rank 0 also keeps Lightning's own CSVLogger under OUT/csv
    python tests/integrations/redis_site.py site URL STREAM NAME INDEX ROUNDS
        an NVFlare site: NVFlareWriter(NAME) over a MetricLogger with a RedisSink
    python tests/integrations/redis_site.py collaborator URL STREAM NAME INDEX ROUNDS
        an OpenFL collaborator: a MetricLogger with origin=Origin(site=NAME), task and round as context

This module is also imported by the test and by the aggregator (for `record_call`): nothing heavy
(torch, Lightning) is imported at its top.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

TRAIN_TASK = "train"
VALIDATE_TASK = "aggregated_model_validation"


# ---- the values every process logs, also computed by the test to check what arrived ----


def site_loss(rnd: int, site: int) -> float:
    return 1.0 / (rnd + 1) + site / 100 + 1e-7 * rnd


def site_acc(rnd: int, site: int) -> float:
    return 0.5 + rnd / 10 + site / 100 + 1e-9 * site


def collaborator_loss(rnd: int, index: int) -> float:
    return 2.0 / (rnd + 3) + index / 7


def collaborator_metrics(rnd: int, index: int) -> dict[str, float]:
    return {"accuracy": 0.6 + rnd / 20 + index / 1000, "f1": 0.55 + rnd / 30 - index / 999}


def collaborator_step(rnd: int) -> int:
    """A collaborator's own step (its batches) is not the round: the callback's round comes from
    the event's context."""
    return rnd * 10 + 3


# ---- the aggregator's plan callback ----


def record_call(node_name: str, task_name: str, metric_name: str, metric: Any, round_number: int, *, path: str) -> None:
    """An OpenFL `log_metric_callback` for a plan (`settings = { path = ... }`): one JSON array per
    call, a line each, in `path`. (tests.isolated_sinks.append_call takes the path positionally
    first, which a plan's keyword `settings` cannot give it.)"""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps([node_name, task_name, metric_name, metric, round_number]) + "\n")


# ---- the producing processes ----


def _redis_sink(url: str, stream: str) -> Any:
    from sinks import RedisSink

    return RedisSink(url, stream=stream, maxlen=100_000)


def run_ddp(url: str, stream: str, out: Path, steps: int) -> None:
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.loggers import CSVLogger, Logger
    from torch.utils.data import DataLoader, TensorDataset

    from producers.integrations import MetricBusLogger

    class Tiny(pl.LightningModule):
        def __init__(self, lr: float = 0.05) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train_loss", loss)  # this rank's own value: no sync_dist
            self.log("batch_mean", x.mean())
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    class Recorder(Logger):  # type: ignore[misc]
        """Every `log_metrics` call Lightning makes on this rank (no rank_zero_only: all ranks)."""

        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[int, dict[str, float]]] = []

        @property
        def name(self) -> str:
            return "recorder"

        @property
        def version(self) -> int:
            return 0

        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            self.calls.append((0 if step is None else step, {k: float(v) for k, v in metrics.items()}))

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(32, 4), torch.randn(32, 1)), batch_size=4)
    recorder = Recorder()
    ours = MetricBusLogger(sinks=[_redis_sink(url, stream)], all_ranks=True)
    trainer = pl.Trainer(
        logger=[ours, recorder, CSVLogger(out, name="csv", version=0)],
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_steps=steps,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
    )
    trainer.fit(Tiny(), data)  # finalize() closed our logger: every event is in Redis
    rank = trainer.global_rank
    tmp = out / f"lightning-rank{rank}.json.tmp"
    tmp.write_text(json.dumps({"rank": rank, "pid": os.getpid(), "calls": recorder.calls}))
    tmp.rename(out / f"lightning-rank{rank}.json")
    for proc in getattr(trainer.strategy.launcher, "procs", []):  # rank 0 returns after the others
        if proc.wait(60) != 0:
            raise SystemExit(f"rank process {proc.pid} exited with {proc.returncode}")


def run_site(url: str, stream: str, name: str, index: int, rounds: int) -> None:
    from producers import MetricLogger
    from producers.integrations import NVFlareWriter

    with MetricLogger(shutdown_timeout=30.0) as log:  # raise_on_loss: a lost event fails the exit status
        log.add_sink(_redis_sink(url, stream), max_interval=0.05)
        writer = NVFlareWriter(name, log)
        for rnd in range(rounds):
            writer.add_scalar("train_loss", site_loss(rnd, index), rnd)
            writer.log({"val_acc": site_acc(rnd, index)}, rnd)


def run_collaborator(url: str, stream: str, name: str, index: int, rounds: int) -> None:
    from bus import Context, Origin
    from producers import MetricLogger

    with MetricLogger(origin=Origin(site=name), shutdown_timeout=30.0) as log:
        log.add_sink(_redis_sink(url, stream), max_interval=0.05)
        for rnd in range(rounds):
            log.context = Context(task=TRAIN_TASK, round=rnd)
            log.scalar("loss", collaborator_loss(rnd, index), collaborator_step(rnd))
            log.context = Context(task=VALIDATE_TASK, round=rnd)
            log.scalars(collaborator_metrics(rnd, index), collaborator_step(rnd))


def main() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    ddp = commands.add_parser("ddp")
    ddp.add_argument("url")
    ddp.add_argument("stream")
    ddp.add_argument("out", type=Path)
    ddp.add_argument("steps", type=int)
    for command in ("site", "collaborator"):
        sub = commands.add_parser(command)
        sub.add_argument("url")
        sub.add_argument("stream")
        sub.add_argument("name")
        sub.add_argument("index", type=int)
        sub.add_argument("rounds", type=int)
    args = parser.parse_args()
    if args.command == "ddp":
        run_ddp(args.url, args.stream, args.out, args.steps)
    elif args.command == "site":
        run_site(args.url, args.stream, args.name, args.index, args.rounds)
    else:
        run_collaborator(args.url, args.stream, args.name, args.index, args.rounds)


if __name__ == "__main__":
    main()
