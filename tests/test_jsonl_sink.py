"""JsonlSink: reading the file back gives equal events, NaN/±inf, unicode and odd names included."""

from __future__ import annotations

import base64
import logging
import math
from pathlib import Path

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus import ChartLayout, Context, Event, Histogram, Image, MetricBus, Metrics, Origin, Scalar, Text
from sinks import JsonlSink, read_jsonl
from tests.helpers import normalized

names = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40)  # valid names
floats = st.floats(allow_nan=True, allow_infinity=True)
steps = st.integers(min_value=0, max_value=2**62)
origins = st.builds(
    Origin,
    site=st.from_regex(r"[A-Za-z0-9_\-]{0,8}", fullmatch=True),
    rank=st.none() | st.integers(0, 1024),
)
contexts = st.none() | st.builds(Context, epoch=st.none() | st.integers(0, 100), task=st.none() | names)
common = {"wall_time": st.floats(0, 4e9), "origin": origins, "context": contexts}

events = st.one_of(
    st.builds(Scalar, names, floats, steps, **common),
    st.builds(Metrics, st.dictionaries(names, floats, min_size=1, max_size=5), steps, **common),
    st.builds(Text, names, st.text(max_size=200), steps, **common),
    st.builds(Histogram, names, steps, values=st.lists(floats, min_size=1, max_size=20), **common),
    st.tuples(st.integers(1, 5), st.integers(1, 5), st.sampled_from([1, 3, 4])).flatmap(
        lambda shape: st.builds(
            Image,
            names,
            steps,
            pixels=st.binary(min_size=shape[0] * shape[1] * shape[2], max_size=shape[0] * shape[1] * shape[2]),
            height=st.just(shape[0]),
            width=st.just(shape[1]),
            channels=st.just(shape[2]),
            **common,
        )
    ),
    st.builds(
        ChartLayout,
        st.dictionaries(
            names,
            st.dictionaries(
                names,
                st.one_of(
                    st.tuples(st.just("Multiline"), st.lists(names, min_size=1, max_size=3)),
                    st.tuples(st.just("Margin"), st.lists(names, min_size=3, max_size=3)),
                ),
                max_size=2,
            ),
            max_size=2,
        ),
        steps,
        **common,
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(events, min_size=1, max_size=30))
def test_jsonl_round_trip_gives_equal_events(tmp_path_factory: object, batch: list[Event]) -> None:
    path = tmp_path_factory.mktemp("jsonl") / "events.jsonl"  # type: ignore[attr-defined]

    async def main() -> None:
        async with MetricBus() as bus:
            bus.add_sink(JsonlSink(path))
            await bus.publish_many(batch)

    anyio.run(main)
    back = read_jsonl(path)
    assert [type(e) for e in back] == [type(e) for e in batch]
    assert normalized(back) == normalized(batch)


def test_images_round_trip_byte_for_byte_even_where_their_base64_spells_null(tmp_path: Path) -> None:
    """The sink looks for `null` (a NaN) to decide how to encode a batch; base64 can spell it."""
    pixels = base64.b64decode("nullnull")  # 6 bytes whose base64 is "nullnull"
    batch: list[Event] = [
        Image("null", 1, pixels=pixels, height=2, width=1, channels=3, wall_time=1.0),
        Image("big", 2, pixels=bytes(range(256)) * 48, height=64, width=64, channels=3, wall_time=2.0),
        Scalar("nan", math.nan, step=1, wall_time=3.0),
    ]
    run(tmp_path / "events.jsonl", batch)
    back = read_jsonl(tmp_path / "events.jsonl")
    assert back[:2] == batch[:2] and isinstance(back[2], Scalar) and math.isnan(back[2].value)
    assert b'"pixels":"nullnull"' in (tmp_path / "events.jsonl").read_bytes()


def run(path: Path, events: list[Event]) -> None:
    """One run of a program that logs `events` to a JsonlSink on `path`."""

    async def main() -> None:
        async with MetricBus() as bus:
            bus.add_sink(JsonlSink(path))
            await bus.publish_many(events)

    anyio.run(main)


def test_a_torn_last_line_is_skipped_but_a_corrupt_middle_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    run(path, [Scalar("x", float(i), step=i) for i in range(3)])
    with open(path, "ab") as f:
        f.write(b'{"kind":"scalar","name":"x","va')
    assert [e.step for e in read_jsonl(path)] == [0, 1, 2]  # type: ignore[union-attr]
    path.write_bytes(b'{"kind":"scalar"\n' + path.read_bytes())
    with pytest.raises(msgspec.DecodeError):
        read_jsonl(path)


def test_a_torn_last_line_is_cut_off_before_appending(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "e.jsonl"
    run(path, [Scalar("x", float(i), step=i) for i in range(3)])
    torn = b'{"kind":"scalar","name":"x","va'  # killed in the middle of writing a line
    with open(path, "ab") as f:
        f.write(torn)
    with caplog.at_level(logging.WARNING, logger="metricbus"):
        run(path, [Scalar("x", 3.0, step=3)])
    assert [(e.step, e.value) for e in read_jsonl(path)] == [(i, float(i)) for i in range(4)]  # type: ignore[union-attr]
    assert path.read_bytes().endswith(b"\n")
    assert f"dropped {len(torn)} bytes" in caplog.text


def test_a_file_with_only_a_torn_line_is_emptied_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(b'{"kind":"sca')
    run(path, [Scalar("x", 1.0, step=0)])
    assert [(e.step, e.value) for e in read_jsonl(path)] == [(0, 1.0)]  # type: ignore[union-attr]


def test_sinks_on_files_of_the_same_name_get_distinct_default_names(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "e.jsonl", tmp_path / "b" / "e.jsonl"

    async def main() -> list[str]:
        async with MetricBus() as bus:
            names = [bus.add_sink(JsonlSink(a)), bus.add_sink(JsonlSink(b))]
            await bus.publish(Scalar("x", 1.0, step=0))
        return names

    assert anyio.run(main) == [f"jsonl:{a.as_posix()}", f"jsonl:{b.as_posix()}"]
    assert len(read_jsonl(a)) == len(read_jsonl(b)) == 1
    assert JsonlSink("runs/a/e.jsonl").name == "jsonl:runs/a/e.jsonl"
