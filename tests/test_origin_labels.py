"""Origin labels: what sinks name runs and directories by. One label per origin, readable in the
common cases, path-safe, and read back by `Origin.from_label`."""

from __future__ import annotations

import re

import hypothesis.strategies as st
import pytest
from hypothesis import given

from bus import DEFAULT_ORIGIN, InvalidEvent, Origin

# Names an origin may hold, with the ones that look like other parts of a label.
names = st.one_of(
    st.just(""),
    st.from_regex(r"[A-Za-z0-9_.\-]{1,12}", fullmatch=True).filter(lambda n: n not in (".", "..")),
    st.sampled_from(["main", "rank0", "rank7", "rank01", "site", "node", "a" * 128]),
)
origins = st.builds(Origin, site=names, node=names, rank=st.one_of(st.none(), st.integers(0, 2**63 - 1)))


@pytest.mark.parametrize(
    ("origin", "label"),
    [
        (DEFAULT_ORIGIN, "main"),
        (Origin(site="site-1"), "site-1"),
        (Origin(rank=3), "rank3"),
        (Origin(site="site-1", rank=0), "site-1/rank0"),
        (Origin(site="site-1", node="gpu-a", rank=0), "site-1/gpu-a/rank0"),
        (Origin(node="node0", rank=3), "node=node0/rank3"),  # what origin_from_env gives under torchrun
        (Origin(node="x"), "node=x"),
        (Origin(site="main"), "site=main"),
        (Origin(site="rank3"), "site=rank3"),
        (Origin(site="a", node="rank0"), "a/node=rank0"),
        (Origin(site="rank01"), "rank01"),  # not a rank: a label never writes a leading zero
    ],
)
def test_labels_read_as_the_readme_says(origin: Origin, label: str) -> None:
    assert origin.label == label
    assert Origin.from_label(label) == origin


@given(origins, origins)
def test_two_origins_never_share_a_label(a: Origin, b: Origin) -> None:
    assert (a.label == b.label) == (a == b)


@given(origins)
def test_every_label_reads_back_and_is_a_safe_relative_path(origin: Origin) -> None:
    label = origin.label
    assert Origin.from_label(label) == origin
    for part in label.split("/"):
        # a file name on Linux, macOS and Windows: no separators, no '..', nothing a shell quotes
        assert re.fullmatch(r"[A-Za-z0-9_.=\-]{1,255}", part) and part not in (".", ".."), label


@pytest.mark.parametrize(
    "text", ["", "a/b/c", "node=x/y", "rank0/a", "site=", "x=y", "a//b", "site=main/site=x", "a/node=b", "site=x"]
)
def test_text_that_no_origin_has_as_its_label_is_refused(text: str) -> None:
    with pytest.raises(InvalidEvent, match="label"):
        Origin.from_label(text)
