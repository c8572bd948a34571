"""Training scripts the delivery tests and `benchmarks/bench_delivery.py` run as real processes:
the loops users write. Each takes the output folder as its first argument.
"""

from __future__ import annotations

__all__ = ["DATALOADER_LOOP", "PRINTING_LOOP"]

# each ~1 ms step holds the GIL (Python work) and prints a line: the convoy effect. argv: out, seconds
PRINTING_LOOP = """
import sys, time
from producers import MetricLogger
from sinks import CsvSink, JsonlSink, TensorBoardSink
out, seconds = sys.argv[1], float(sys.argv[2])
with MetricLogger(sinks=[CsvSink(out + "/m.csv"), JsonlSink(out + "/m.jsonl"), TensorBoardSink(out + "/tb")]) as log:
    print("start", time.time(), flush=True)
    end = time.monotonic() + seconds
    step = 0
    while time.monotonic() < end:
        x = 0
        for i in range(3_000):  # ~1 ms of Python that holds the GIL
            x += i
        log.scalars({"loss": 1.0 / (step + 1), "x": float(x)}, step=step)
        print(f"step {step}", file=sys.stderr)  # a short syscall every step: the convoy effect
        step += 1
    print("logged", step, time.time(), flush=True)
"""

# a PyTorch loop fed by a DataLoader with 2 forked worker processes, 3 epochs, four sinks; prints
# how long close() took. argv: out, "persistent" or "per-epoch"
DATALOADER_LOOP = """
import sys, time
import torch
from torch.utils.data import DataLoader, TensorDataset
from producers import MetricLogger
from sinks import CsvSink, JsonlSink, TensorBoardSink, WandbSink
out, persistent = sys.argv[1], sys.argv[2] == "persistent"
data = TensorDataset(torch.randn(256, 8), torch.randn(256, 1))
loader = DataLoader(data, batch_size=16, num_workers=2, persistent_workers=persistent,
                    multiprocessing_context="fork")
model = torch.nn.Linear(8, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
log = MetricLogger(sinks=[CsvSink(out + "/m.csv"), JsonlSink(out + "/m.jsonl"), TensorBoardSink(out + "/tb"),
                          WandbSink(project="loader", dir=out)])
step = 0
for epoch in range(3):
    for x, y in loader:
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        log.scalar("loss", loss.detach(), step=step)
        step += 1
started = time.monotonic()
log.close()
print("closed", step, time.monotonic() - started, flush=True)
"""
