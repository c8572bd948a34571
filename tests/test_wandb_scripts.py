"""producers.wandb against real wandb on what scripts nobody here tuned for do: seeded random
streams, a second `init`, lists of media, runs without a name or without a row. Each script runs
both ways (import line swapped), offline, and the run files are read back and compared
(tests/wandb_reader.py).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import wandb as real_wandb
from wandb_reader import WandbRun, read_run

import producers.wandb as our_wandb
from bus import InvalidConfig

ROOT = Path(__file__).resolve().parents[1]
#: Keys wandb stamps with the time: they differ between any two runs.
TIMES = {"_timestamp", "_runtime", "_wandb"}
MODULES = {"wandb": real_wandb, "producers.wandb": our_wandb}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_MODE", "WANDB_REINIT", "METRICBUS_PLAN", "METRICBUS_SINKS", "WANDB_DIR", "WANDB_NAME"):
        monkeypatch.delenv(name, raising=False)


def _comparable(value: Any) -> Any:
    """A run-file value without what differs between any two runs: times, and the step counter
    wandb puts in a media file's name (`samples_3_<sha>.png`)."""
    if isinstance(value, dict):
        out = {k: _comparable(v) for k, v in value.items() if k not in TIMES}
        if "path" in out:
            out["path"] = re.sub(r"_\d+_", "_N_", out["path"])
        if "filenames" in out:
            out["filenames"] = [re.sub(r"_\d+_", "_N_", f) for f in out["filenames"]]
        return out
    return value


def _runs(directory: Path) -> list[WandbRun]:
    """Every run under `directory`, by name, then in the order they started (a W&B run of
    producers.wandb starts in its sink host, a moment after `init` returns)."""
    return sorted((read_run(p) for p in directory.rglob("*.wandb")), key=lambda r: (r.name, r.started))


def _same_runs(real_dir: Path, ours_dir: Path) -> list[WandbRun]:
    """Assert that both directories hold the same runs (rows, config, summary, names); the real ones."""
    real, ours = _runs(real_dir), _runs(ours_dir)
    assert len(ours) == len(real)
    for r, o in zip(real, ours, strict=True):
        assert [_comparable(h) for h in o.history] == [_comparable(h) for h in r.history]
        assert _comparable(o.summary) == _comparable(r.summary)
        assert {k: v for k, v in o.config.items() if k not in TIMES} == {
            k: v for k, v in r.config.items() if k not in TIMES
        }
        assert (o.name, o.group, o.job_type, o.tags) == (r.name, r.group, r.job_type, r.tags)
    return real


def test_logging_leaves_a_seeded_random_stream_alone_and_seeded_scripts_get_distinct_ids(tmp_path: Path) -> None:
    random.seed(7)
    without_logging = [random.random() for _ in range(5)]
    for module_name, wandb in MODULES.items():
        random.seed(7)
        run = wandb.init(project="seeded", mode="offline", dir=str(tmp_path / module_name))
        run.log({"x": random.random()})
        first_id = run.id
        run.finish()
        assert [random.random() for _ in range(4)] == without_logging[1:], module_name
        random.seed(7)
        again = wandb.init(project="seeded", mode="offline", dir=str(tmp_path / f"{module_name}-2"))
        assert again.id != first_id, module_name  # online, the same id would resume the first run
        assert re.fullmatch(r"[a-z0-9]{8}", again.id)
        again.finish()


def _second_init(wandb: ModuleType, directory: Path) -> dict[str, Any]:
    """A script that calls init while a run is active, each way wandb's reinit allows."""
    seen: dict[str, Any] = {}
    first = wandb.init(project="again", mode="offline", dir=str(directory), config={"lr": 0.1}, name="first")
    wandb.log({"a": 1.0})
    second = wandb.init(project="again", mode="offline", dir=str(directory), config={"lr": 0.5}, name="other")
    seen["script default returns the active run"] = second is first
    wandb.log({"a": 2.0})  # still the first run
    seen["config kept"] = dict(wandb.config.items())
    third = wandb.init(project="again", mode="offline", dir=str(directory), name="third", reinit="finish_previous")
    seen["finish_previous starts a new run"] = third is not first and wandb.run is third
    wandb.log({"b": 1.0})
    side = wandb.init(project="again", mode="offline", dir=str(directory), name="side", reinit="create_new")
    seen["create_new leaves wandb.run alone"] = wandb.run is third and side is not third
    side.log({"c": 1.0})
    wandb.log({"b": 2.0})  # the module-level run: third
    latest = wandb.init(project="again", mode="offline", dir=str(directory), reinit="return_previous")
    seen["return_previous returns the latest run"] = latest is side
    old = wandb.init(project="again", mode="offline", dir=str(directory), reinit=False)  # deprecated spelling
    seen["False returns it too"] = old is side
    side.finish()
    wandb.finish()
    seen["no run left"] = wandb.run is None
    return seen


