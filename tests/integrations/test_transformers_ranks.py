"""The Hugging Face Trainer under a real multi-process launch (torchrun, 2 CPU processes, gloo)
with MetricBusCallback: what metricbus wrote is the Trainer's own `log_history`, as one job run,
with no collective from metricbus, and every stage (train, then evaluate) ends."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bus import Hparams, Metrics, Origin
from sinks import read_jsonl
from tests.rank_checks import TORCHRUN

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("transformers_child.py")
LAUNCHER = ("RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT")
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]], list[dict[str, Any]]]:
    """Train and evaluate under torchrun once for the module: the folder, rank 0's log_history,
    each process's report."""
    out = tmp_path_factory.mktemp("transformers")
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER}
    env |= {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    run = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(CHILD), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=240,  # nothing hangs: both stages end and both processes exit
    )
    assert run.returncode == 0, run.stderr.decode()[-4000:]
    history = json.loads((out / "history.json").read_text())
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    return out, history, reports


def test_what_metricbus_wrote_is_the_trainers_log_history_as_one_job_run(
    trained: tuple[Path, list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    out, history, _ = trained
    events = read_jsonl(out / "hf.jsonl")
    expected = [(h["step"], {k: float(v) for k, v in h.items() if k != "step"}) for h in history]
    assert {"loss", "eval_loss", "train_loss", "train_runtime"} <= {k for _, v in expected for k in v}
    got = [(e.step, e.values) for e in events if isinstance(e, Metrics)]
    assert got == expected  # every entry of training and of the evaluation after it, in order, once
    assert {e.origin for e in events} == {Origin()}  # the job's run alone: no rank's copy of it
    (hparams,) = [e for e in events if isinstance(e, Hparams)]
    assert hparams.params["max_steps"] == 5 and hparams.params["model/hidden_size"] == 16

    tb = out / "tb"  # TensorBoard: the logdir is the job's one run, with no run per rank under it
    assert [p.name for p in tb.iterdir() if p.is_dir()] == []
    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    acc.Reload()
    losses = [(s.step, s.value) for s in acc.Scalars("loss")]
    assert losses == [(step, pytest.approx(v["loss"], rel=1e-6)) for step, v in expected if "loss" in v]


def test_metricbus_issues_no_collective_and_every_process_closes_its_logger(
    trained: tuple[Path, list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    _, _, reports = trained
    for report in reports:
        assert report["counts"]["metricbus"] == {}
        assert report["counts"]["all"].get("all_gather", 0) > 0  # the Trainer's own gather, seen by the counter
        assert report["left"] == []
