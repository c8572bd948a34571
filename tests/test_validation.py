"""Event constructors: every bad input is an InvalidEvent at the call, naming the field; numpy
scalars and one-element arrays/tensors are taken wherever a scalar is."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
import pytest
import torch

from bus import Context, Event, Histogram, Hparams, InvalidEvent, Metrics, Origin, Scalar, Text
from bus._validate import MAX_STEP

EVENT_CLASSES = (Scalar, Metrics, Histogram, Text, Hparams)


class Raises:
    """A number-like object whose conversions raise `error`, like a broken custom type."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __float__(self) -> float:
        raise self.error

    def __index__(self) -> int:
        raise self.error


def invalid(build: Callable[[], object]) -> InvalidEvent:
    """The InvalidEvent that `build()` raises; any other exception, or none, fails the test."""
    with pytest.raises(InvalidEvent) as info:
        build()
    return info.value


# ---- metric values ----

# Every place an event takes a metric value: (field named in the error, builder).
VALUE_SLOTS: list[tuple[str, Callable[[Any], object]]] = [
    ("value", lambda v: Scalar("x", v, step=0)),
    ("values['x']", lambda v: Metrics({"x": v}, step=0)),
    ("metrics['x']", lambda v: Hparams({"lr": 0.1}, {"x": v})),
    ("values[1]", lambda v: Histogram("h", 0, values=(0.0, v))),
    ("bucket_limits[0]", lambda v: Histogram("h", 0, bucket_limits=(v,), bucket_counts=(1.0,))),
    ("bucket_counts[0]", lambda v: Histogram("h", 0, bucket_limits=(1.0,), bucket_counts=(v,))),
]

BAD_VALUES: dict[str, Any] = {
    "int beyond float": 10**400,
    "bool": True,
    "numpy bool": np.bool_(True),
    "torch bool": torch.tensor(True),
    "complex": 1 + 2j,
    "numpy complex": np.complex128(1 + 2j),
    "torch complex": torch.tensor(1 + 2j),
    "numpy datetime": np.datetime64("2020-01-01", "ns"),
    "two-element array": np.array([0.5, 0.25]),
    "two-element tensor": torch.tensor([0.5, 0.25]),
    "str": "0.5",
    "bytes": b"0.5",
    "None": None,
    "list": [0.5],
    "__float__ raises RuntimeError": Raises(RuntimeError("device lost")),
    "__float__ raises ZeroDivisionError": Raises(ZeroDivisionError()),
}


@pytest.mark.parametrize("bad", BAD_VALUES.values(), ids=BAD_VALUES.keys())
@pytest.mark.parametrize(("field", "build"), VALUE_SLOTS, ids=[f for f, _ in VALUE_SLOTS])
def test_a_value_that_is_not_one_real_number_is_refused_naming_the_field(
    field: str, build: Callable[[Any], object], bad: Any
) -> None:
    assert invalid(lambda: build(bad)).field == field


def test_a_failed_conversion_is_chained_as_the_cause() -> None:
    broken: Any = Raises(RuntimeError("lost"))
    assert isinstance(invalid(lambda: Scalar("x", 10**400, step=0)).__cause__, OverflowError)
    assert isinstance(invalid(lambda: Scalar("x", broken, step=0)).__cause__, RuntimeError)
    assert isinstance(invalid(lambda: Scalar("x", 0.5, step=broken)).__cause__, RuntimeError)


def test_the_reason_names_the_shape_or_dtype_at_fault() -> None:
    two_d: Any = np.zeros((2, 3))
    as_bool: Any = torch.tensor(True)
    assert "shape (2, 3)" in invalid(lambda: Scalar("x", two_d, step=0)).reason
    assert "torch.bool" in invalid(lambda: Scalar("x", as_bool, step=0)).reason


def test_arrays_of_bools_or_complex_numbers_are_refused_as_histograms() -> None:
    bad: list[Any] = [np.array([True, False]), torch.tensor([True]), np.array([1j]), torch.tensor([1 + 1j]), (1.0, 2j)]
    for values in bad:
        assert invalid(lambda v=values: Histogram("h", 0, values=v)).field.startswith("values")  # type: ignore[misc]


