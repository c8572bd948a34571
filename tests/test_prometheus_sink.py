"""PrometheusSink: scraped over HTTP (loopback) while a MetricLogger's sink host serves it, and
parsed with prometheus_client's own parsers; names, collisions, the series cap, bad settings."""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from bus import InvalidConfig, MetricBus, Metrics, Origin, Scalar, SinkState
from producers import MetricLogger, PipelineMetrics
from sinks import PrometheusSink, prometheus_name
from tests.helpers import wait_until_sync
from tests.redis_server import free_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, *, openmetrics: bool = False) -> Samples:
    """Every sample of one scrape, by (name, sorted labels), parsed by prometheus_client."""
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"} if openmetrics else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
        text = response.read().decode()
    parse = openmetrics_families if openmetrics else text_string_to_metric_families
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in parse(text) for s in family.samples}


def origin(site: str = "", node: str = "", rank: str = "") -> tuple[tuple[str, str], ...]:
    return (("node", node), ("rank", rank), ("site", site))


def scraped(url: str) -> Samples:
    try:
        return scrape(url)
    except OSError:
        return {}  # the host has not started serving yet


def test_a_scrape_of_the_sink_host_shows_values_steps_and_the_pipeline_health() -> None:
    sink = PrometheusSink(free_port())
    rank1 = Origin(site="site-1", rank=1)
    with MetricLogger([sink]) as log:
        assert log.stats()[sink.name].where.startswith("host")  # served from the host, not this process
        PipelineMetrics.attach(log, every=0.1)
        for step in range(50):
            log.scalars({"train/loss": 1 / (step + 1), "lr": 0.5}, step=step)
        log.publish(Scalar("train/loss", math.inf, step=7, origin=rank1))
        key = ("metricbus_sink_queue_events", tuple(sorted((*origin(), ("sink", f"prometheus_127.0.0.1_{sink.port}")))))
        wait_until_sync(lambda: ("train_loss", origin()) in (s := scraped(sink.url)) and key in s, timeout=60)
        wait_until_sync(lambda: scrape(sink.url).get(("metricbus_step", origin())) == 49.0, timeout=60)
        samples = scrape(sink.url)
        assert samples[("train_loss", origin())] == 1 / 50 and samples[("lr", origin())] == 0.5
        assert samples[("train_loss", origin(site="site-1", rank="1"))] == math.inf
        assert samples[("metricbus_step", origin(site="site-1", rank="1"))] == 7.0
        assert time.time() - samples[("metricbus_last_logged_timestamp_seconds", origin())] < 3600
        for family in ("queue_events", "lag_seconds", "dropped_events", "spooled_bytes", "down"):
            assert (f"metricbus_sink_{family}", key[1]) in samples
        assert samples[("metricbus_prometheus_refused_total", (("reason", "collision"),))] == 0
        om = scrape(sink.url, openmetrics=True)  # the OpenMetrics flavour parses too
        assert om[("train_loss", origin())] == 1 / 50
    assert log.stats()[sink.name].state is SinkState.CLOSED
    with pytest.raises(OSError):
        scrape(sink.url)  # the server went with the sink


def test_names_are_made_prometheus_names() -> None:
    assert prometheus_name("train/loss") == "train_loss"
    assert prometheus_name("a.b-c d:e") == "a_b_c_d_e"
    assert prometheus_name("1st") == "_1st"
    assert prometheus_name("1st", "job") == "job_1st"


@pytest.mark.anyio
async def test_a_collision_keeps_the_first_name_and_refuses_the_second_with_a_count() -> None:
    sink = PrometheusSink(free_port())
    async with MetricBus(raise_on_loss=False) as bus:  # refused values are a loss: counted, not hidden
        name = bus.add_sink(sink, rate="none")
        await bus.publish_many(
            [Scalar("a/b", 1.0, step=0), Scalar("a.b", 2.0, step=0), Scalar("metricbus/step", 3.0, step=0)]
        )
        await bus.flush()
        samples = scrape(sink.url)
        assert samples[("a_b", origin())] == 1.0
        assert samples[("metricbus_step", origin())] == 0.0  # metricbus's own series is not taken over
        assert samples[("metricbus_prometheus_refused_total", (("reason", "collision"),))] == 2
    assert bus.stats()[name].dropped == {"rejected": 2}


