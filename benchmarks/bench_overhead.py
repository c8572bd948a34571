"""Training-loop overhead: 2000 steps of ~1 ms, 10 scalars logged per step.

Two kinds of step: one that releases the GIL (a float32 matmul, like a real model on an
accelerator or in BLAS) and one that holds it (hundreds of small numpy calls, like Python-heavy
data handling). The matmul runs on one BLAS thread, leaving the second core free, as a GPU step
would. Configurations: no logging; no logging while another process spins on the other core
(what any background CPU work costs on this machine); tensorboardX `add_scalar` directly;
`wandb.log` offline directly; metricbus with TensorBoard + CSV + W&B sinks where their defaults
put them (TensorBoard and CSV in the shared sink host, W&B (10 rows/s) in a host of its own), the
same without W&B, all three forced into the training process (`isolate="none"`), and TB + CSV +
W&B plus an MLflow sink (four sinks, MLflow in a host of its own).

This machine's noise between identical runs is about +-10%, so the configurations run
interleaved, in ROUNDS rounds, each run in a fresh interpreter; a configuration's overhead is its
loop time over the same round's no-logging loop, and the median over rounds is reported, with
the seconds spent in close/finish after the loop. Wall time is noisy here; CPU time is not: each
row also gives the training process's CPU time per step (`time.process_time`: every thread of
the training process, none of its sink hosts) and the training thread's (`time.thread_time`),
each minus the no-logging loop's. Writes results/overhead.json and overhead.png (`--chart`
redraws the PNG from the JSON).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks._common import RESULTS, run_contenders, serve_contender, write_result

STEPS = 2_000
ROUNDS = 5
NAMES = [f"train/metric_{k}" for k in range(10)]
CONFIGS = [
    "none",
    "busy_core",
    "tensorboardx",
    "wandb",
    "metricbus",
    "metricbus_tb_csv",
    "metricbus_inprocess",
    "metricbus_four",
]


def make_step(kind: str, reps: int | None = None) -> tuple[Callable[[], None], int]:
    """A ~1 ms step: `release` spends it in BLAS (GIL released), `hold` in many small numpy calls.
    `reps` fixes its work (the parent calibrates once, so every contender's step does the same
    work: calibrating in each contender let one started beside busy sink hosts do less)."""
    rng = np.random.default_rng(0)
    if kind == "release":
        a = rng.random((192, 192), dtype=np.float32)
        b = rng.random((192, 192), dtype=np.float32)
        n = reps or _calibrate(lambda: a @ b)
        return (lambda: [a @ b for _ in range(n)] and None), n
    x = rng.random(16)
    n = reps or _calibrate(lambda: [np.add(x, 1.0) for _ in range(10)])
    return (lambda: [np.add(x, 1.0) for _ in range(10 * n)] and None), n


def _calibrate(unit: Callable[[], object], target: float = 0.001) -> int:
    start = time.perf_counter()
    for _ in range(200):
        unit()
    per = (time.perf_counter() - start) / 200
    return max(1, round(target / per))


def _loop(step: Callable[[], None], log: Callable[[int, dict[str, float]], None] | None) -> dict[str, float]:
    """The loop's wall time, the training process's CPU time and the training thread's."""
    start, process, thread = time.perf_counter(), time.process_time(), time.thread_time()
    for i in range(STEPS):
        step()
        if log is not None:
            log(i, {name: 1.0 / (i + k + 1) for k, name in enumerate(NAMES)})
    return {
        "loop": time.perf_counter() - start,
        "process_cpu": time.process_time() - process,
        "thread_cpu": time.thread_time() - thread,
    }


def run(config: str, kind: str, tmp: Path) -> dict[str, float]:
    step, _ = make_step(kind, int(os.environ[f"BENCH_REPS_{kind.upper()}"]))
    step()  # warm up BLAS threads and caches
    if config == "none":
        return {**_loop(step, None), "close": 0.0}
    if config == "busy_core":  # no logging; another process spins on the other core
        import subprocess

        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.2)
            return {**_loop(step, None), "close": 0.0}
        finally:
            burner.kill()
            burner.wait()
    if config == "tensorboardx":
        from tensorboardX import SummaryWriter

        writer = SummaryWriter(str(tmp / "tbx"))

        def tbx(i: int, values: dict[str, float]) -> None:
            for name, value in values.items():
                writer.add_scalar(name, value, i)

        loop = _loop(step, tbx)
        start = time.perf_counter()
        writer.close()
        return {**loop, "close": time.perf_counter() - start}
    if config == "wandb":
        import wandb

        wb = wandb.init(project="overhead", dir=str(tmp), mode="offline")
        loop = _loop(step, lambda i, values: wb.log(values, step=i))
        start = time.perf_counter()
        wb.finish()
        return {**loop, "close": time.perf_counter() - start}
    return _metricbus(
        step,
        tmp,
        inprocess=config == "metricbus_inprocess",
        wandb=config != "metricbus_tb_csv",
        mlflow=config == "metricbus_four",
    )


