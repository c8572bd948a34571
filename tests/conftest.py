"""Shared fixtures: anyio runs on asyncio (the backend MetricLogger uses).

`METRICBUS_TEST_HOGS=N` (`make test-loaded`) runs the whole session beside N CPU-bound processes,
as a busy CI machine would: every test must hold there too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _cpu_hogs() -> Iterator[None]:
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(int(os.environ.get("METRICBUS_TEST_HOGS", "0")))
    ]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _spool_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sinks with no output folder of their own keep their spool in the user's data directory:
    in tests, a temporary one (child processes inherit it), never the real home."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("data")))
