"""Built-in sinks. Heavy libraries (tensorboardX, wandb) are imported only by their own sink."""

from bus import Sink

from ._callback import CallbackSink, metric_calls
from ._csv import CsvSink
from ._jsonl import JsonlSink, iter_jsonl, read_jsonl
from ._memory import MemorySink

__all__ = ["CallbackSink", "CsvSink", "JsonlSink", "MemorySink", "Sink", "iter_jsonl", "metric_calls", "read_jsonl"]
