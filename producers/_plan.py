"""Plan files: sinks and a metric callback declared by `template` + `settings`, as in OpenFL's
plan.yaml (`log_metric_callback: template: module.func`), here in TOML:

    [logger]                              # MetricLogger options (optional)
    shutdown_timeout = 10.0

    [[sinks]]
    template = "sinks.CsvSink"            # module.Name of a Sink class (or factory)
    settings = { path = "runs/plan/metrics.csv" }
    options = { when_full = "drop_oldest" }   # add_sink options (optional)

    [log_metric_callback]                 # fn(node_name, task_name, metric_name, metric, round_number)
    template = "my_project.metrics.write_metric"

`load_plan(path)` checks everything (imports, types, settings) and raises `InvalidConfig` naming
the key at fault; `plan.logger()` builds a ready MetricLogger.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bus import InvalidConfig, Sink, SinkConfig

from ._logger import MetricLogger

__all__ = ["Plan", "load_plan"]

_TOP_LEVEL = {"logger", "sinks", "log_metric_callback"}
_LOGGER_KEYS = {
    "shutdown_timeout",
    "raise_on_loss",
    "pending_limit",
    "block_timeout",
    "poll_interval",
    "use_uvloop",
    "handle_sigterm",
    "log_freq",
}


@dataclass(frozen=True)
class Plan:
    """What a plan file declares: logger options, sinks with their add_sink options, a callback."""

    logger_settings: dict[str, Any] = field(default_factory=dict)
    sinks: list[tuple[Sink, dict[str, Any]]] = field(default_factory=list)
    callback: Callable[..., Any] | None = None

    def logger(self) -> MetricLogger:
        """A MetricLogger with every sink (and the callback, as a CallbackSink) attached."""
        from sinks import CallbackSink

        log = MetricLogger(**self.logger_settings)
        for sink, options in self.sinks:
            log.add_sink(sink, **options)
        if self.callback is not None:
            log.add_sink(CallbackSink(self.callback))
        return log


def _read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise InvalidConfig(f"cannot read plan {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidConfig(f"{path} is not valid TOML: {exc}") from exc


def resolve(template: object, key: str) -> Any:
    """The object named by 'module.Name' (the module may be dotted: 'a.b.Name')."""
    if not isinstance(template, str) or "." not in template:
        raise InvalidConfig(f"{key}: template must be a 'module.Name' string, got {template!r}")
    module_name, _, attr = template.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidConfig(f"{key}: cannot import module {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise InvalidConfig(f"{key}: module {module_name!r} has no attribute {attr!r}") from None


def _settings(entry: Mapping[str, Any], key: str, name: str = "settings") -> dict[str, Any]:
    value = entry.get(name, {})
    if not isinstance(value, Mapping):
        raise InvalidConfig(f"{key}.{name} must be a table, got {value!r}")
    return dict(value)


def _sink(entry: object, key: str) -> tuple[Sink, dict[str, Any]]:
    if not isinstance(entry, Mapping):
        raise InvalidConfig(f"{key} must be a table with template = ..., got {entry!r}")
    unknown = set(entry) - {"template", "settings", "options"}
    if unknown:
        raise InvalidConfig(f"{key}: unknown keys {sorted(unknown)}")
    factory = resolve(entry.get("template"), f"{key}.template")
    settings = _settings(entry, key)
    try:
        sink = factory(**settings)
    except (TypeError, ValueError) as exc:
        raise InvalidConfig(f"{key}.settings: {entry['template']}(**settings) failed: {exc}") from exc
    if not isinstance(sink, Sink):
        raise InvalidConfig(f"{key}.template: {entry['template']} made a {type(sink).__name__}, not a Sink")
    options = _settings(entry, key, "options")
    try:
        SinkConfig(**{k: v for k, v in options.items() if k in SinkConfig.__struct_fields__})
    except (TypeError, ValueError) as exc:
        raise InvalidConfig(f"{key}.options: {exc}") from exc
    return sink, options


def load_plan(path: str | Path) -> Plan:
    """Read and check a plan file; raises InvalidConfig naming the key at fault."""
    data = _read_toml(Path(path))
    unknown = set(data) - _TOP_LEVEL
    if unknown:
        raise InvalidConfig(f"{path}: unknown sections {sorted(unknown)}; expected {sorted(_TOP_LEVEL)}")
    logger_settings = _settings(data, "plan", "logger")
    unknown = set(logger_settings) - _LOGGER_KEYS
    if unknown:
        raise InvalidConfig(f"logger: unknown options {sorted(unknown)}; expected some of {sorted(_LOGGER_KEYS)}")
    sinks = data.get("sinks", [])
    if not isinstance(sinks, list):
        raise InvalidConfig("sinks must be an array of tables ([[sinks]])")
    built = [_sink(entry, f"sinks[{i}]") for i, entry in enumerate(sinks)]
    callback = None
    entry = data.get("log_metric_callback")
    if entry is not None:
        if not isinstance(entry, Mapping):
            raise InvalidConfig("log_metric_callback must be a table with template = ...")
        callback = resolve(entry.get("template"), "log_metric_callback.template")
        if not callable(callback):
            raise InvalidConfig(f"log_metric_callback.template: {entry['template']} is not callable")
        settings = _settings(entry, "log_metric_callback")
        if settings:
            callback = functools.partial(callback, **settings)
    return Plan(logger_settings=logger_settings, sinks=built, callback=callback)
