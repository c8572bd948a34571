"""A Jupyter kernel (ipykernel, driven by jupyter_client as Jupyter does) with a logger left open:
when Jupyter asks the kernel to shut down, it exits promptly and cleanly, everything logged is on
disk, and no sink host is left behind."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from queue import Empty

import pytest

jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]

CELL = """
from producers import MetricLogger
from sinks import CsvSink
log = MetricLogger(sinks=[CsvSink("m.csv")])
for i in range(5000):
    log.scalar("loss", 1.0 / (i + 1), step=i)
print("host", log.stats()[log.sink_names[0]].where)
"""


def run_cell(client: object, code: str, timeout: float = 120.0) -> str:
    """Execute `code` and return what it printed (raises on an error in the cell)."""
    msg_id = client.execute(code)  # type: ignore[attr-defined]
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            msg = client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))  # type: ignore[attr-defined]
        except Empty:
            raise AssertionError(f"the cell did not finish within {timeout}s: {''.join(out)}") from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind == "error":
            raise AssertionError("\n".join(content["traceback"]))
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(out)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_a_kernel_with_an_open_logger_shuts_down_cleanly_with_everything_on_disk(tmp_path: Path) -> None:
    manager = jupyter_client.KernelManager(kernel_name="python3")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    manager.start_kernel(cwd=str(tmp_path), env=env)
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        printed = run_cell(client, CELL)
        host = int(printed.split("pid ")[1].split(")")[0])
        assert alive(host)
        kernel = manager.provisioner.process  # type: ignore[union-attr]
        # As Jupyter does it: ask, wait shutdown_wait_time (5 s), then SIGTERM, then kill.
        manager.shutdown_kernel()
        code = kernel.wait(timeout=30)
    finally:
        client.stop_channels()
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)
    assert code == 0  # it exited by itself: not SIGTERMed or killed after the grace period
    with open(tmp_path / "m.csv", newline="") as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == list(range(5000))
    deadline = time.monotonic() + 30
    while alive(host) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(host)
