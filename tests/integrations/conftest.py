"""Shared by the integration tests: offline everything, and checks that apply to every adapter."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest

# Models are built from configs; nothing may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def offline_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def _import_error_without(blocked: str, name: str) -> str:
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "try:\n"
        f"    from producers.integrations import {name}\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def import_error_without() -> Callable[[str, str], str]:
    """f(blocked, name): the ImportError message of `from producers.integrations import <name>`
    in a fresh interpreter where the package `blocked` cannot be imported ("" if none)."""
    return _import_error_without


def metricbus_threads() -> list[str]:
    """Background threads of MetricLoggers still running (a closed logger leaves none)."""
    return [t.name for t in threading.enumerate() if t.name == "metricbus" and t.is_alive()]


@pytest.fixture
def no_leftover_loggers() -> Callable[[], None]:
    """Call the returned function at the end of a test: every logger an adapter built is closed."""
    before = len(metricbus_threads())

    def check() -> None:
        assert len(metricbus_threads()) == before

    return check
