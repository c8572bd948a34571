"""Calling-thread cost of the SummaryWriter drop-in next to tensorboardX's, and of skipped calls.

What a training loop pays per call, measured on the calling thread as the median of 5 runs of N
calls in a tight loop: `producers.SummaryWriter.add_scalar` / `add_scalars` (default
TensorBoardSink, in its worker process) against `tensorboardX.SummaryWriter`'s, and a call that
`log_freq` skips (bare `LogFrequency`, `MetricLogger.scalar`, `SummaryWriter.add_scalar`), and
each media method (`add_audio`, `add_video`, `add_image_with_boxes`, `add_pr_curve(_raw)`,
`add_mesh`, `add_embedding`, `add_graph`) on both writers: what one call costs the calling thread
(ours: a conversion and a hand-off; tensorboardX: the WAV/GIF/PNG encoding and file writes too),
timed call by call with a flush between calls, outside the clock.
An empty loop iteration is listed too: every per-call number includes it.
Each contender runs in its own interpreter (`run_contenders`).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import run_contenders, serve_contender, write_result

SERIES = {"train": 0.5, "val": 0.4, "test": 0.3}
NEVER = 1_000_000_000  # log_freq for "skip everything": steps 1.. are never a multiple of it


def _median_per_call(loop: Callable[[int, int], None], calls: int) -> float:
    """Median seconds per call of `loop(first_step, calls)` over 5 runs (steps never repeat)."""
    times = []
    for run in range(5):
        start = time.perf_counter()
        loop(1 + run * calls, calls)
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def _empty(tmp: Path) -> float:
    def loop(first: int, n: int) -> None:
        for _step in range(first, first + n):
            pass

    return _median_per_call(loop, 1_000_000)


def _ours_scalar(tmp: Path) -> float:
    from producers import SummaryWriter

    with SummaryWriter(tmp) as writer:
        writer.flush()  # the sink's worker process is up before the clock starts
        add = writer.add_scalar

        def loop(first: int, n: int) -> None:
            for step in range(first, first + n):
                add("train/loss", 0.5, step)

        return _median_per_call(loop, 20_000)


def _tbx_scalar(tmp: Path) -> float:
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(tmp))
    add = writer.add_scalar

    def loop(first: int, n: int) -> None:
        for step in range(first, first + n):
            add("train/loss", 0.5, step)

    try:
        return _median_per_call(loop, 5_000)
    finally:
        writer.close()


def _ours_scalars(tmp: Path) -> float:
    from producers import SummaryWriter

    with SummaryWriter(tmp) as writer:
        writer.flush()
        add = writer.add_scalars

        def loop(first: int, n: int) -> None:
            for step in range(first, first + n):
                add("accuracy", SERIES, step)

        return _median_per_call(loop, 5_000)


def _tbx_scalars(tmp: Path) -> float:
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(tmp))
    add = writer.add_scalars

    def loop(first: int, n: int) -> None:
        for step in range(first, first + n):
            add("accuracy", SERIES, step)

    try:
        return _median_per_call(loop, 2_000)
    finally:
        writer.close()


def _skipped_frequency(tmp: Path) -> float:
    from producers import LogFrequency

    should_log = LogFrequency.parse(NEVER).should_log

    def loop(first: int, n: int) -> None:
        for step in range(first, first + n):
            should_log(step)

    return _median_per_call(loop, 1_000_000)


def _skipped_logger(tmp: Path) -> float:
    from benchmarks.bench_bus import NullSink
    from producers import MetricLogger

    with MetricLogger(sinks=[NullSink()], log_freq=NEVER) as log:
        scalar = log.scalar

        def loop(first: int, n: int) -> None:
            for step in range(first, first + n):
                scalar("train/loss", 0.5, step)

        return _median_per_call(loop, 500_000)


def _skipped_writer(tmp: Path) -> float:
    from producers import SummaryWriter

    with SummaryWriter(tmp, log_freq=NEVER) as writer:
        add = writer.add_scalar

        def loop(first: int, n: int) -> None:
            for step in range(first, first + n):
                add("train/loss", 0.5, step)

        return _median_per_call(loop, 500_000)


def _media_inputs() -> dict[str, tuple[str, int, Callable[[Any, int], None]]]:
    """name: (what one call logs, calls per run, call(writer, step)); inputs made once, seeded."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    sound = np.sin(np.linspace(0, 2000, 88_200)).astype(np.float32)  # 2 s mono at 44.1 kHz
    clip = rng.random((1, 16, 3, 32, 32)).astype(np.float32)
    picture, boxes = rng.random((3, 64, 64)).astype(np.float32), np.array([[4, 4, 30, 30], [20, 20, 60, 50]])
    labels, predictions = rng.integers(0, 2, 10_000), rng.random(10_000)
    curve = [rng.random(127).tolist() for _ in range(6)]
    vertices, faces = rng.random((1, 1_000, 3)), rng.integers(0, 1_000, (1, 2_000, 3))
    points, names, thumbs = rng.random((100, 16)), [f"p{i}" for i in range(100)], rng.random((100, 3, 8, 8))
    model, model_input = (
        torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)),
        torch.zeros(1, 16),
    )
    return {
        "audio": ("add_audio, 2 s mono 44.1 kHz", 50, lambda w, s: w.add_audio("sound", sound, s)),
        "video": ("add_video, 16 frames 3x32x32", 10, lambda w, s: w.add_video("clip", clip, s)),
        "boxes": (
            "add_image_with_boxes, 3x64x64, 2 boxes",
            50,
            lambda w, s: w.add_image_with_boxes("b", picture, boxes, s),
        ),
        "pr_curve": ("add_pr_curve, 10,000 predictions", 50, lambda w, s: w.add_pr_curve("pr", labels, predictions, s)),
        "pr_curve_raw": ("add_pr_curve_raw, 127 thresholds", 200, lambda w, s: w.add_pr_curve_raw("raw", *curve, s)),
        "mesh": (
            "add_mesh, 1,000 vertices, 2,000 faces",
            50,
            lambda w, s: w.add_mesh("m", vertices, faces=faces, global_step=s),
        ),
        "embedding": (
            "add_embedding, 100x16, labels, 8x8 images",
            10,
            lambda w, s: w.add_embedding(points, names, thumbs, s),
        ),
        "graph": ("add_graph, a 3-layer MLP", 5, lambda w, s: w.add_graph(model, model_input)),
    }


