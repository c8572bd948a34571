"""`metricbus demo`: a simulated training loop (no torch needed) logging through every sink."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.text import Text

from bus import Sink, SinkStats, delivery_failures, describe_failure
from sinks import CsvSink, JsonlSink

from ._logger import MetricLogger
from ._plan import load_plan
from ._stats_table import print_stats

__all__ = ["run_demo"]


def _default_logger(out: Path, console: Console) -> MetricLogger:
    return MetricLogger(sinks=_sinks(out, console))


def _sinks(out: Path, console: Console) -> list[Sink]:
    sinks: list[Sink] = [CsvSink(out / "metrics.csv"), JsonlSink(out / "events.jsonl")]
    try:
        from sinks import TensorBoardSink

        sinks.append(TensorBoardSink(out / "tensorboard"))
    except (ImportError, AttributeError) as exc:
        console.print(f"[yellow]TensorBoard sink unavailable: {exc}")
    try:
        from sinks import WandbSink

        sinks.append(WandbSink(project="metricbus-demo", mode="offline", dir=str(out)))
    except (ImportError, AttributeError) as exc:
        console.print(f"[yellow]W&B sink unavailable: {exc}")
    return sinks


def run_demo(
    out: Path, steps: int = 2_000, step_seconds: float = 0.001, plan: Path | None = None
) -> dict[str, SinkStats]:
    """Simulate `steps` training steps of ~`step_seconds`, logging loss/accuracy/lr every step
    and a weight histogram every 200 steps, through the default sinks or a plan file's; print
    the per-sink stats table (what each sink got of what was published) and where the files are."""
    console = Console()
    rng = random.Random(0)
    out.mkdir(parents=True, exist_ok=True)
    logger = load_plan(plan).logger() if plan is not None else _default_logger(out, console)
    with logger as log, Progress(console=console, transient=False) as progress:
        log.hparams({"lr": 0.1, "optimizer": "sgd", "steps": steps}, {"final/accuracy": 0.0})
        task = progress.add_task("training", total=steps)
        for step in range(steps):
            deadline = time.perf_counter() + step_seconds
            loss = 2.0 * math.exp(-step / (steps / 4)) + rng.random() * 0.05
            lr = 0.1 * 0.5 * (1 + math.cos(math.pi * step / steps))
            log.scalars({"train/loss": loss, "train/accuracy": 1 - loss / 2.1, "train/lr": lr}, step=step)
            if step % 200 == 0:
                log.histogram("weights", [rng.gauss(0, 1 / (1 + step / 500)) for _ in range(1_000)], step=step)
            while time.perf_counter() < deadline:  # the "training step"
                pass
            progress.advance(task)
        log.text("notes", f"demo run of {steps} steps", step=steps)
    stats = dict(log.stats())
    print_stats(stats, console=console)
    for failure in delivery_failures(stats):
        console.print(Text(describe_failure(failure), style="red"))
    if plan is not None:
        console.print(f"files: where {plan} put them")
        return stats
    console.print(f"CSV:   {out / 'metrics.csv'}\nJSONL: {out / 'events.jsonl'}")
    if (out / "tensorboard").exists():
        console.print(f"TensorBoard: tensorboard --logdir {out / 'tensorboard'}")
    if any(p.name == "wandb" for p in out.iterdir()):
        console.print(f"W&B (offline): wandb sync {out / 'wandb'}/offline-run-*")
    return stats
