"""Every ```python block in docs/jobs.md runs as written, in a temporary directory (```py blocks
are fragments: the torchrun script's tested copy is tests/ranks_child.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "jobs.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)


def test_the_page_has_examples() -> None:
    assert BLOCKS


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_jobs_example_runs(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(PAGE), "exec"), {"__name__": "jobs_example"})


def test_the_documented_plan_table_loads(tmp_path: Path) -> None:
    from producers._plan import load_plan

    toml = next(b for b in re.findall(r"```toml\n(.*?)```", PAGE.read_text(), flags=re.S) if "[ranks]" in b)
    plan = tmp_path / "plan.toml"
    plan.write_text(toml.replace('"runs/job"', f'"{(tmp_path / "runs").as_posix()}"'))
    ranks = load_plan(plan).ranks
    assert ranks is not None and ranks.world_size == 4 and ranks.reduction("time/step_s") == "max"
    assert ranks.reduction("debug/x") == "none" and ranks.reduction("train/loss") == "mean"
