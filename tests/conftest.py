"""Shared fixtures: anyio runs on asyncio (the backend MetricLogger uses)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
