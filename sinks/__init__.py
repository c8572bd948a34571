"""Built-in sinks.

The TensorBoard, W&B, MLflow, console, Parquet and Prometheus sinks are loaded on first use, so
`import sinks` never imports tensorboardX, wandb, mlflow, rich, pyarrow or prometheus_client.
"""

from typing import TYPE_CHECKING

from bus import Sink
from bus.lazy import lazy_exports

from ._callback import CallbackSink, metric_calls
from ._csv import CsvSink
from ._jsonl import JsonlSink, iter_jsonl, read_jsonl
from ._memory import MemorySink

if TYPE_CHECKING:
    from ._console import ConsoleSink
    from ._mlflow import MLflowSink
    from ._parquet import PARQUET_SCHEMA_FIELDS, PARQUET_SCHEMA_VERSION, ParquetSink, parquet_schema
    from ._prometheus import PrometheusSink, prometheus_name
    from ._redis import RedisSink
    from ._tensorboard import TensorBoardSink, encode_record
    from ._wandb import WandbSink

_LAZY = {
    "TensorBoardSink": "._tensorboard",
    "WandbSink": "._wandb",
    "ConsoleSink": "._console",
    "MLflowSink": "._mlflow",  # imports mlflow only when it opens
    "ParquetSink": "._parquet",  # imports pyarrow only when it opens
    "PARQUET_SCHEMA_FIELDS": "._parquet",  # the columns of every part, as (name, type, nullable)
    "PARQUET_SCHEMA_VERSION": "._parquet",
    "parquet_schema": "._parquet",  # the same as a pyarrow Schema (imports pyarrow)
    "PrometheusSink": "._prometheus",  # imports prometheus_client only when it opens
    "prometheus_name": "._prometheus",  # the Prometheus name a metric's values are served under
    "RedisSink": "._redis",  # the Redis bridge; imports redis only when it opens
    "encode_record": "._tensorboard",  # one TFRecord of a TensorBoard event file
}

__all__ = [
    "CallbackSink",
    "ConsoleSink",
    "CsvSink",
    "JsonlSink",
    "MLflowSink",
    "MemorySink",
    "PARQUET_SCHEMA_FIELDS",
    "PARQUET_SCHEMA_VERSION",
    "ParquetSink",
    "PrometheusSink",
    "RedisSink",
    "Sink",
    "TensorBoardSink",
    "WandbSink",
    "encode_record",
    "iter_jsonl",
    "metric_calls",
    "parquet_schema",
    "prometheus_name",
    "read_jsonl",
]


__getattr__ = lazy_exports(__name__, _LAZY)
