"""Hugging Face: the callback publishes what the Trainer recorded in its own log_history, and its
arguments and model config as hyperparameters. The model is built from a config: no hub."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from bus import Hparams, Metrics
from producers.integrations import MetricBusCallback
from sinks import JsonlSink, MemorySink, read_jsonl


class Random(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 50, (n, 8), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": self.labels[i]}


def _trainer(tmp_path: Path, callback: MetricBusCallback) -> Trainer:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,  # num_labels defaults to 2
    )
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
    return Trainer(
        model=BertForSequenceClassification(config),
        args=args,
        train_dataset=Random(16),
        eval_dataset=Random(8),
        callbacks=[callback],
    )


def _close(got: list[tuple[int, float]], expected: list[tuple[int, float]]) -> bool:
    same_steps = [s for s, _ in got] == [s for s, _ in expected]
    return same_steps and all(math.isclose(a, b, rel_tol=1e-6) for (_, a), (_, b) in zip(got, expected, strict=True))


def test_trainer_logs_reach_the_sinks_with_their_steps(tmp_path: Path, no_leftover_loggers: Callable[[], None]) -> None:
    memory = MemorySink()
    trainer = _trainer(tmp_path, MetricBusCallback(sinks=[memory, JsonlSink(tmp_path / "e.jsonl")]))
    trainer.train()

    assert memory.closed
    no_leftover_loggers()
    jsonl = [e for e in read_jsonl(tmp_path / "e.jsonl") if isinstance(e, Metrics)]
    history = trainer.state.log_history
    for key in ("loss", "eval_loss", "learning_rate", "train_runtime"):
        expected = [(int(h["step"]), float(h[key])) for h in history if key in h]
        assert expected
        assert _close(memory.values(key), expected)
        assert _close([(e.step, e.values[key]) for e in jsonl if key in e.values], expected)
    (hparams,) = [e for e in memory.events if isinstance(e, Hparams)]
    assert hparams.params["max_steps"] == 4 and hparams.params["learning_rate"] == 1e-3
    assert hparams.params["model/hidden_size"] == 16 and hparams.params["model/id2label/0"] == "LABEL_0"


def test_train_then_evaluate_twice_every_log_history_entry_reaches_the_same_file(
    tmp_path: Path, no_leftover_loggers: Callable[[], None]
) -> None:
    path = tmp_path / "e.jsonl"
    trainer = _trainer(tmp_path, MetricBusCallback(sinks=[JsonlSink(path)]))
    trainer.train()  # on_train_end closes the callback's logger
    first: dict[str, Any] = trainer.evaluate()  # a stage of its own: a fresh logger, closed at its end
    second: dict[str, Any] = trainer.evaluate()

    no_leftover_loggers()
    history = trainer.state.log_history
    assert [h["eval_loss"] for h in history[-2:]] == [first["eval_loss"], second["eval_loss"]]
    expected = [(h["step"], {k: float(v) for k, v in h.items() if k != "step"}) for h in history]
    got = [(e.step, e.values) for e in read_jsonl(path) if isinstance(e, Metrics)]
    assert got == expected  # every entry of training and both evaluations, in order, once, at its step


def test_without_transformers_the_error_names_the_extra(import_error_without: Callable[[str, str], str]) -> None:
    assert "pip install 'metricbus[transformers]'" in import_error_without("transformers", "MetricBusCallback")
