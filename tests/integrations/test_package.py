"""The integrations package: a curated surface, and no framework imported until its adapter is."""

from __future__ import annotations

import subprocess
import sys

import producers.integrations as integrations

FRAMEWORKS = ["lightning", "transformers", "accelerate", "pytorch_accelerated", "torch"]


def test_the_public_names() -> None:
    assert sorted(integrations.__all__) == [
        "EvaluatorCallback",
        "ItwinaiLogger",
        "MetricBusCallback",
        "MetricBusLogMetricsCallback",
        "MetricBusLogger",
        "MetricBusTracker",
        "NVFlareWriter",
        "SimpleLossLoggerCallback",
        "WandbCallback",
        "openfl_callback",
    ]


def test_framework_free_adapters_import_no_framework() -> None:
    code = (
        "import sys\n"
        "from producers.integrations import ItwinaiLogger, NVFlareWriter, openfl_callback\n"
        "from producers.integrations import EvaluatorCallback, SimpleLossLoggerCallback, WandbCallback\n"
        "from producers._plan import load_plan\n"
        f"print([m for m in {FRAMEWORKS!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