def _metricbus(step: Callable[[], None], tmp: Path, *, inprocess: bool, wandb: bool, mlflow: bool) -> dict[str, float]:
    from producers import MetricLogger
    from sinks import CsvSink

    log = MetricLogger()
    isolate = {"isolate": "none"} if inprocess else {}
    log.add_sink(CsvSink(tmp / "m.csv"), **isolate)
    from sinks import TensorBoardSink

    log.add_sink(TensorBoardSink(tmp / "tb"), **isolate)
    if wandb:
        from sinks import WandbSink

        log.add_sink(WandbSink(project="overhead", mode="offline", dir=str(tmp)), **isolate)  # type: ignore[arg-type]
    if mlflow:
        from sinks import MLflowSink

        log.add_sink(MLflowSink(dir=tmp / "mlruns"), **isolate)
    log.flush()  # sinks open (sink hosts, wandb runs) before the clock starts
    loop = _loop(step, lambda i, values: log.scalars(values, i))
    start = time.perf_counter()
    log.close()
    return {**loop, "close": time.perf_counter() - start}


def contender(name: str) -> dict[str, float]:
    config, kind = name.rsplit(":", 1)
    if config == "calibrate":  # in a contender's own setting: one BLAS thread
        return {"reps": float(make_step(kind)[1])}
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
    with tempfile.TemporaryDirectory() as d:
        os.environ["WANDB_DIR"] = d
        return run(config, kind, Path(d))


LABELS = {
    "busy_core": "no logging,\nother core busy",
    "tensorboardx": "tensorboardX\nadd_scalar",
    "wandb": "wandb.log",
    "metricbus": "metricbus\nTB+CSV+W&B",
    "metricbus_tb_csv": "metricbus\nTB+CSV",
    "metricbus_inprocess": "metricbus TB+CSV+W&B\nall in the trainer",
    "metricbus_four": "metricbus TB+CSV+\nW&B+MLflow",
}


def _chart(rows: list[dict[str, object]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = [c for c in CONFIGS if c != "none"]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.38
    for offset, kind in ((-width / 2, "release"), (width / 2, "hold")):
        values = [next(float(r["value"]) for r in rows if r["config"] == c and r["step"] == kind) for c in configs]  # type: ignore[arg-type]
        bars = ax.bar([i + offset for i in range(len(configs))], values, width, label=f"step {kind}s the GIL")
        ax.bar_label(bars, fmt="%+.1f%%", fontsize=8)
    ax.axhline(1, color="grey", linestyle="--", linewidth=1, label="target +1%")
    ax.set_xticks(range(len(configs)), [LABELS[c] for c in configs], fontsize=8)
    ax.set_ylabel("training-loop overhead (%)")
    ax.set_title(f"10 scalars per ~1 ms step, 2000 steps (median of {ROUNDS} interleaved rounds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "overhead.png", dpi=110)


def main() -> None:
    if serve_contender(contender):
        return
    if "--chart" in sys.argv[1:]:  # redraw overhead.png from overhead.json
        _chart(json.loads((RESULTS / "overhead.json").read_text())["rows"])
        return
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = "1"  # inherited by contenders
    calibrated = run_contenders(__file__, ["calibrate:release", "calibrate:hold"])  # once, for every contender
    for kind in ("release", "hold"):
        os.environ[f"BENCH_REPS_{kind.upper()}"] = str(int(calibrated[f"calibrate:{kind}"]["reps"]))
    names = [f"{c}:{k}" for k in ("release", "hold") for c in CONFIGS]
    rounds = [run_contenders(__file__, names) for _ in range(ROUNDS)]
    rows: list[dict[str, object]] = []
    for kind in ("release", "hold"):
        for config in CONFIGS:
            overheads = [100 * (r[f"{config}:{kind}"]["loop"] / r[f"none:{kind}"]["loop"] - 1) for r in rounds]
            cpu = {
                what: statistics.median(
                    (r[f"{config}:{kind}"][what] - r[f"none:{kind}"][what]) / STEPS * 1e6 for r in rounds
                )
                for what in ("process_cpu", "thread_cpu")
            }
            rows.append(
                {
                    "what": f"{config}, step {kind}s the GIL",
                    "value": statistics.median(overheads),
                    "unit": "% overhead",
                    "config": config,
                    "step": kind,
                    "rounds": [round(x, 1) for x in overheads],
                    "process_cpu_us_per_step": cpu["process_cpu"],
                    "thread_cpu_us_per_step": cpu["thread_cpu"],
                    "loop_s": statistics.median(r[f"{config}:{kind}"]["loop"] for r in rounds),
                    "close_s": statistics.median(r[f"{config}:{kind}"]["close"] for r in rounds),
                }
            )
    write_result("overhead", rows)
    _chart(rows)


if __name__ == "__main__":
    main()
