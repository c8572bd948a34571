"""MLflowSink: one MLflow run per origin, all tagged with one group, written through MlflowClient.

MlflowClient (not the fluent `mlflow.log_*` API, which has one global active run) names the run
in every call, so the runs of several origins are written side by side from the sink's own
thread. Without a tracking URI the sink keeps a local sqlite store (no server); MLflow 3's
`./mlruns` file store is in maintenance mode and refuses to start by default.

Every call is synchronous (`log_batch(synchronous=True)`), so a returned `write_batch` is stored
and `flush` has nothing left to do. Every write is idempotent, so the bus's retries (and a worker
restarted mid-batch) duplicate nothing: MLflow drops a metric point identical to one it has
(same name, step, millisecond and value: two such events also collapse into one point), accepts
a param set again to the same value, and an artifact written again replaces itself.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal
from urllib.parse import urlsplit

from bus import (
    Audio,
    Event,
    Histogram,
    Hparams,
    Image,
    InvalidConfig,
    Metrics,
    Scalar,
    Sink,
    Text,
    Video,
    metric_items,
)

from ._audio import encode_wav
from ._jsonl import encode_lines
from ._open_set import OpenSet
from ._png import encode_png
from ._video import encode_gif

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["GROUP_TAG", "MAX_OPEN_RUNS", "ORIGIN_TAG", "MLflowSink"]

log = logging.getLogger("metricbus")

#: Run tags that find an origin's run again when the sink reopens (a framework's next stage).
GROUP_TAG = "metricbus.group"
ORIGIN_TAG = "metricbus.origin"
#: MLflow's limits (mlflow.utils.validation): the length of a metric or param name, of a param
#: value (MLflow itself cuts longer ones), and the entities one log_batch call may carry.
MAX_NAME_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
METRICS_PER_CALL = 1000
PARAMS_PER_CALL = 100
#: The characters MLflow allows in metric and param names (Windows: no ':').
_NAME_CHARS = re.compile(r"[/\w.\- ]*" if os.name == "nt" else r"[/\w.\- :]*")
#: Runs a sink keeps RUNNING by default; another origin's run is set FINISHED to make room and
#: resumed (one `get_run` and one `update_run`) when its origin logs again.
MAX_OPEN_RUNS = 64
_BAD_NAME = f"names MLflow rejects (up to {MAX_NAME_LENGTH} letters, digits, '_-. :/', as a normalized relative path)"
_CHANGED_PARAM = "params whose value MLflow cannot change (a run's param is set once)"


@dataclass
class _Run:
    """An origin's open MLflow run and the params it holds already."""

    client: MlflowClient = field(repr=False)
    run_id: str
    params: dict[str, str]


def _finish(run: _Run) -> None:
    run.client.set_terminated(run.run_id, "FINISHED")


@dataclass
class _Writes:
    """What one batch writes into one run."""

    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)  # name, value, timestamp ms, step
    params: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # artifact path -> its text
    images: dict[str, bytes] = field(default_factory=dict)  # artifact path -> PNG bytes


# The tracking URI schemes MLflow's client resolves (a store plugin can add more: name it with
# its scheme and it passes too, if the plugin is installed in this process).
_SCHEMES = frozenset(
    {"", "file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "databricks-uc", "uc"}
)


def _check_tracking_uri(uri: object) -> None:
    """A tracking URI MLflow can use, checked at the call: a typo would otherwise surface seconds
    later in the sink host, as an unrelated-looking MLflow error."""
    if uri is None:
        return
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidConfig(f"MLflowSink: tracking_uri must be a non-empty string or None, got {uri!r}")
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0].lower()
    if len(scheme) == 1:  # a Windows drive letter: a local path
        return
    if scheme not in _SCHEMES and not _plugin_scheme(scheme):
        raise InvalidConfig(
            f"MLflowSink: tracking_uri {uri!r}: unknown scheme {parts.scheme!r} (e.g. http, https, sqlite, file)"
        )
    if scheme in ("http", "https") and not parts.netloc:
        raise InvalidConfig(f"MLflowSink: tracking_uri {uri!r} has no host (write {scheme}://host:port)")
    if scheme == "sqlite" and not uri.startswith("sqlite:///"):
        raise InvalidConfig(f"MLflowSink: tracking_uri {uri!r}: a SQLite store is sqlite:///path/to/file.db")


def _plugin_scheme(scheme: str) -> bool:
    """Does an installed MLflow plugin register this tracking scheme (entry points, no import)?"""
    from importlib.metadata import entry_points

    return any(ep.name == scheme for ep in entry_points(group="mlflow.tracking_store"))


