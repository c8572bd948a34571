"""The packages stay light and their public surface is curated."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

HEAVY = ["wandb", "tensorboardX", "tensorboard", "torch", "numpy", "rich", "psutil"]


def test_importing_bus_sinks_and_producers_pulls_in_no_heavy_library() -> None:
    code = f"import sys, bus, sinks, producers; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("package", ["bus", "sinks", "producers", "producers.integrations"])
def test_every_public_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    missing = []
    for name in module.__all__:
        try:
            getattr(module, name)
        except (AttributeError, ImportError):
            missing.append(name)
    assert missing == []
