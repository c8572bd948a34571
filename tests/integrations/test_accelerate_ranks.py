"""Accelerate's logging from every process, reduced at the job's host without a collective: a
real torchrun launch (2 CPU processes, gloo) of a tiny Accelerate training loop whose processes
each log their own values through `MetricBusTracker`, compared with Accelerate's own reduction
(`accelerator.reduce`, `all_reduce`) computed in the same script."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bus import MISSING_METRIC, REDUCE_KEY, Hparams, Metrics, Origin, RunConfig
from sinks import read_jsonl
from tests.rank_checks import TORCHRUN

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("accelerate_child.py")
LAUNCHER = ("RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT")
STEPS = 12
PER_RANK = ("train/loss", "train/target_sum", "train/err_max")
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any], list[dict[str, Any]]]:
    """Run the loop under torchrun once for the module: the folder, the JSONL's events, each
    process's report."""
    out = tmp_path_factory.mktemp("accelerate")
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER}
    env |= {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(CHILD), str(out), str(STEPS)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr.decode()[-4000:]
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    return out, read_jsonl(out / "job.jsonl"), reports


def rows(events: list[Any], origin: Origin) -> dict[int, dict[str, float]]:
    """The Metrics values at `origin`, merged per step."""
    out: dict[int, dict[str, float]] = {}
    for e in events:
        if isinstance(e, Metrics) and e.origin == origin:
            out.setdefault(e.step, {}).update(e.values)
    return out


def test_every_process_logs_through_the_tracker_and_the_job_series_equals_accelerates_reduction(
    trained: tuple[Path, list[Any], list[dict[str, Any]]],
) -> None:
    _, events, reports = trained
    reference = reports[0]["reference"]
    job = rows(events, Origin())
    assert sorted(job) == list(range(STEPS))
    for step in range(STEPS):
        assert MISSING_METRIC not in job[step]  # every rank reported every step
        for name in PER_RANK:  # mean, the declared sum, the declared max (a glob): Accelerate's values
            assert job[step][name] == pytest.approx(reference[str(step)][name], rel=1e-6, abs=1e-6), (step, name)
    for rank in (0, 1):  # every process's own values, as it logged them
        own = rows(events, Origin(rank=rank))
        assert sorted(own) == list(range(STEPS))
        for step in range(STEPS):
            assert {k: own[step][k] for k in PER_RANK} == reports[rank]["own"][str(step)]
    assert any(reports[0]["own"][s] != reports[1]["own"][s] for s in reports[0]["own"])  # their own shards
    declared = [e.values[REDUCE_KEY] for e in events if isinstance(e, RunConfig) and REDUCE_KEY in e.values]
    assert declared == [{"train/target_sum": "sum", "train/err_max": "max"}] * 2  # once per rank


def test_accelerator_log_on_the_main_process_is_rank_zeros_value_in_the_job_row_of_its_step(
    trained: tuple[Path, list[Any], list[dict[str, Any]]],
) -> None:
    _, events, _ = trained
    job, rank0, rank1 = (rows(events, Origin(rank=r)) for r in (None, 0, 1))
    for step in range(STEPS):
        assert rank0[step]["train/lr"] == job[step]["train/lr"] == pytest.approx(0.05 * (step + 1))
        assert "train/lr" not in rank1[step]  # Accelerate's log runs on the main process only
    (hparams,) = [e for e in events if isinstance(e, Hparams)]  # init_trackers' config: the job's, once
    assert hparams.origin == Origin() and hparams.params == {"lr": 0.05, "model/in": 4, "model/out": 1}


def test_one_host_for_the_job_no_collective_from_metricbus_and_end_training_closes_every_process(
    trained: tuple[Path, list[Any], list[dict[str, Any]]],
) -> None:
    out, _, reports = trained
    assert len({r["where"] for r in reports}) == 1 and reports[0]["where"].startswith("host job ")
    for report in reports:
        assert report["counts"]["metricbus"] == {}  # metricbus issued no collective
        assert report["counts"]["all"]["all_reduce"] == 3 * STEPS  # the counter saw the script's own
        assert report["left"] == []  # end_training finished the tracker on this process too
    with open(out / "job.csv", newline="", encoding="utf-8") as f:  # one table, the origin a column
        origins = Counter(row["origin"] for row in csv.DictReader(f))
    assert origins == {"main": 4 * STEPS, "rank0": 4 * STEPS, "rank1": 3 * STEPS}