def test_bucket_limits_must_increase_without_nan_and_counts_be_finite_and_not_negative() -> None:
    for limits in [(math.nan,), (0.0, math.nan), (1.0, 1.0), (2.0, 1.0)]:
        with pytest.raises(InvalidEvent, match="bucket_limits"):
            Histogram("h", 0, bucket_limits=limits, bucket_counts=(1.0,) * len(limits))
    for count in [-1.0, math.nan, math.inf]:
        with pytest.raises(InvalidEvent, match="bucket_counts"):
            Histogram("h", 0, bucket_limits=(0.0, 1.0), bucket_counts=(1.0, count))


def test_nan_infinities_negative_zero_and_subnormals_stay_exactly_what_they_are() -> None:
    for value in [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308, 2**1023]:
        got = Scalar("x", value, step=0).value
        assert repr(got) == repr(float(value))  # repr tells -0.0 from 0.0, and NaN from NaN's absence


ONE_ELEMENT: dict[str, Any] = {
    "numpy float32": np.float32(0.5),
    "numpy 0-d": np.array(0.5),
    "numpy [1]": np.array([0.5]),
    "numpy [[1]]": np.array([[0.5]]),
    "numpy int [1]": np.array([2]),
    "numpy longdouble": np.longdouble(0.5),
    "torch 0-d": torch.tensor(0.5),
    "torch [1]": torch.tensor([0.5]),
    "torch [1, 1] float64": torch.tensor([[0.5]], dtype=torch.float64),
    "torch int [1]": torch.tensor([2]),
    "torch bfloat16 [1]": torch.tensor([0.5], dtype=torch.bfloat16),
}


@pytest.mark.parametrize("one", ONE_ELEMENT.values(), ids=ONE_ELEMENT.keys())
def test_numpy_scalars_and_one_element_arrays_and_tensors_are_taken_as_their_value(one: Any) -> None:
    expected = float(np.asarray(one.tolist(), dtype=np.float64).ravel()[0])
    scalar = Scalar("x", one, step=0)
    metrics = Metrics({"x": one}, step=0)
    hparams = Hparams({"p": one}, {"x": one})
    histogram = Histogram("h", 0, values=(one, one))
    got = [scalar.value, metrics.values["x"], hparams.metrics["x"], *(histogram.values or ())]
    assert got == [expected] * 5 and all(type(v) is float for v in got)
    assert hparams.params["p"] == expected


# ---- steps, ranks, epochs, rounds ----

# Every place an event takes a step-like int: (field named in the error, builder, reader).
STEP_SLOTS: list[tuple[str, Callable[[Any], Any], Callable[[Any], object]]] = [
    ("step", lambda s: Scalar("x", 0.5, step=s), lambda e: e.step),
    ("step", lambda s: Metrics({"x": 0.5}, step=s), lambda e: e.step),
    ("step", lambda s: Histogram("h", s, values=(0.5,)), lambda e: e.step),
    ("step", lambda s: Text("t", "hello", step=s), lambda e: e.step),
    ("step", lambda s: Hparams({"lr": 0.1}, step=s), lambda e: e.step),
    ("origin.rank", lambda s: Origin(rank=s), lambda o: o.rank),
    ("context.epoch", lambda s: Context(epoch=s), lambda c: c.epoch),
    ("context.round", lambda s: Context(round=s), lambda c: c.round),
]
STEP_IDS = [f"{f}-{i}" for i, (f, _, _) in enumerate(STEP_SLOTS)]

BAD_STEPS: dict[str, Any] = {
    "2**63": 2**63,
    "2**64 + 1": 2**64 + 1,
    "int beyond float": 10**400,
    "negative": -1,
    "numpy uint64 beyond int64": np.uint64(2**63),
    "bool": True,
    "float": 3.0,
    "numpy float": np.float64(3.0),
    "numpy bool": np.bool_(True),
    "float tensor": torch.tensor(3.0),
    "bool tensor": torch.tensor(True),
    "two-element tensor": torch.tensor([1, 2]),
    "str": "3",
    "object": object(),
    "__index__ raises": Raises(RuntimeError("lost")),
}


@pytest.mark.parametrize("bad", BAD_STEPS.values(), ids=BAD_STEPS.keys())
@pytest.mark.parametrize(("field", "build", "read"), STEP_SLOTS, ids=STEP_IDS)
def test_a_step_rank_epoch_or_round_outside_int64_or_not_an_int_is_refused(
    field: str, build: Callable[[Any], Any], read: Callable[[Any], object], bad: Any
) -> None:
    assert invalid(lambda: build(bad)).field == field


