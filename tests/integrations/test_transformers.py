"""Hugging Face: the callback publishes what the Trainer recorded in its own log_history."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from bus import Hparams
from producers.integrations import MetricBusCallback
from sinks import MemorySink


class Random(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 50, (n, 8), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": self.labels[i]}


def test_trainer_logs_reach_the_sinks_with_their_steps(tmp_path: Path) -> None:
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    sink = MemorySink()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=4,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=2,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=BertForSequenceClassification(config),
        args=args,
        train_dataset=Random(16),
        eval_dataset=Random(8),
        callbacks=[MetricBusCallback(sinks=[sink])],
    )
    trainer.train()

    assert sink.closed
    history = trainer.state.log_history
    for key in ("loss", "eval_loss", "learning_rate"):
        expected = [(h["step"], float(h[key])) for h in history if key in h]
        got = sink.values(key)
        assert expected and [s for s, _ in got] == [s for s, _ in expected]
        assert all(math.isclose(a, b, rel_tol=1e-6) for (_, a), (_, b) in zip(got, expected, strict=True))
    (hparams,) = [e for e in sink.events if isinstance(e, Hparams)]
    assert hparams.params["max_steps"] == 4 and hparams.params["model/hidden_size"] == 16
