"""pytorch_accelerated: run-history metrics (losses and a callback's own) per epoch, batch losses
per step, the run config as hyperparameters; and a standalone evaluation after training."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pytorch_accelerated import Trainer
from pytorch_accelerated.callbacks import MoveModulesToDeviceCallback, TrainerCallback
from torch.utils.data import TensorDataset

from bus import Hparams, Metrics, Scalar, Sink
from producers.integrations import MetricBusLogMetricsCallback
from sinks import JsonlSink, MemorySink, read_jsonl


class MeanAbsErrorCallback(TrainerCallback):  # type: ignore[misc]
    """The seed's pattern: a callback computes a metric and puts it in the run history."""

    def on_eval_epoch_start(self, trainer: Any, **kwargs: Any) -> None:
        self.total, self.count = 0.0, 0

    def on_eval_step_end(self, trainer: Any, batch: Any, batch_output: dict[str, Any], **kwargs: Any) -> None:
        self.total += float((batch_output["model_outputs"] - batch[1]).abs().sum())
        self.count += len(batch[1])

    def on_eval_epoch_end(self, trainer: Any, **kwargs: Any) -> None:
        trainer.run_history.update_metric("mae", self.total / self.count)


def _trainer(sink: Sink) -> Trainer:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    return Trainer(
        model=model,
        loss_func=torch.nn.MSELoss(),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        # the metric callback runs before the logger, as the seed's warning asks
        callbacks=(MoveModulesToDeviceCallback(), MeanAbsErrorCallback(), MetricBusLogMetricsCallback(sinks=[sink])),
    )


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(32, 4, generator=g), torch.randn(32, 1, generator=g))


def test_epoch_metrics_match_the_run_history_and_steps_are_counted(no_leftover_loggers: Callable[[], None]) -> None:
    sink = MemorySink()
    trainer = _trainer(sink)
    trainer.train(train_dataset=_data(), eval_dataset=_data(), num_epochs=3, per_device_batch_size=8)

    assert sink.closed
    no_leftover_loggers()
    for name in ("train_loss_epoch", "eval_loss_epoch", "mae"):
        expected = list(trainer.run_history.get_metric_values(name))
        got = sink.values(name)
        assert [s for s, _ in got] == [1, 2, 3] and len(expected) == 3
        assert all(math.isclose(a, b, rel_tol=1e-6) for (_, a), b in zip(got, expected, strict=True))
    steps = [e for e in sink.events if isinstance(e, Scalar) and e.name == "train_loss_step"]
    assert [e.step for e in steps] == list(range(12))  # 4 batches x 3 epochs
    assert [e.context.epoch for e in steps[::4]] == [1, 2, 3]  # type: ignore[union-attr]
    (hparams,) = [e for e in sink.events if isinstance(e, Hparams)]
    assert hparams.params["num_epochs"] == 3 and hparams.params["train_per_device_batch_size"] == 8


def test_train_then_evaluate_every_run_history_value_reaches_the_same_file(
    tmp_path: Path, no_leftover_loggers: Callable[[], None]
) -> None:
    path = tmp_path / "e.jsonl"
    trainer = _trainer(JsonlSink(path))
    trainer.train(train_dataset=_data(), eval_dataset=_data(), num_epochs=2, per_device_batch_size=8)
    trained = {name: trainer.run_history.get_metric_values(name) for name in trainer.run_history.get_metric_names()}
    trainer.evaluate(dataset=_data(), per_device_batch_size=8)  # resets the run history: epoch 1 again

    no_leftover_loggers()
    evaluated = {name: trainer.run_history.get_metric_values(name) for name in trainer.run_history.get_metric_names()}
    assert sorted(trained) == ["eval_loss_epoch", "mae", "train_loss_epoch"]
    assert sorted(evaluated) == ["evaluation_loss", "mae"]
    *training, evaluation = [e for e in read_jsonl(path) if isinstance(e, Metrics)]
    for name, values in trained.items():  # each epoch's value at that epoch
        assert [(e.step, e.values[name]) for e in training if name in e.values] == list(enumerate(values, start=1))
    assert evaluation.step == 1 and evaluation.values == {name: values[-1] for name, values in evaluated.items()}
    steps = [e.step for e in read_jsonl(path) if isinstance(e, Scalar) and e.name == "train_loss_step"]
    assert steps == list(range(8))  # the training run's 4 batches x 2 epochs; evaluation adds none


def test_without_pytorch_accelerated_the_error_names_the_extra(import_error_without: Callable[[str, str], str]) -> None:
    message = import_error_without("pytorch_accelerated", "MetricBusLogMetricsCallback")
    assert "pip install 'metricbus[accelerated]'" in message
