"""Shared fixtures: anyio runs on asyncio (the backend MetricLogger uses)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _spool_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sinks that fail save what they missed under SPOOL_ROOT: in tests, not in the checkout."""
    import bus._route

    monkeypatch.setattr(bus._route, "SPOOL_ROOT", tmp_path_factory.mktemp("spool"))