@pytest.mark.anyio
async def test_many_origins_are_capped_and_the_rest_counted() -> None:
    """5,000 origins, a cap of 1,000 series: a scrape holds at most 1,000 series; every later
    value of a series held is still updated; the values refused are counted."""
    sink = PrometheusSink(free_port(), max_series=1_000)
    events = [Scalar("loss", float(r), step=1, origin=Origin(rank=r)) for r in range(5_000)]
    async with MetricBus(raise_on_loss=False) as bus:
        name = bus.add_sink(sink, rate="none", max_batch=1_000)
        await bus.publish_many(events)
        await bus.publish(Scalar("loss", -1.0, step=2, origin=Origin(rank=0)))
        await bus.flush()
        samples = scrape(sink.url)
        held = {k: v for k, v in samples.items() if not k[0].startswith("metricbus_prometheus")}
        assert len(held) == samples[("metricbus_prometheus_series", ())] <= 1_000
        assert samples[("loss", origin(rank="0"))] == -1.0
        refused = samples[("metricbus_prometheus_refused_total", (("reason", "max_series"),))]
        assert refused > 0
    assert bus.stats()[name].dropped == {"rejected": refused}


def test_a_port_in_use_and_bad_settings_are_refused_at_the_call() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(InvalidConfig, match="in use"):
            PrometheusSink(taken.getsockname()[1])
    for bad in ({"port": 0}, {"port": 70_000}, {"port": "9000"}, {"port": 9000, "max_series": 0}):
        with pytest.raises(InvalidConfig):
            PrometheusSink(**bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidConfig):
        PrometheusSink(free_port(), namespace="bad-name")
    with pytest.raises(InvalidConfig):
        PrometheusSink(free_port(), host="no-such-host.invalid")


@pytest.mark.anyio
async def test_it_listens_on_loopback_unless_told_otherwise() -> None:
    sink = PrometheusSink(free_port())
    async with MetricBus() as bus:
        bus.add_sink(sink, isolate="none")  # in this process, to look at its server
        await bus.publish(Metrics({"x": 1.0}, step=0))
        await bus.flush()
        assert sink._server.server_address[0] == "127.0.0.1"
    assert PrometheusSink(free_port(), host="0.0.0.0").host == "0.0.0.0"


PROMETHEUS = shutil.which("prometheus")


@pytest.mark.skipif(
    not (PROMETHEUS and os.environ.get("METRICBUS_TEST_PROMETHEUS")),
    reason="opt-in: set METRICBUS_TEST_PROMETHEUS=1 with a prometheus binary on PATH (Debian: apt install prometheus)",
)
def test_a_real_prometheus_server_scrapes_it(tmp_path: Path) -> None:
    import json

    sink = PrometheusSink(free_port())
    web = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: training\n    static_configs: [{{targets: ['127.0.0.1:{sink.port}']}}]\n"
    )
    with MetricLogger([sink]) as log:
        log.scalar("train/loss", 0.25, step=3)
        log.flush()
        server = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{web}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:

            def loss() -> list[object]:
                url = f"http://127.0.0.1:{web}/api/v1/query?query=train_loss"
                try:
                    with urllib.request.urlopen(url, timeout=5) as response:
                        return list(json.load(response)["data"]["result"])
                except OSError:
                    return []

            wait_until_sync(lambda: bool(loss()), timeout=60)
            (result,) = loss()
            assert result["value"][1] == "0.25" and result["metric"]["job"] == "training"  # type: ignore[index]
        finally:
            server.terminate()
            server.wait(timeout=30)
