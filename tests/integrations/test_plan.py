"""Plan files: sinks and a metric callback by template + settings (TOML, or YAML), checked at
load time; every mistake is an InvalidConfig naming the key at fault."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bus import InvalidConfig, RetryPolicy
from producers._plan import load_plan
from sinks import CallbackSink, CsvSink, JsonlSink, MemorySink, read_jsonl


def _plan(tmp_path: Path, body: str, name: str = "plan.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def test_a_plan_builds_a_ready_logger_with_its_sinks_and_options(tmp_path: Path) -> None:
    plan = load_plan(
        _plan(
            tmp_path,
            f"""
            [logger]
            shutdown_timeout = 5.0
            log_freq = 2

            [[sinks]]
            template = "sinks.JsonlSink"
            settings = {{ path = "{tmp_path / "e.jsonl"}" }}
            options = {{ name = "events", when_full = "drop_oldest", capacity = 500, retry = {{ max_attempts = 2 }} }}

            [[sinks]]
            template = "sinks.MemorySink"
            """,
        )
    )
    (jsonl, options), (memory, _) = plan.sinks
    assert isinstance(jsonl, JsonlSink) and isinstance(memory, MemorySink)
    assert options["retry"] == RetryPolicy(max_attempts=2) and options["capacity"] == 500
    with plan.logger() as log:
        for step in range(5):
            log.scalar("loss", 1.0 / (step + 1), step=step)
        assert set(log.stats()) == {"events", "memory"}
    assert [e.step for e in read_jsonl(tmp_path / "e.jsonl")] == [0, 2, 4]  # log_freq = 2
    assert memory.closed


def test_yaml_plans_read_like_openfl_plan_yaml(tmp_path: Path) -> None:
    plan = load_plan(
        _plan(
            tmp_path,
            f"""
            sinks:
              - template: sinks.CsvSink
                settings:
                  path: {tmp_path / "m.csv"}
                  layout: wide
            log_metric_callback:
              template: builtins.print
            """,
            name="plan.yaml",
        )
    )
    assert isinstance(plan.sinks[0][0], CsvSink) and plan.callback is print
    logger = plan.logger()
    assert any(name.startswith("callback:") for name in logger.stats())
    logger.close()


def test_a_sink_template_may_be_a_factory_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_sinks.py").write_text(
        "from sinks import CallbackSink\n"
        "def printer(prefix):\n"
        "    return CallbackSink(lambda *call: print(prefix, *call))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    plan = load_plan(_plan(tmp_path, '[[sinks]]\ntemplate = "my_sinks.printer"\nsettings = { prefix = ">" }'))
    assert isinstance(plan.sinks[0][0], CallbackSink)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[sinks]]\ntemplate = "no_such_module.Sink"', r"sinks\[0\]\.template: cannot import module 'no_such_module'"),
        ('[[sinks]]\ntemplate = "sinks.NoSuchSink"', r"sinks\[0\]\.template: module 'sinks' has no attribute"),
        ('[[sinks]]\ntemplate = "collections.OrderedDict"', r"sinks\[0\]\.template: .* not a Sink"),
        ('[[sinks]]\ntemplate = "math.pi"', r"sinks\[0\]\.template: math\.pi is not a class or function"),
        ('[[sinks]]\ntemplate = "CsvSink"', r"sinks\[0\]\.template: template must be a 'module\.Name'"),
        ("[[sinks]]\nsettings = {}", r"sinks\[0\]\.template: template must be"),
        ('[[sinks]]\ntemplate = "sinks.CsvSink"\nsettings = { nope = 1 }', r"sinks\[0\]\.settings: .*failed.*nope"),
        (
            '[[sinks]]\ntemplate = "sinks.CsvSink"\nsettings = { path = "m.csv", layout = "tall" }',
            r"sinks\[0\]\.settings: .*layout",
        ),
        ('[[sinks]]\ntemplate = "sinks.MemorySink"\nsettings = 3', r"sinks\[0\]\.settings must be a table"),
        ('[[sinks]]\ntemplate = "sinks.MemorySink"\noptions = { when_full = "explode" }', r"sinks\[0\]\.options"),
        ('[[sinks]]\ntemplate = "sinks.MemorySink"\noptions = { when_ful = "block" }', r"sinks\[0\]\.options: unknown"),
        ('[[sinks]]\ntemplate = "sinks.MemorySink"\noptions = { retry = { tries = 3 } }', r"sinks\[0\]\.options"),
        ('[[sinks]]\ntemplate = "sinks.MemorySink"\noptions = { isolate = "thread" }', r"sinks\[0\]\.options: isolate"),
        ('[[sinks]]\ntemplate = "sinks.MemorySink"\nextra = 1', r"sinks\[0\]: unknown keys \['extra'\]"),
        ('[[sinks]]\ntemplate = "sinks.MemorySink"\n[[sinks]]\ntemplate = "sinks.Nope"', r"sinks\[1\]\.template"),
        ('sinks = "sinks.CsvSink"', r"sinks must be an array of tables"),
        ('[log_metric_callback]\ntemplate = "math.pi"', r"log_metric_callback\.template: math\.pi is not callable"),
        ('[log_metric_callback]\ntemplate = "no_such.fn"', r"log_metric_callback\.template: cannot import"),
        ('[log_metric_callback]\ntemplate = "math.sqrt"', r"log_metric_callback: math\.sqrt cannot be called as fn"),
        (
            '[log_metric_callback]\ntemplate = "sinks.metric_calls"\nsettings = { colour = "red" }',
            r"log_metric_callback: sinks\.metric_calls cannot be called as fn\(.*\*\*settings\)",
        ),
        ("[logger]\nspeed = 11", r"logger: unknown options \['speed'\]"),
        ('[logger]\nlog_freq = "hourly"', r"logger\.log_freq"),
        ("[loggers]\n", r"unknown sections \['loggers'\]"),
        ("this is = = not toml", r"not valid TOML"),
    ],
)
def test_bad_plans_name_the_key_at_fault(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(InvalidConfig, match=message):
        load_plan(_plan(tmp_path, body))


def test_bad_yaml_and_missing_files_are_invalid_configs(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig, match="not valid YAML"):
        load_plan(_plan(tmp_path, "sinks: [unclosed", name="p.yaml"))
    with pytest.raises(InvalidConfig, match="a plan is a mapping"):
        load_plan(_plan(tmp_path, "- just\n- a list\n", name="p.yml"))
    with pytest.raises(InvalidConfig, match="cannot read plan"):
        load_plan(tmp_path / "missing.toml")