def _media(writer_module: str, method: str) -> Callable[[Path], float]:
    """Per-call seconds of one media method on `writer_module`'s SummaryWriter, the call alone:
    the writer is flushed between calls, outside the clock, as a loop that does real work between
    two such calls gives its sinks time to catch up (a tight loop of clips measures the pipe)."""

    def measure(tmp: Path) -> float:
        import importlib

        writer = importlib.import_module(writer_module).SummaryWriter(str(tmp))
        _what, calls, call = _media_inputs()[method]
        call(writer, 0)  # warm-up: imports, the sink's worker process, torch's tracer
        writer.flush()

        def loop(first: int, n: int) -> float:
            spent = 0.0
            for step in range(first, first + n):
                start = time.perf_counter()
                call(writer, step)
                spent += time.perf_counter() - start
                writer.flush()
            return spent / n

        try:
            return statistics.median(loop(1 + run * calls, calls) for run in range(5))
        finally:
            writer.close()

    return measure


MEDIA = ["audio", "video", "boxes", "pr_curve", "pr_curve_raw", "mesh", "embedding", "graph"]

CONTENDERS: dict[str, tuple[str, str, Callable[[Path], float]]] = {
    # name: (what, unit, measure); unit "us" or "ns" per call
    "ours_scalar": ("producers.SummaryWriter.add_scalar (TensorBoard sink in its worker)", "us", _ours_scalar),
    "tbx_scalar": ("tensorboardX.SummaryWriter.add_scalar", "us", _tbx_scalar),
    "ours_scalars": ("producers.SummaryWriter.add_scalars, 3 series", "us", _ours_scalars),
    "tbx_scalars": ("tensorboardX.SummaryWriter.add_scalars, 3 series", "us", _tbx_scalars),
    "skipped_frequency": ("skipped: LogFrequency.should_log(step) alone", "ns", _skipped_frequency),
    "skipped_logger": ("skipped: MetricLogger.scalar with log_freq", "ns", _skipped_logger),
    "skipped_writer": ("skipped: SummaryWriter.add_scalar with log_freq", "ns", _skipped_writer),
    "empty": ("an empty loop iteration (included in every row)", "ns", _empty),
    **{f"ours_{m}": (f"producers.SummaryWriter.{m} (see _media_inputs)", "us", _media("producers", m)) for m in MEDIA},
    **{
        f"tbx_{m}": (f"tensorboardX.SummaryWriter.{m} (see _media_inputs)", "us", _media("tensorboardX", m))
        for m in MEDIA
    },
}


def contender(name: str) -> float:
    with tempfile.TemporaryDirectory() as d:
        return CONTENDERS[name][2](Path(d))


def main() -> None:
    if serve_contender(contender):
        return
    seconds = run_contenders(__file__, list(CONTENDERS))
    baseline = {"ours_scalar": "tbx_scalar", "ours_scalars": "tbx_scalars", **{f"ours_{m}": f"tbx_{m}" for m in MEDIA}}
    rows = []
    for name, (what, unit, _) in CONTENDERS.items():
        side, _, method = name.partition("_")
        if method in MEDIA:
            what = f"{'producers' if side == 'ours' else 'tensorboardX'}: {_media_inputs()[method][0]}"
        row = {"what": what, "value": seconds[name] * (1e6 if unit == "us" else 1e9), "unit": f"{unit}/call"}
        if name in baseline:
            row["x_faster_than_tensorboardX"] = seconds[baseline[name]] / seconds[name]
        rows.append(row)
    write_result("producers", rows)


if __name__ == "__main__":
    main()
