"""One process of tests/integrations/test_transformers_ranks.py, under torchrun (2 processes, gloo):

    torchrun --standalone --nproc_per_node=2 tests/integrations/transformers_child.py OUT

A tiny BERT (built from a config: no hub) trained by a Hugging Face `Trainer` for 5 steps,
logging every 2 (so the last step's loss is each process's own in `train_loss`) and evaluating
every 2, then `trainer.evaluate()` as a stage of its own, with `MetricBusCallback` over a JSONL
file and a TensorBoard logdir. Every collective of `torch.distributed` is wrapped before
transformers is imported and counted, separately, when a frame of metricbus is on the stack
(`accelerate_child.count_collectives`). The main process writes OUT/history.json (the Trainer's
`state.log_history`); each process writes OUT/rank<r>.json: those counts and the metricbus
threads still alive at the end.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.integrations.accelerate_child import count_collectives  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1])
    counts = count_collectives()  # before transformers (and metricbus) are imported

    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    from producers.integrations import MetricBusCallback
    from sinks import JsonlSink, TensorBoardSink
    from tests.integrations.test_transformers import Random

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    args = TrainingArguments(
        output_dir=str(out / "trainer"),
        max_steps=5,
        logging_steps=2,
        eval_strategy="steps",
        eval_steps=2,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        ddp_backend="gloo",
        save_strategy="no",
        disable_tqdm=True,
    )
    callback = MetricBusCallback(sinks=[JsonlSink(out / "hf.jsonl"), TensorBoardSink(out / "tb")])
    trainer = Trainer(
        model=BertForSequenceClassification(config),
        args=args,
        train_dataset=Random(32),
        eval_dataset=Random(8),
        callbacks=[callback],
    )
    trainer.train()
    trainer.evaluate()
    if trainer.is_world_process_zero():
        (out / "history.json").write_text(json.dumps(trainer.state.log_history))
    left = [t.name for t in threading.enumerate() if t.name == "metricbus" and t.is_alive()]
    (out / f"rank{os.environ['RANK']}.json").write_text(json.dumps({"counts": counts, "left": left}))


if __name__ == "__main__":
    main()
