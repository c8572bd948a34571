"""Every ```python block of docs/notes/integrations.md runs as written, in a temporary directory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

NOTES = Path(__file__).resolve().parents[2] / "docs" / "notes" / "integrations.md"
BLOCKS = re.findall(r"```python\n(.*?)```", NOTES.read_text(), flags=re.S)


def test_the_notes_have_a_runnable_section_per_integration() -> None:
    code = "\n".join(BLOCKS)
    adapters = (
        "MetricBusLogger",
        "MetricBusCallback",
        "MetricBusTracker",
        "MetricBusLogMetricsCallback",
        "openfl_callback",
    )
    for adapter in adapters:
        assert adapter in code
    assert "NVFlareWriter" in code and "ItwinaiLogger" in code


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_notes_example_runs(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    exec(compile(code, str(NOTES), "exec"), {"__name__": "notes_example"})