def test_a_second_init_follows_wandbs_reinit_in_a_script(tmp_path: Path) -> None:
    seen = {name: _second_init(wandb, tmp_path / name) for name, wandb in MODULES.items()}
    assert seen["producers.wandb"] == seen["wandb"]
    assert all(v for k, v in seen["wandb"].items() if k != "config kept")
    real = _same_runs(tmp_path / "wandb", tmp_path / "producers.wandb")
    assert [r.name for r in real] == ["first", "side", "third"]
    assert [[h["a"] for h in real[0].history]] == [[1.0, 2.0]]


NOTEBOOK = """
import sys

from IPython.core.interactiveshell import InteractiveShell

InteractiveShell.instance()  # an IPython shell, as in a notebook's kernel: what wandb's in_notebook() sees
import {module} as wandb
first = wandb.init(project="nb", mode="offline", dir=sys.argv[1], name="cell-1")
wandb.log({{"a": 1.0}})
second = wandb.init(project="nb", mode="offline", dir=sys.argv[1], name="cell-1-again")  # the cell re-run
wandb.log({{"a": 2.0}})
assert second is not first and wandb.run is second
kept = wandb.init(project="nb", mode="offline", dir=sys.argv[1], reinit="return_previous")
assert kept is second
wandb.finish()
"""


def test_a_second_init_in_a_notebook_finishes_the_first_as_wandb_does(tmp_path: Path) -> None:
    for module in MODULES:
        done = subprocess.run(
            [sys.executable, "-c", NOTEBOOK.format(module=module), str(tmp_path / module)],
            cwd=ROOT,
            env={**{k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}, "WANDB_SILENT": "true"},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, (module, done.stderr)
    real = _same_runs(tmp_path / "wandb", tmp_path / "producers.wandb")
    assert [(r.name, [h["a"] for h in r.history]) for r in real] == [("cell-1", [1.0]), ("cell-1-again", [2.0])]


def _media_lists(wandb: ModuleType, directory: Path) -> None:
    """Lists of images, whole and growing with commit=False; a run with no name."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) for _ in range(3)]
    run = wandb.init(project="media", mode="offline", dir=str(directory))
    wandb.log({"samples": [wandb.Image(f) for f in frames], "loss": 0.5})
    for n in range(1, 4):  # a list that grows over calls of one row: the last one is kept
        wandb.log({"growing": [wandb.Image(f) for f in frames[:n]]}, commit=False)
    wandb.log({"loss": 0.4})
    wandb.log({"one": [wandb.Image(frames[2])], "gray": (wandb.Image(frames[0][:, :, 0]), wandb.Image(frames[1]))})
    run.finish()


def test_lists_of_media_are_logged_as_wandb_logs_them(tmp_path: Path) -> None:
    for name, wandb in MODULES.items():
        _media_lists(wandb, tmp_path / name)
    (real,) = _same_runs(tmp_path / "wandb", tmp_path / "producers.wandb")
    assert real.name == ""  # no name given: wandb leaves the display name empty
    assert real.history[0]["samples"]["_type"] == "images/separated"
    assert real.history[0]["samples"]["count"] == 3 and real.history[1]["growing"]["count"] == 3
    files = {}
    for name in MODULES:
        found = sorted((tmp_path / name).rglob("media/**/*.*"))
        files[name] = sorted((re.sub(r"_\d+_", "_N_", p.name), p.read_bytes()) for p in found)
    assert files["producers.wandb"] == files["wandb"]  # the same PNG files, byte for byte
    assert len(files["wandb"]) == 3 + 3 + 1 + 2


QUICKSTART = """
import random
import sys

import {module} as wandb

random.seed(0)
run = wandb.init(project="my-project", dir=sys.argv[1], config={{"learning_rate": 0.02, "epochs": 10}})
offset = random.random() / 5
for epoch in range(2, run.config.epochs):
    acc = 1 - 2**-epoch - random.random() / epoch - offset
    loss = 2**-epoch + random.random() / epoch + offset
    run.log({{"acc": acc, "loss": loss}})
run.finish()
with wandb.init(project="my-project", dir=sys.argv[1]) as empty:  # a run that logs nothing
    empty.finish()
with wandb.init(project="my-project", dir=sys.argv[1], job_type="eval") as again:
    again.log({{"draw": random.random()}})
"""


def test_a_quickstart_style_script_gives_the_same_runs(tmp_path: Path) -> None:
    for module in MODULES:
        done = subprocess.run(
            [sys.executable, "-c", QUICKSTART.format(module=module), str(tmp_path / module)],
            cwd=ROOT,
            env={**{k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}, "WANDB_MODE": "offline"},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, (module, done.stderr)
    real = _same_runs(tmp_path / "wandb", tmp_path / "producers.wandb")
    assert [len(r.history) for r in real] == [8, 0, 1]


def test_the_reinit_setting_is_read_from_settings_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = our_wandb.init(project="env", mode="disabled")
    monkeypatch.setenv("WANDB_REINIT", "finish_previous")
    second = our_wandb.init(project="env", mode="disabled")
    assert second is not first and our_wandb.run is second
    third = our_wandb.init(project="env", mode="disabled", settings=real_wandb.Settings(reinit="return_previous"))
    assert third is second
    with pytest.raises(InvalidConfig, match="reinit"):
        our_wandb.init(project="env", mode="disabled", reinit="sometimes")  # type: ignore[arg-type]
    second.finish()
