"""GPU tensors without a host sync: a CUDA training loop logging its loss tensors.

2,000 steps of a small CUDA model (a few matmuls: ~1 ms of GPU work, launched asynchronously),
each logging the loss tensor and two more 0-d tensors with `log.scalar`/`log.scalars`, under
`torch.cuda.set_sync_debug_mode("error")`: any host sync on the training thread raises. The loop
time with logging is compared with the same loop without logging (interleaved rounds, medians),
and the values written are checked against `.item()` of the same tensors, read after the loop.
Needs a CUDA device: on a machine without one it says so and exits 0.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import write_result

STEPS = 2_000
ROUNDS = 5


def main() -> None:
    import torch

    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; run it on a machine with one")
        return
    from producers import MetricLogger
    from sinks import JsonlSink, read_jsonl

    torch.manual_seed(0)
    device = torch.device("cuda")
    model = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(4)]).to(device)
    data = torch.randn(256, 1024, device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def step() -> torch.Tensor:
        loss = model(data).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    for _ in range(50):  # warm up kernels and the allocator
        step()
    torch.cuda.synchronize()

    def run(logging: bool, out: Path) -> tuple[float, list[torch.Tensor]]:
        kept: list[torch.Tensor] = []
        log = MetricLogger(sinks=[JsonlSink(out / "m.jsonl")]) if logging else None
        if log is not None:
            log.flush()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        start = time.perf_counter()
        try:
            for i in range(STEPS):
                loss = step()
                if log is not None:
                    log.scalar("loss", loss, step=i)
                    log.scalars({"loss2": loss * 2, "norm": data[0, 0]}, step=i)
                    if i % 100 == 0:
                        kept.append(loss)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        finally:
            torch.cuda.set_sync_debug_mode("default")
        if log is not None:
            log.close()
        return seconds, kept

    with_logging, without = [], []
    for r in range(ROUNDS):
        with tempfile.TemporaryDirectory() as d:
            without.append(run(False, Path(d))[0])
            seconds, kept = run(True, Path(d))
            with_logging.append(seconds)
            written = {e.step: e.value for e in read_jsonl(Path(d) / "m.jsonl") if getattr(e, "name", "") == "loss"}
            expected = {i * 100: t.item() for i, t in enumerate(kept)}
            assert all(written[s] == v for s, v in expected.items()), "values differ from .item()"
            assert len(written) == STEPS
        print(f"round {r}: without {without[-1]:.3f} s, with {seconds:.3f} s", flush=True)
    base, logged = statistics.median(without), statistics.median(with_logging)
    write_result(
        "gpu",
        [
            {"what": "CUDA loop, no logging", "value": base / STEPS * 1e6, "unit": "us/step"},
            {
                "what": "CUDA loop, 3 tensor values logged per step, sync debug mode 'error'",
                "value": logged / STEPS * 1e6,
                "unit": "us/step",
                "overhead_pct": 100 * (logged / base - 1),
            },
        ],
    )


if __name__ == "__main__":
    main()
