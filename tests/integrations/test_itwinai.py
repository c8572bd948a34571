"""itwinai-style unified logger: one `log` reaching every sink, log_freq exactly as itwinai's docs
describe it (int N: batches 0, N, 2N, ...; "batch": every batch; "epoch": only calls without a
batch_idx), hyperparameters, kinds, and a rank per process."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bus import Histogram, Hparams, InvalidConfig, InvalidEvent, Scalar, Text
from producers import LogFrequency, MetricLogger
from producers.integrations import ItwinaiLogger
from sinks import CsvSink, JsonlSink, MemorySink, read_jsonl


def _epoch(logger: ItwinaiLogger, epoch: int, batches: int = 12) -> None:
    for batch in range(batches):
        logger.log(epoch + batch / 100, "loss", step=epoch * batches + batch, batch_idx=batch)
    logger.log(0.5 + epoch / 10, "val_acc", step=epoch)  # an epoch-level call: no batch_idx


def test_log_freq_5_logs_batches_0_5_10_and_every_epoch_call_to_every_sink(tmp_path: Path) -> None:
    memory = MemorySink()
    with ItwinaiLogger(sinks=[memory, CsvSink(tmp_path / "m.csv"), JsonlSink(tmp_path / "e.jsonl")], log_freq=5) as it:
        for epoch in range(2):
            _epoch(it, epoch)
    expected_loss_steps = [0, 5, 10, 12, 17, 22]
    assert [s for s, _ in memory.values("loss")] == expected_loss_steps
    assert memory.values("val_acc") == [(0, 0.5), (1, 0.6)]
    with open(tmp_path / "m.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f) if r["name"] == "loss"] == expected_loss_steps
    jsonl = [e for e in read_jsonl(tmp_path / "e.jsonl") if isinstance(e, Scalar)]
    assert [(e.name, e.step) for e in jsonl] == [(e.name, e.step) for e in memory.events if isinstance(e, Scalar)]


@pytest.mark.parametrize(
    ("freq", "loss_steps"),
    [
        ("batch", list(range(24))),
        ("epoch", []),
        (1, list(range(24))),
        (12, [0, 12]),
        (LogFrequency(every=6), [0, 6, 12, 18]),
    ],
)
def test_batch_epoch_and_int_frequencies(freq: int | str | LogFrequency, loss_steps: list[int]) -> None:
    sink = MemorySink()
    with ItwinaiLogger(sinks=[sink], log_freq=freq) as it:  # type: ignore[arg-type]
        for epoch in range(2):
            _epoch(it, epoch)
    assert [s for s, _ in sink.values("loss")] == loss_steps
    assert [s for s, _ in sink.values("val_acc")] == [0, 1]  # calls without batch_idx: always


def test_should_log_is_itwinais_rule() -> None:
    with ItwinaiLogger(sinks=[MemorySink()], log_freq=5) as it:
        assert [b for b in range(12) if it.should_log(b)] == [0, 5, 10]
        assert it.should_log() and it.should_log(None)


def test_the_step_is_step_else_batch_idx_else_zero() -> None:
    sink = MemorySink()
    with ItwinaiLogger(sinks=[sink], log_freq="batch") as it:
        it.log(1.0, "a", step=7, batch_idx=3)
        it.log(2.0, "b", batch_idx=3)
        it.log(3.0, "c")
    assert [(e.name, e.step) for e in sink.events if isinstance(e, Scalar)] == [("a", 7), ("b", 3), ("c", 0)]


def test_kinds_and_hyperparameters_reach_the_sinks() -> None:
    sink = MemorySink()
    with ItwinaiLogger(sinks=[sink], log_freq="batch") as it:
        it.save_hyperparameters({"optimizer": {"name": "adam", "lr": 1e-3}, "epochs": 3})
        it.log("a note", "notes", kind="text", step=1)
        it.log([0.1, 0.2, 0.3], "weights", kind="histogram", step=1)
        with pytest.raises(InvalidEvent, match="kind"):
            it.log(1, "x", kind="image")  # type: ignore[arg-type]
    hp, text, hist = sink.events
    assert isinstance(hp, Hparams) and hp.params == {"optimizer/name": "adam", "optimizer/lr": 1e-3, "epochs": 3}
    assert isinstance(text, Text) and text.text == "a note"
    assert isinstance(hist, Histogram) and hist.values == (0.1, 0.2, 0.3)


def test_logger_context_rank_and_a_shared_logger() -> None:
    sink = MemorySink()
    with MetricLogger(sinks=[sink]) as log:
        it = ItwinaiLogger(logger=log, log_freq="epoch")
        it.create_logger_context(rank=2)
        it.log(0.9, "val_acc", step=0)
        it.destroy_logger_context()  # a shared logger is only flushed
        log.scalar("still_open", 1.0, step=1)
    assert [e.origin.label for e in sink.events] == ["rank2", "main"]


def test_bad_frequencies_are_invalid_configs() -> None:
    for bad in (0, -5, "hourly", True):
        with pytest.raises(InvalidConfig):
            ItwinaiLogger(sinks=[MemorySink()], log_freq=bad)  # type: ignore[arg-type]
