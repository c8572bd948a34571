"""Every ```python block in README.md runs as written, in a temporary directory.

Blocks fenced as ```py are signatures, not programs, and are skipped.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import anyio
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)
    main = namespace.get("main")
    if inspect.iscoroutinefunction(main) and "anyio.run(main)" not in code:
        anyio.run(main)  # a snippet that only defines its async entry point