@pytest.mark.parametrize(
    "step",
    [MAX_STEP, np.int64(7), np.uint8(7), np.array([7]), np.array(7), torch.tensor(7), torch.tensor([[7]])],
    ids=["int64 max", "np.int64", "np.uint8", "np [1]", "np 0-d", "torch 0-d", "torch [1, 1]"],
)
@pytest.mark.parametrize(("field", "build", "read"), STEP_SLOTS, ids=STEP_IDS)
def test_steps_take_int64_numpy_integers_and_one_element_integer_tensors_as_tensorboardx_does(
    field: str, build: Callable[[Any], Any], read: Callable[[Any], object], step: Any
) -> None:
    value = read(build(step))
    assert type(value) is int and value == int(np.asarray(step).ravel()[0])


# ---- strings ----

# Every str field: (field named in the error, builder, whether NUL is refused there).
STR_SLOTS: list[tuple[str, Callable[[str], object], bool]] = [
    ("name", lambda s: Scalar(s, 0.5, step=0), True),
    ("values key", lambda s: Metrics({s: 0.5}, step=0), True),
    ("name", lambda s: Histogram(s, 0, values=(0.5,)), True),
    ("name", lambda s: Text(s, "hello", step=0), True),
    ("text", lambda s: Text("t", s, step=0), False),
    ("params key", lambda s: Hparams({s: 0.1}), True),
    ("params['opt']", lambda s: Hparams({"opt": s}), False),
    ("metrics key", lambda s: Hparams({"lr": 0.1}, {s: 0.5}), True),
    ("context.task", lambda s: Context(task=s), True),
    ("origin.site", lambda s: Origin(site=s), True),
    ("origin.node", lambda s: Origin(node=s), True),
]
STR_IDS = [f"{f}-{i}" for i, (f, _, _) in enumerate(STR_SLOTS)]


@pytest.mark.parametrize("bad", ["\ud800", "loss\udfff", "a\udc80b"], ids=["high", "low at the end", "low inside"])
@pytest.mark.parametrize(("field", "build", "nul_refused"), STR_SLOTS, ids=STR_IDS)
def test_a_str_utf8_cannot_encode_is_refused_naming_the_field(
    field: str, build: Callable[[str], object], nul_refused: bool, bad: str
) -> None:
    assert invalid(lambda: build(bad)).field == field


@pytest.mark.parametrize(("field", "build", "nul_refused"), STR_SLOTS, ids=STR_IDS)
def test_nul_is_refused_in_names_and_kept_in_text(
    field: str, build: Callable[[str], object], nul_refused: bool
) -> None:
    if nul_refused:
        assert invalid(lambda: build("a\x00b")).field == field
    else:
        build("a\x00b")


@pytest.mark.parametrize(("field", "build", "nul_refused"), STR_SLOTS[:-2], ids=STR_IDS[:-2])
def test_non_ascii_that_utf8_encodes_is_accepted(field: str, build: Callable[[str], object], nul_refused: bool) -> None:
    build("ünïcødé/λ 😀")  # origin parts (left out) are path-safe ASCII identifiers


def test_a_name_accepted_once_is_taken_again_and_a_bad_one_is_refused_every_time() -> None:
    assert Scalar("cached/name", 0.5, step=0).name == Scalar("cached/name", 0.25, step=1).name == "cached/name"
    for _ in range(2):
        assert invalid(lambda: Scalar("bad\x00name", 0.5, step=0)).field == "name"
        assert invalid(lambda: Metrics({"bad\ud800": 0.5}, step=0)).field == "values key"


# ---- wall time ----


def _with_wall_time(wall_time: Any) -> list[Callable[[], Event]]:
    return [
        lambda: Scalar("x", 0.5, step=0, wall_time=wall_time),
        lambda: Metrics({"x": 0.5}, step=0, wall_time=wall_time),
        lambda: Histogram("h", 0, values=(0.5,), wall_time=wall_time),
        lambda: Text("t", "hello", step=0, wall_time=wall_time),
        lambda: Hparams({"lr": 0.1}, wall_time=wall_time),
    ]


BAD_WALL_TIMES: dict[str, Any] = {
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "negative": -1.0,
    "numpy nan": np.float64("nan"),
    "tensor inf": torch.tensor([math.inf]),
    "int beyond float": 10**400,
    "bool": True,
    "str": "1700000000",
}


