"""Plan files: sinks and a metric callback declared by `template` + `settings`, as in OpenFL's
plan.yaml (`log_metric_callback: template: module.func`), in TOML (or YAML with PyYAML):

    [logger]                              # MetricLogger options (optional)
    shutdown_timeout = 10.0

    [[sinks]]
    template = "sinks.CsvSink"            # module.Name of a Sink class (or a factory returning one)
    settings = { path = "runs/plan/metrics.csv" }
    options = { when_full = "drop_oldest" }   # add_sink options (optional)

    [log_metric_callback]                 # fn(node_name, task_name, metric_name, metric, round_number)
    template = "my_project.metrics.write_metric"

    [[producers]]                         # async fn(bus) run on the bus, e.g. the Redis bridge
    template = "producers.RedisSource"
    settings = { url = "redis://127.0.0.1:6379/0", stream = "metricbus" }

    [ranks]                               # `metricbus aggregate`: reduce each job's ranks (bus.RankReduce)
    world_size = 4
    reduce = "mean"                       # every metric not named below
    metrics = { "train/tokens" = "sum", "time/*" = "max" }
    deadline = 10.0                       # seconds a step waits for its missing ranks

`load_plan(path)` imports and builds everything and raises `InvalidConfig` naming the key at
fault; `plan.logger()` gives a ready MetricLogger with every sink and the callback attached.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bus import InvalidConfig, RankReduce, RateLimit, RetryPolicy, Sink, SinkConfig

from ._frequency import LogFrequency
from ._logger import MetricLogger

__all__ = ["Plan", "load_plan", "rank_reduce"]

_TOP_LEVEL = {"logger", "sinks", "log_metric_callback", "producers", "ranks"}
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
# add_sink's keyword options a plan can set (a `retry` table becomes a RetryPolicy).
_SINK_OPTIONS = {
    "name",
    "capacity",
    "max_batch",
    "max_interval",
    "when_full",
    "retry",
    "isolate",
    "call_timeout",
    "rate",
    "spool_dir",
}
_OPENFL_CALL = ("node", "task", "metric", 0.0, 0)  # a sample call with OpenFL's five arguments


@dataclass(frozen=True)
class Plan:
    """What a plan file declares: logger options, sinks with their add_sink options, a callback."""

    logger_settings: dict[str, Any] = field(default_factory=dict)
    sinks: list[tuple[Sink, dict[str, Any]]] = field(default_factory=list)
    callback: Callable[..., Any] | None = None
    producers: list[Callable[..., Any]] = field(default_factory=list)  # async fn(bus), e.g. a RedisSource
    ranks: RankReduce | None = None  # how `metricbus aggregate` reduces each job's ranks

    def logger(self) -> MetricLogger:
        """A MetricLogger with every sink (and the callback, as a CallbackSink) attached."""
        from sinks import CallbackSink

        log = MetricLogger(**self.logger_settings)
        for sink, options in self.sinks:
            log.add_sink(sink, **options)
        if self.callback is not None:
            log.add_sink(CallbackSink(self.callback))
        for producer in self.producers:
            log.add_producer(producer)
        return log


def load_plan(path: str | Path) -> Plan:
    """Read, import and check a plan file (.toml, or .yaml/.yml with PyYAML installed).

    Raises InvalidConfig naming the key at fault: an unknown section or option, a template whose
    module or attribute is missing, one that does not make a Sink (or is not callable), settings
    its constructor refuses, or add_sink options out of range.
    """
    path = Path(path)
    data = _read(path)
    unknown = set(data) - _TOP_LEVEL
    if unknown:
        raise InvalidConfig(f"{path}: unknown sections {sorted(unknown)}; expected some of {sorted(_TOP_LEVEL)}")
    sinks = data.get("sinks", [])
    if not isinstance(sinks, list):
        raise InvalidConfig("sinks must be an array of tables ([[sinks]])")
    return Plan(
        logger_settings=_logger_settings(data),
        sinks=[_sink(entry, f"sinks[{i}]") for i, entry in enumerate(sinks)],
        callback=_callback(data.get("log_metric_callback")),
        producers=_producers(data.get("producers", [])),
        ranks=rank_reduce(data["ranks"], "ranks") if "ranks" in data else None,
    )


def rank_reduce(settings: object, key: str) -> RankReduce:
    """A `bus.RankReduce` from a table of its fields; InvalidConfig naming `key` if it is not one."""
    if isinstance(settings, RankReduce):
        return settings
    if not isinstance(settings, Mapping):
        raise InvalidConfig(f"{key} must be a table of RankReduce settings, got {settings!r}")
    try:
        return RankReduce(**settings)
    except (TypeError, ValueError) as exc:
        raise InvalidConfig(f"{key}: {exc}") from exc


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


# ---- reading ----


def _read(path: Path) -> dict[str, Any]:
    if path.suffix in (".yaml", ".yml"):
        return _read_yaml(path)
    tomllib = _tomllib()
    try:
        with open(path, "rb") as f:
            data: dict[str, Any] = tomllib.load(f)
    except OSError as exc:
        raise InvalidConfig(f"cannot read plan {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidConfig(f"{path} is not valid TOML: {exc}") from exc
    return data


def _tomllib() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:  # pragma: no cover - Python 3.10
        import tomli
    except ImportError:  # pragma: no cover - Python 3.10 without tomli
        raise ImportError("TOML plan files on Python 3.10 need tomli: pip install tomli") from None
    return tomli  # pragma: no cover


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        import yaml
    except ImportError:
        raise ImportError(
            f"{path} is YAML, which needs PyYAML: pip install pyyaml (or write the plan in TOML)"
        ) from None
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise InvalidConfig(f"cannot read plan {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise InvalidConfig(f"{path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidConfig(f"{path}: a plan is a mapping of sections, got {type(data).__name__}")
    return data


# ---- checking ----


def _table(entry: Mapping[str, Any], key: str, name: str) -> dict[str, Any]:
    value = entry.get(name, {})
    if not isinstance(value, Mapping):
        raise InvalidConfig(f"{key}.{name} must be a table, got {value!r}")
    return dict(value)


def _logger_settings(data: Mapping[str, Any]) -> dict[str, Any]:
    settings = _table(data, "plan", "logger")
    unknown = set(settings) - _LOGGER_KEYS
    if unknown:
        raise InvalidConfig(f"logger: unknown options {sorted(unknown)}; expected some of {sorted(_LOGGER_KEYS)}")
    if "log_freq" in settings:
        try:
            LogFrequency.parse(settings["log_freq"])
        except InvalidConfig as exc:
            raise InvalidConfig(f"logger.log_freq: {exc}") from exc
    return settings


def _sink(entry: object, key: str) -> tuple[Sink, dict[str, Any]]:
    entry, template, factory = _template(entry, key, extra=("options",))
    if not callable(factory):
        raise InvalidConfig(f"{key}.template: {template} is not a class or function")
    settings = _table(entry, key, "settings")
    try:
        sink = factory(**settings)
    except (TypeError, ValueError) as exc:  # InvalidConfig is a ValueError too
        raise InvalidConfig(f"{key}.settings: {template}(**settings) failed: {exc}") from exc
    if not isinstance(sink, Sink):
        raise InvalidConfig(f"{key}.template: {template} made a {type(sink).__name__}, not a Sink")
    return sink, _sink_options(entry, key)


def _sink_options(entry: Mapping[str, Any], key: str) -> dict[str, Any]:
    options = _table(entry, key, "options")
    unknown = set(options) - _SINK_OPTIONS
    if unknown:
        raise InvalidConfig(f"{key}.options: unknown {sorted(unknown)}; expected some of {sorted(_SINK_OPTIONS)}")
    try:
        if "retry" in options:
            retry = options["retry"]
            if not isinstance(retry, Mapping):
                raise InvalidConfig(f"retry must be a table, got {retry!r}")
            options["retry"] = RetryPolicy(**retry)
        rate = options.get("rate")
        if isinstance(rate, Mapping):  # rate = { per_second = 10, reduce = "mean" }; or "none"
            options["rate"] = RateLimit(**rate)
        elif rate not in (None, "none"):
            raise InvalidConfig(f"rate must be a table or 'none', got {rate!r}")
        SinkConfig(**{k: v for k, v in options.items() if k in SinkConfig.__struct_fields__ and k != "rate"})
    except (TypeError, ValueError) as exc:
        raise InvalidConfig(f"{key}.options: {exc}") from exc
    if options.get("isolate", "none") not in ("none", "process"):
        raise InvalidConfig(f"{key}.options: isolate must be 'none' or 'process', got {options['isolate']!r}")
    return options


def _template(entry: object, key: str, *, extra: tuple[str, ...] = ()) -> tuple[Mapping[str, Any], object, Any]:
    """A `{template = "module.Name", settings = {...}}` table (and the `extra` keys it may have):
    the table, its template and what the template names."""
    if not isinstance(entry, Mapping):
        raise InvalidConfig(f"{key} must be a table with template = ..., got {entry!r}")
    allowed = ("template", "settings", *extra)
    unknown = set(entry) - set(allowed)
    if unknown:
        raise InvalidConfig(f"{key}: unknown keys {sorted(unknown)}; expected {', '.join(allowed)}")
    template = entry.get("template")
    return entry, template, resolve(template, f"{key}.template")


def _callback(entry: object) -> Callable[..., Any] | None:
    """OpenFL's log_metric_callback: a function taking (node_name, task_name, metric_name, metric,
    round_number), plus any `settings` as keyword arguments."""
    key = "log_metric_callback"
    if entry is None:
        return None
    entry, template, fn = _template(entry, key)
    if not callable(fn):
        raise InvalidConfig(f"{key}.template: {template} is not callable")
    settings = _table(entry, key, "settings")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: they are checked at the first call
        signature = None
    if signature is not None:
        try:
            signature.bind(*_OPENFL_CALL, **settings)
        except TypeError as exc:
            raise InvalidConfig(
                f"{key}: {template} cannot be called as fn(node_name, task_name, metric_name, metric, "
                f"round_number{', **settings' if settings else ''}): {exc}"
            ) from exc
    return functools.partial(fn, **settings) if settings else fn


def _producers(entries: object) -> list[Callable[..., Any]]:
    """`[[producers]]`: each a template (a class or factory) built with its settings into an
    `async fn(bus)`, such as `producers.RedisSource`."""
    if not isinstance(entries, list):
        raise InvalidConfig("producers must be an array of tables ([[producers]])")
    made = []
    for i, entry in enumerate(entries):
        key = f"producers[{i}]"
        entry, template, factory = _template(entry, key)
        if not callable(factory):
            raise InvalidConfig(f"{key}.template: {template} is not a class or function")
        try:
            producer = factory(**_table(entry, key, "settings"))
        except (TypeError, ValueError) as exc:
            raise InvalidConfig(f"{key}.settings: {template}(**settings) failed: {exc}") from exc
        if not callable(producer):
            raise InvalidConfig(f"{key}.template: {template} made a {type(producer).__name__}, not an async fn(bus)")
        made.append(producer)
    return made