class MLflowSink(Sink):
    """Logs every event type to MLflow: a local sqlite store, `<dir>/mlruns.db` with artifacts in
    `<dir>/artifacts`, by default (MLFLOW_TRACKING_URI is not consulted), or the tracking server
    (or any store URI) given as `tracking_uri`, with `artifact_location` for a new experiment.

    One run per origin in `experiment`, named by `origin.label` (`run_name/label` with a
    `run_name`; the default origin's run is then named `run_name` alone), all tagged
    `metricbus.group=<group>` (default: a generated name) and with `tags`. Runs are created when
    their origin first appears; a later open of the same sink, or of a sink with the same group,
    continues them. Scalars and Metrics -> metrics at the event's step and wall time; NaN is
    kept, ±inf is stored by MLflow's SQL stores as ±1.797e308 (the largest float). Hparams ->
    params (as strings; values over 6,000 characters are cut, with a warning) and its metrics at
    its step. Text -> `text/<name>/step_<step>.txt`, Histogram (MLflow has no histogram) ->
    `histograms/<name>/step_<step>.json`, the event as JsonlSink writes it (`read_jsonl` reads it
    back); the same name and step again replaces the artifact.

    Refused, counted as `rejected` with a logged reason, the rest of the batch delivered: an
    event with a name MLflow rejects, and an Hparams event that would change a param the run
    already has. Runs in a worker process by default: MLflow costs ~85 us of CPU per metric.

    At most `max_open_runs` runs are RUNNING at once, whatever the number of origins: the least
    recently written one is set FINISHED to make room and set RUNNING again, the same run, when
    its origin writes next.
    """

    isolation: ClassVar[Literal["none", "host", "process"]] = "process"
    # A ChartLayout is TensorBoard's own dashboard layout: nothing MLflow could show.
    accepts: ClassVar[tuple[type[Event], ...] | None] = (Scalar, Metrics, Histogram, Text, Hparams, Image, Audio, Video)

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        experiment: str = "metricbus",
        run_name: str | None = None,
        group: str | None = None,
        tags: dict[str, str] | None = None,
        dir: str | Path = "mlruns",
        artifact_location: str | None = None,
        max_open_runs: int = MAX_OPEN_RUNS,
    ) -> None:
        _check_tracking_uri(tracking_uri)
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.group = group or f"metricbus-{uuid.uuid4().hex[:8]}"
        if set(self.group) & set("'\"\\"):
            raise ValueError(f"group={self.group!r}: no quotes or backslashes (it is matched in an MLflow search)")
        self.tags = dict(tags or {})
        for key in self.tags:
            if key in (GROUP_TAG, ORIGIN_TAG) or not _valid_name(key):
                raise ValueError(f"tags[{key!r}]: not a tag key MLflow accepts, or one the sink sets itself")
        self.dir = Path(dir)
        self.artifact_location = artifact_location
        self._client: MlflowClient | None = None
        self._experiment_id = ""
        self._runs: OpenSet[str, _Run] = OpenSet(max_open_runs, _finish)  # open runs by origin label
        self._run_ids: dict[str, str] = {}  # every run this sink wrote, open or not, by origin label

    @property
    def output_dir(self) -> Path | None:
        return self.dir

    @property
    def name(self) -> str:
        return f"mlflow:{self.experiment}"

    async def open(self) -> None:
        try:
            from mlflow import MlflowClient
        except ImportError as exc:
            raise ImportError("MLflowSink needs mlflow: pip install 'metricbus[mlflow]'") from exc
        uri, artifacts = self.tracking_uri, self.artifact_location
        if uri is None:
            root = self.dir.resolve()
            root.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{(root / 'mlruns.db').as_posix()}"
            artifacts = artifacts or (root / "artifacts").as_uri()
        client = MlflowClient(tracking_uri=uri)
        self._experiment_id = _experiment_id(client, self.experiment, artifacts)
        self._client, self._run_ids = client, {}

    async def write_batch(self, events: Sequence[Event]) -> int:
        by_label: dict[str, list[Event]] = {}
        refused: dict[str, set[str]] = {}  # reason -> the names at fault
        truncated: set[str] = set()
        count = 0
        for event in events:
            bad = [name for name in _names(event) if not _valid_name(name)]
            if bad:
                count += 1
                refused.setdefault(_BAD_NAME, set()).update(bad)
            else:
                by_label.setdefault(event.origin.label, []).append(event)
        for label, label_events in by_label.items():  # one run open at a time: any number of origins fit the limit
            run, into = self._run(label), _Writes()
            for event in label_events:
                params, cut = _params(event)
                changed = [k for k, v in params.items() if run.params.get(k, into.params.get(k, v)) != v]
                if changed:
                    count += 1
                    refused.setdefault(_CHANGED_PARAM, set()).update(changed)
                    continue
                into.params.update(params)
                truncated.update(cut)
                _add(event, into)
            self._write(run, into)
        if refused:
            reasons = "; ".join(f"{reason}: {sorted(names)}" for reason, names in refused.items())
            log.warning("mlflow sink: %d events refused: %s", count, reasons)
        if truncated:
            log.warning("mlflow sink: param values cut to %d characters: %s", MAX_PARAM_VALUE_LENGTH, sorted(truncated))
        return count

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            self._runs.close_all()

    def _opened(self) -> MlflowClient:
        if self._client is None:
            raise RuntimeError("MLflowSink used before open() or after close()")
        return self._client

    def _run(self, label: str) -> _Run:
        """The origin's open run: resumed if this sink or an earlier open made it (found by its
        tags), else a new one. Finishes the least recently used open run if the set is full."""
        run = self._runs.get(label)
        if run is not None:
            return run
        client = self._opened()
        run_id = self._run_ids.get(label)
        if run_id is None:
            query = f"tags.`{GROUP_TAG}` = '{self.group}' and tags.`{ORIGIN_TAG}` = '{label}'"  # labels are path-safe
            oldest = ["attributes.start_time ASC"]
            found = client.search_runs([self._experiment_id], query, order_by=oldest, max_results=1)
            run_id = found[0].info.run_id if found else None
        self._runs.make_room()
        if run_id is not None:
            params = dict(client.get_run(run_id).data.params)
            client.update_run(run_id, status="RUNNING")
        else:
            tags = {**self.tags, GROUP_TAG: self.group, ORIGIN_TAG: label}
            run_id = client.create_run(self._experiment_id, tags=tags, run_name=self._run_name(label)).info.run_id
            params = {}
        run = _Run(client, run_id, params)
        self._runs.add(label, run)
        self._run_ids[label] = run_id
        return run

    def _run_name(self, label: str) -> str:
        if self.run_name is None:
            return label
        return self.run_name if label == "main" else f"{self.run_name}/{label}"

    def _write(self, run: _Run, writes: _Writes) -> None:
        from mlflow.entities import Metric, Param

        client = self._opened()
        metrics = [Metric(name, value, ms, step) for name, value, ms, step in writes.metrics]
        for i in range(0, len(metrics), METRICS_PER_CALL):
            client.log_batch(run.run_id, metrics=metrics[i : i + METRICS_PER_CALL], synchronous=True)
        params = [Param(key, value) for key, value in writes.params.items() if key not in run.params]
        for i in range(0, len(params), PARAMS_PER_CALL):
            client.log_batch(run.run_id, params=params[i : i + PARAMS_PER_CALL], synchronous=True)
        run.params.update(writes.params)
        for path, text in writes.artifacts.items():
            client.log_text(run.run_id, text, path)
        for path, png in writes.images.items():
            _log_bytes(client, run.run_id, path, png)