@pytest.mark.parametrize("bad", BAD_WALL_TIMES.values(), ids=BAD_WALL_TIMES.keys())
def test_a_wall_time_that_is_not_finite_and_non_negative_is_refused(bad: Any) -> None:
    for build in _with_wall_time(bad):
        assert invalid(build).field == "wall_time"


def test_wall_times_are_coerced_to_float() -> None:
    given: list[tuple[Any, float]] = [(0, 0.0), (1_700_000_000, 1.7e9), (np.float32(1.5), 1.5)]
    given += [(np.array([1.5]), 1.5), (torch.tensor([1.5]), 1.5), (torch.tensor(1.5), 1.5)]
    for wall_time, expected in given:
        for build in _with_wall_time(wall_time):
            got = build().wall_time
            assert type(got) is float and got == expected


# ---- hyperparameters ----


def test_hyperparameters_keep_bools_and_take_the_python_value_of_numpy_and_torch_scalars() -> None:
    params: dict[str, Any] = {
        "amp": True,
        "np_bool": np.bool_(False),
        "torch_bool": torch.tensor(True),
        "layers": np.int64(4),
        "lr": torch.tensor([0.5]),
        "name": np.str_("adam"),
        "widths": np.array([1, 2]),
        "complex": np.complex128(1 + 2j),
    }
    assert Hparams(params).params == {
        "amp": True,
        "np_bool": False,
        "torch_bool": True,
        "layers": 4,
        "lr": 0.5,
        "name": "adam",
        "widths": "[1 2]",  # anything else is logged as its str()
        "complex": "(1+2j)",  # never a silently truncated 1.0
    }
    types = [type(v) for v in Hparams(params).params.values()]
    assert types == [bool, bool, bool, int, float, str, str, str]


def test_hyperparameter_ints_must_fit_an_int64() -> None:
    assert Hparams({"low": -(2**63), "high": 2**63 - 1}).params == {"low": -(2**63), "high": 2**63 - 1}
    too_wide: list[Any] = [2**63, -(2**63) - 1, np.uint64(2**64 - 1)]
    for bad in too_wide:
        assert invalid(lambda b=bad: Hparams({"seed": b})).field == "params['seed']"  # type: ignore[misc]


def test_a_hyperparameter_whose_str_raises_is_refused() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    params: dict[str, Any] = {"obj": Unprintable()}
    assert invalid(lambda: Hparams(params)).field == "params['obj']"


# ---- containers ----


def test_a_mapping_or_sequence_that_raises_while_read_is_refused() -> None:
    class BadMapping(dict[str, float]):
        def items(self) -> Any:
            raise RuntimeError("no")

    class BadSequence:
        def __iter__(self) -> Any:
            raise RuntimeError("no")

    bad_sequence: Any = BadSequence()
    assert invalid(lambda: Metrics(BadMapping(a=1.0), step=0)).field == "values"
    assert invalid(lambda: Histogram("h", 0, values=bad_sequence)).field == "values"


def test_an_int_too_long_to_print_is_still_an_invalid_event() -> None:
    invalid(lambda: Scalar("x", 10**5000, step=0))


def test_what_validation_accepts_the_worker_pipe_and_json_files_can_encode() -> None:
    """Edge values at the limits survive msgpack (to a sink's worker) and JSON (JsonlSink)."""
    given: dict[str, Any] = {
        "one": np.array([0.5]),
        "tensor": torch.tensor([1.0]),
        "np_step": np.int64(3),
        "t_step": torch.tensor([2]),
        "uints": np.arange(4, dtype=np.uint64),
        "params": {"seed": 2**63 - 1, "flag": np.bool_(True), "lr": torch.tensor(0.5)},
        "half": np.float16(0.5),
    }
    events: list[Event] = [
        Scalar("ünï", given["one"], step=MAX_STEP, wall_time=0, origin=Origin(site="s", rank=MAX_STEP)),
        Metrics({"a": given["tensor"], "b": 10**300}, step=given["np_step"], context=Context(epoch=MAX_STEP, task="t")),
        Histogram("h", given["t_step"], values=given["uints"]),
        Text("t", "nul\x00 and 😀", step=0),
        Hparams(given["params"], {"m": given["half"]}),
    ]
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(events), type=list[Event]) == events  # type: ignore[arg-type]
    assert msgspec.json.decode(msgspec.json.encode(events), type=list[Event]) == events  # type: ignore[arg-type]
