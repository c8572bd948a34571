"""OpenFL: a callback with OpenFL's exact signature publishes with origin = the node as a site, context = task
and round; collaborator names become valid origins; a plan-built logger can stand behind it."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bus import Context, InvalidEvent, Origin, Scalar
from producers import MetricLogger
from producers._plan import load_plan, resolve
from producers.integrations import openfl_callback
from producers.integrations._openfl import origin_part
from sinks import CsvSink, MemorySink


def test_the_callback_publishes_node_task_and_round() -> None:
    sink = MemorySink()
    with MetricLogger(sinks=[sink]) as log:
        write_metric = openfl_callback(log)
        write_metric("collaborator one", "aggregated_model_validation", "acc", np.array([0.81]), 3)
        write_metric("col2", "train", "loss", np.float32(0.25), 4)
        write_metric("col2", "", "loss", np.array(0.5), 5)
    first, second, third = sink.events
    assert isinstance(first, Scalar) and isinstance(second, Scalar) and isinstance(third, Scalar)
    assert (first.origin.site, first.name, first.value, first.step) == ("collaborator_one", "acc", 0.81, 3)
    assert first.context == Context(task="aggregated_model_validation", round=3)
    assert (second.origin, second.value, second.context) == (Origin(site="col2"), 0.25, Context(task="train", round=4))
    assert third.context == Context(round=5) and third.value == 0.5


@pytest.mark.parametrize(
    ("name", "part"),
    [
        ("col-1.site_a", "col-1.site_a"),
        ("collaborator one", "collaborator_one"),
        ("../etc/passwd", ".._etc_passwd"),
        ("ünï/cødé", "_n__c_d_"),
        ("", "_"),
        ("..", "_"),
        ("x" * 300, "x" * 128),
    ],
)
def test_node_names_become_valid_origin_parts(name: str, part: str) -> None:
    assert origin_part(name) == part


def test_a_metric_that_is_not_one_number_fails_at_the_call() -> None:
    with MetricLogger(sinks=[MemorySink()]) as log, pytest.raises(InvalidEvent, match="value"):
        openfl_callback(log)("col1", "train", "loss", np.array([0.1, 0.2]), 1)


def test_openfl_plan_yaml_points_at_a_callback_backed_by_a_metricbus_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workspace's src/mnist_utils.py defines the callback in one line; OpenFL imports it by
    its plan.yaml `template` (as `resolve` does) and calls it on the aggregator."""
    (tmp_path / "metricbus.toml").write_text(
        f'[[sinks]]\ntemplate = "sinks.CsvSink"\nsettings = {{ path = "{tmp_path / "metrics.csv"}" }}\n'
    )
    (tmp_path / "mnist_utils.py").write_text(
        textwrap.dedent(
            f"""
            from producers._plan import load_plan
            from producers.integrations import openfl_callback

            logger = load_plan({str(tmp_path / "metricbus.toml")!r}).logger()
            callback_name = openfl_callback(logger)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    callback = resolve("mnist_utils.callback_name", "aggregator.settings.log_metric_callback.template")
    for rnd in range(3):
        for node in ("env_one", "env_two"):
            callback(node, "train", "loss", np.array([1.0 / (rnd + 1)]), rnd)
    import mnist_utils  # type: ignore[import-not-found]

    mnist_utils.logger.close()
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["origin"], r["task"], r["round"], r["step"], float(r["value"])) for r in rows] == [
        (node, "train", str(rnd), str(rnd), 1.0 / (rnd + 1)) for rnd in range(3) for node in ("env_one", "env_two")
    ]


def test_a_plan_callback_receives_what_the_openfl_callback_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ends of OpenFL's signature: a producer (openfl_callback) and a consumer (the plan's
    log_metric_callback, run by a CallbackSink off the training thread)."""
    (tmp_path / "my_callbacks.py").write_text(
        "calls = []\ndef write_metric(node_name, task_name, metric_name, metric, round_number, prefix=''):\n"
        "    calls.append((prefix + node_name, task_name, metric_name, metric, round_number))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text(
        f"""
[[sinks]]
template = "sinks.CsvSink"
settings = {{ path = "{tmp_path / "m.csv"}", layout = "wide" }}

[log_metric_callback]
template = "my_callbacks.write_metric"
settings = {{ prefix = "node:" }}
"""
    )
    plan = load_plan(plan_file)
    assert isinstance(plan.sinks[0][0], CsvSink)
    with plan.logger() as log:
        openfl_callback(log)("col1", "train", "loss", 0.5, 1)
    import my_callbacks  # type: ignore[import-not-found]

    assert my_callbacks.calls == [("node:col1", "train", "loss", 0.5, 1)]
    assert "loss" in (tmp_path / "m.csv").read_text()