def _log_bytes(client: MlflowClient, run_id: str, path: str, data: bytes) -> None:
    """Store `data` as the artifact `path` (MlflowClient logs files, not bytes)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / posixpath.basename(path)
        local.write_bytes(data)
        client.log_artifact(run_id, str(local), posixpath.dirname(path))


def _experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=artifact_location)
    if experiment.lifecycle_stage != "active":
        raise RuntimeError(f"MLflow experiment {name!r} is deleted: restore it or choose another name")
    return experiment.experiment_id


def _valid_name(name: str) -> bool:
    """MLflow's rule for metric and param names; text and histogram names, used as artifact
    paths, must pass it too (no '..', no absolute path)."""
    norm = posixpath.normpath(name)
    return (
        len(name) <= MAX_NAME_LENGTH
        and _NAME_CHARS.fullmatch(name) is not None
        and norm == name
        and not norm.startswith(("..", "/"))
        and norm != "."
    )


def _names(event: Event) -> list[str]:
    """Every name the event would give MLflow."""
    match event:
        case Scalar(name=name) | Histogram(name=name) | Text(name=name) | Image(name=name):
            return [name]
        case Audio(name=name) | Video(name=name):
            return [name]
        case Metrics(values=values):
            return list(values)
        case Hparams(params=params, metrics=metrics):
            return [*params, *metrics]
    raise TypeError(f"not an event: {event!r}")


def _params(event: Event) -> tuple[dict[str, str], list[str]]:
    """An Hparams event's params as MLflow stores them, strings of at most 6,000 characters, and
    the names of those cut to fit."""
    if not isinstance(event, Hparams):
        return {}, []
    params = {key: str(value) for key, value in event.params.items()}
    cut = [key for key, value in params.items() if len(value) > MAX_PARAM_VALUE_LENGTH]
    return {key: value[:MAX_PARAM_VALUE_LENGTH] for key, value in params.items()}, cut


def _add(event: Event, writes: _Writes) -> None:
    """Add what the event writes (besides params) to its run's writes."""
    ms = int(event.wall_time * 1000)
    match event:
        case Scalar() | Metrics() | Hparams():  # an Hparams' metrics are series points here too
            items = event.metrics.items() if isinstance(event, Hparams) else metric_items(event)
            writes.metrics.extend((name, value, ms, event.step) for name, value in items)
        case Text(name=name, text=text, step=step):
            writes.artifacts[f"text/{name}/step_{step}.txt"] = text
        case Image(name=name, step=step, pixels=pixels, height=height, width=width, channels=channels):
            writes.images[f"images/{name}/step_{step}.png"] = encode_png(pixels, height, width, channels)
        case Histogram(name=name, step=step):
            writes.artifacts[f"histograms/{name}/step_{step}.json"] = encode_lines([event]).decode()
        case Audio(name=name, step=step, samples=samples, channels=channels, sample_rate=rate):
            writes.images[f"audio/{name}/step_{step}.wav"] = encode_wav(samples, channels, rate)
        case Video(name=name, step=step):
            writes.images[f"video/{name}/step_{step}.gif"] = encode_gif(event)
