"""PrometheusSink: the latest value of every scalar, served as Prometheus / OpenMetrics text.

The sink runs in the sink host (its default isolation), so the HTTP server and every scrape cost
the training process nothing. It listens on 127.0.0.1 unless `host` names another interface.

What a scrape shows, per origin (labels `site`, `node`, `rank`; "" where the origin has none):

    <name>                                   the latest value of each scalar / Metrics value
    metricbus_step                           the latest step the origin logged (the pipeline's
    metricbus_last_logged_timestamp_seconds    own `metricbus/...` samples aside), and its wall time
    metricbus_sink_queue_events              the pipeline's own health, from PipelineMetrics
    metricbus_sink_lag_seconds                 (`metricbus/<sink>/<series>` events), with the
    metricbus_sink_dropped_events              sink's label as label `sink`
    metricbus_sink_spooled_bytes
    metricbus_sink_down
    metricbus_prometheus_series              series this endpoint holds
    metricbus_prometheus_refused_total       values refused, by reason ("max_series", "collision")

Names are made Prometheus names: every character outside `a-z A-Z 0-9 _` becomes `_`, a leading
digit gets a `_` before it, and `namespace` (if given) is put in front: "train/loss" is
`train_loss`. Names are only known when their events arrive, so a collision (two names, one
Prometheus name: "a/b" and "a.b", or a name that would take one of metricbus's own above) is
found when the second name first reaches the sink: the first name keeps the series, the second
one's values are refused. What is refused (a collision, or a new series past `max_series`) is
counted on the endpoint and returned to the bus as "rejected" (an event with any value refused
counts once), with a warning per name. Values of a series already held are always updated, so
`max_series` bounds the scrape whatever the number of origins.
"""

from __future__ import annotations

import errno
import logging
import re
import socket
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from bus import Event, InvalidConfig, Metrics, Origin, Scalar, Sink

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["OWN_FAMILIES", "PIPELINE_FAMILIES", "PrometheusSink", "prometheus_name"]

log = logging.getLogger("metricbus")

_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")
_NAMESPACE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
ORIGIN_LABELS = ("site", "node", "rank")
#: PipelineMetrics' series (`metricbus/<sink>/<series>`) and the family each is served as.
PIPELINE_FAMILIES = {
    "queue": "metricbus_sink_queue_events",
    "lag_s": "metricbus_sink_lag_seconds",
    "dropped": "metricbus_sink_dropped_events",
    "spooled_bytes": "metricbus_sink_spooled_bytes",
    "down": "metricbus_sink_down",
}
_PIPELINE = re.compile(r"metricbus/([A-Za-z0-9_.\-]+)/(" + "|".join(PIPELINE_FAMILIES) + ")")
_OWN_PREFIX = "metricbus/"  # PipelineMetrics' names (and `metricbus aggregate`'s extra series)
_STEP = "metricbus_step"
_WALL = "metricbus_last_logged_timestamp_seconds"
_HELD = "metricbus_prometheus_series"
_REFUSED = "metricbus_prometheus_refused"
#: Names metricbus serves itself; a metric whose Prometheus name is one of them is a collision.
OWN_FAMILIES = (_STEP, _WALL, _HELD, _REFUSED, _REFUSED + "_total", *PIPELINE_FAMILIES.values())
Labels = tuple[str, ...]


def prometheus_name(name: str, namespace: str = "") -> str:
    """`name` as a Prometheus metric name (see the module docstring)."""
    out = _UNSAFE.sub("_", name)
    if namespace:
        return f"{namespace}_{out}"
    return "_" + out if out[:1].isdigit() else out


class _Family:
    """One metric family: the latest value per label set."""

    __slots__ = ("help", "label_names", "name", "samples")

    def __init__(self, name: str, help_: str, label_names: Labels = ORIGIN_LABELS) -> None:
        self.name = name
        self.help = help_
        self.label_names = label_names
        self.samples: dict[Labels, float] = {}


