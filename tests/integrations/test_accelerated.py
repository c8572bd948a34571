"""pytorch_accelerated: run-history metrics per epoch and batch losses per step reach the sinks."""

from __future__ import annotations

import math

import torch
from pytorch_accelerated import Trainer
from pytorch_accelerated.callbacks import MoveModulesToDeviceCallback
from torch.utils.data import TensorDataset

from producers.integrations import MetricBusLogMetricsCallback
from sinks import MemorySink


def test_epoch_metrics_match_the_run_history_and_steps_are_counted() -> None:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    sink = MemorySink()
    model = torch.nn.Linear(4, 1)
    trainer = Trainer(
        model=model,
        loss_func=torch.nn.MSELoss(),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        callbacks=(MoveModulesToDeviceCallback(), MetricBusLogMetricsCallback(sinks=[sink])),
    )
    trainer.train(train_dataset=data, eval_dataset=data, num_epochs=3, per_device_batch_size=8)

    assert sink.closed
    for name in ("train_loss_epoch", "eval_loss_epoch"):
        expected = list(trainer.run_history.get_metric_values(name))
        got = sink.values(name)
        assert [s for s, _ in got] == [1, 2, 3] and len(expected) == 3
        assert all(math.isclose(a, b, rel_tol=1e-6) for (_, a), b in zip(got, expected, strict=True))
    steps = [e for e in sink.events if getattr(e, "name", "") == "train_loss_step"]
    assert [e.step for e in steps] == list(range(12))  # 4 batches x 3 epochs
    assert [e.context.epoch for e in steps[::4]] == [1, 2, 3]  # type: ignore[union-attr]
