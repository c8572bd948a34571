"""The `metricbus` command."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from bus import RankReduce

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="metricbus", description="metricbus command-line tools")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a simulated training loop through every sink")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="where the files go (default runs/demo)")
    demo.add_argument("--steps", type=int, default=2_000)
    demo.add_argument("--plan", type=Path, help="a plan file (TOML) declaring the sinks to use instead")
    # ---- aggregate: the Redis bridge's service (producers/_aggregate.py) ----
    agg = commands.add_parser("aggregate", help="read events from Redis Streams into the sinks of a plan")
    agg.add_argument("--plan", type=Path, required=True, help="a plan file (TOML) declaring the sinks")
    agg.add_argument("--redis", metavar="URL", help="redis://[:password@]host:port/db (or a RedisSource in the plan)")
    agg.add_argument("--stream", default="metricbus")
    agg.add_argument("--group", default="metricbus", help="the consumer group (default metricbus)")
    agg.add_argument("--consumer", help="this consumer's name in the group (default aggregator-<host>)")
    agg.add_argument("--stats", type=Path, help="write the final source and sink stats here, as JSON")
    agg.add_argument("--every", type=float, default=1.0, help="seconds between progress lines (default 1)")
    agg.add_argument(
        "--pipeline-every",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="seconds between samples of the pipeline's own metrics (metricbus/<sink>/queue, ...) "
        "published into the sinks (default 5)",
    )
    agg.add_argument(
        "--no-pipeline-metrics", action="store_true", help="do not publish the pipeline's own metrics into the sinks"
    )
    agg.add_argument(
        "--ranks",
        type=int,
        metavar="WORLD_SIZE",
        help="reduce the ranks of each job into its own series (mean; a plan's [ranks] sets more)",
    )
    agg.add_argument("--rank-deadline", type=float, metavar="SECONDS", help="seconds a step waits for its ranks")
    # ---- replay: JSONL logs and TensorBoard runs into sinks (producers/_replay.py) ----
    rep = commands.add_parser("replay", help="publish JSONL logs or TensorBoard runs again into other sinks")
    rep.add_argument("sources", nargs="+", type=Path, metavar="SOURCE", help="*.jsonl, TensorBoard logdir or file")
    into = rep.add_mutually_exclusive_group(required=True)
    into.add_argument("--plan", type=Path, help="a plan file (TOML) declaring the sinks")
    specs = (
        "csv:PATH, jsonl:PATH, parquet:DIR, tensorboard:DIR, wandb:PROJECT (offline) or mlflow:URI;"
        " repeat for more sinks"
    )
    into.add_argument("--to", action="append", metavar="SPEC", help=specs)
    # ---- query: SQL over a ParquetSink run (producers/_query.py) ----
    query = commands.add_parser("query", help="SQL over a Parquet run directory (DuckDB), printed as a table")
    query.add_argument("run", type=Path, metavar="RUN", help="a ParquetSink run_dir (its rows are the view `metrics`)")
    query.add_argument("sql", metavar="SQL", help='e.g. "SELECT name, max(step) FROM metrics GROUP BY name"')
    query.add_argument("--max-rows", type=int, default=100, help="rows printed at most (default 100)")
    args = parser.parse_args(argv)
    if args.command == "query":
        from bus import InvalidConfig

        from ._query import query_command

        try:
            return query_command(args.run, args.sql, max_rows=args.max_rows)
        except InvalidConfig as exc:
            parser.error(str(exc))
    if args.command == "replay":
        from bus import InvalidConfig

        from ._replay import replay_command

        try:
            return replay_command(args.sources, plan=args.plan, targets=args.to or ())
        except InvalidConfig as exc:
            parser.error(str(exc))
    if args.command == "aggregate":
        from bus import InvalidConfig

        from ._aggregate import aggregate
        from ._plan import load_plan

        try:
            ranks = None
            if args.ranks is not None or args.rank_deadline is not None:
                ranks = _rank_settings(load_plan(args.plan).ranks, args.ranks, args.rank_deadline)
            return aggregate(
                args.plan,
                url=args.redis,
                stream=args.stream,
                group=args.group,
                consumer=args.consumer,
                stats_path=args.stats,
                every=args.every,
                pipeline_every=None if args.no_pipeline_metrics else args.pipeline_every,
                ranks=ranks,
            )
        except InvalidConfig as exc:
            parser.error(str(exc))
    if args.command == "demo":
        from bus import InvalidConfig, delivery_failures

        from ._demo import run_demo

        try:
            stats = run_demo(args.out, steps=args.steps, plan=args.plan)
        except InvalidConfig as exc:
            parser.error(str(exc))
        return 1 if delivery_failures(stats) else 0
    return 2


def _rank_settings(plan: RankReduce | None, world_size: int | None, deadline: float | None) -> RankReduce:
    """The plan's `[ranks]` with the command line's world size and deadline over it."""
    from bus import InvalidConfig, RankReduce

    changes: dict[str, object] = {}
    if world_size is not None:
        changes["world_size"] = world_size
    if deadline is not None:
        changes["deadline"] = deadline
    if plan is None:
        if world_size is None:
            raise InvalidConfig("--rank-deadline needs --ranks WORLD_SIZE (or a plan's [ranks])")
        return RankReduce(**changes)  # type: ignore[arg-type]
    return RankReduce(**{**msgspec.structs.asdict(plan), **changes})


if __name__ == "__main__":
    raise SystemExit(main())