class PrometheusSink(Sink):
    """Serves the latest value of every scalar on http://host:port/metrics (see the module
    docstring). `port` must be free when the sink is made (InvalidConfig otherwise); `host`
    is 127.0.0.1 unless you ask for another interface ("0.0.0.0": every one); `max_series`
    bounds the series served (every origin's values, steps and health together)."""

    accepts = (Scalar, Metrics)
    isolation: ClassVar[Literal["none", "host", "process"]] = "host"

    def __init__(self, port: int, host: str = "127.0.0.1", *, max_series: int = 10_000, namespace: str = "") -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise InvalidConfig(f"port must be an int from 1 to 65535, got {port!r}")
        if not isinstance(host, str) or not host:
            raise InvalidConfig(f"host must be an interface address or name, got {host!r}")
        if isinstance(max_series, bool) or not isinstance(max_series, int) or max_series < 1:
            raise InvalidConfig(f"max_series must be an int >= 1, got {max_series!r}")
        if not isinstance(namespace, str) or (namespace and not _NAMESPACE.fullmatch(namespace)):
            raise InvalidConfig(
                f"namespace must be empty or a Prometheus name ([a-zA-Z_][a-zA-Z0-9_]*), got {namespace!r}"
            )
        _check_port(host, port)
        self.port = port
        self.host = host
        self.max_series = max_series
        self.namespace = namespace
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}  # by Prometheus name
        self._by_event_name: dict[str, tuple[_Family, int] | None] = {}  # None: refused (a collision)
        self._labels: dict[Origin, Labels] = {}
        self._series = 0
        self.refused = {"max_series": 0, "collision": 0}
        self._warned: set[tuple[str, str]] = set()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._step = self._family(_STEP, "the latest step each origin logged")
        self._wall = self._family(_WALL, "the wall time of each origin's latest value, in seconds since the epoch")

    def _family(self, name: str, help_: str, label_names: Labels = ORIGIN_LABELS) -> _Family:
        family = self._families[name] = _Family(name, help_, label_names)
        return family

    @property
    def name(self) -> str:
        return f"prometheus:{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Where a scrape goes."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def __getstate__(self) -> dict[str, Any]:
        return {"port": self.port, "host": self.host, "max_series": self.max_series, "namespace": self.namespace}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    # ---- the Sink protocol ----

    async def open(self) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)  # type: ignore[arg-type]  # a collector is anything with collect()
        self._server, self._thread = start_http_server(self.port, addr=self.host, registry=registry)

    async def write_batch(self, events: Sequence[Event]) -> int | None:
        refused = 0
        with self._lock:
            for event in events:
                labels = self._labels.get(event.origin)
                if labels is None:
                    labels = self._labels[event.origin] = _origin_labels(event.origin)
                ok, training = True, False  # the pipeline's own samples do not move an origin's step
                if type(event) is Scalar:
                    ok = self._set(event.name, labels, event.value)
                    training = not event.name.startswith(_OWN_PREFIX)
                else:
                    for name, value in event.values.items():  # type: ignore[union-attr]
                        ok = self._set(name, labels, value) and ok
                        training = training or not name.startswith(_OWN_PREFIX)
                refused += not ok
                if training:
                    self._put(self._step, labels, float(event.step))
                    self._put(self._wall, labels, event.wall_time)
        return refused or None

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    # ---- the state a scrape reads ----

    def _set(self, name: str, labels: Labels, value: float) -> bool:
        """Keep `value` as the latest of `name` at `labels`; False if refused."""
        if name in self._by_event_name:
            found = self._by_event_name[name]
        else:
            found = self._by_event_name[name] = self._place(name)
        if found is None:
            self._refuse("collision", name)
            return False
        family, extra = found
        key = labels if not extra else (*labels, name.split("/")[1])
        if not self._put(family, key, value):
            self._refuse("max_series", name)
            return False
        return True

    def _place(self, name: str) -> tuple[_Family, int] | None:
        """The family of the metric `name` (made at its first value), or None for a collision."""
        pipeline = _PIPELINE.fullmatch(name)
        if pipeline is not None:
            target = PIPELINE_FAMILIES[pipeline.group(2)]
            family = self._families.get(target)
            if family is None:
                help_ = f"metricbus/<sink>/{pipeline.group(2)} of PipelineMetrics"
                family = self._family(target, help_, (*ORIGIN_LABELS, "sink"))
            return family, 1
        target = prometheus_name(name, self.namespace)
        if target in self._families or target in OWN_FAMILIES:
            holder = (
                "metricbus's own series" if target in OWN_FAMILIES else f"the series of {self._families[target].help!r}"
            )
            log.warning("PrometheusSink: %r would be %s, %s; its values are refused", name, target, holder)
            return None
        return self._family(target, name), 0

    def _put(self, family: _Family, key: Labels, value: float) -> bool:
        samples = family.samples
        if key not in samples:
            if self._series >= self.max_series:
                return False
            self._series += 1
        samples[key] = value
        return True

    def _refuse(self, reason: str, name: str) -> None:
        self.refused[reason] += 1
        if reason == "max_series" and (reason, name) not in self._warned and len(self._warned) < 100:
            self._warned.add((reason, name))
            log.warning("PrometheusSink: max_series=%d reached; new series of %r are refused", self.max_series, name)

    def collect(self) -> Iterator[Metric]:
        """The metric families of a scrape (prometheus_client's collector interface); runs on
        the server's thread, so it copies the samples under the lock and builds outside it."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with self._lock:
            copies = [(f.name, f.help, f.label_names, list(f.samples.items())) for f in self._families.values()]
            held, refused = self._series, dict(self.refused)
        for name, help_, label_names, samples in copies:
            family = GaugeMetricFamily(name, help_, labels=label_names)
            for labels, value in samples:
                family.add_metric(labels, value)
            yield family
        yield GaugeMetricFamily(_HELD, "series this endpoint holds (at most max_series)", value=held)
        counter = CounterMetricFamily(
            _REFUSED, "values refused: a new series past max_series, or a name collision", labels=("reason",)
        )
        for reason, n in refused.items():
            counter.add_metric((reason,), n)
        yield counter


def _origin_labels(origin: Origin) -> Labels:
    return (origin.site, origin.node, "" if origin.rank is None else str(origin.rank))


def _check_port(host: str, port: int) -> None:
    """InvalidConfig unless a server could listen on host:port now."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InvalidConfig(f"PrometheusSink: cannot listen on {host!r}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is free
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InvalidConfig(f"PrometheusSink: port {port} on {host} is already in use") from None
            raise InvalidConfig(f"PrometheusSink: cannot listen on {host}:{port}: {exc}") from None
