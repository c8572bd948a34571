"""The `metricbus` command."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="metricbus", description="metricbus command-line tools")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a simulated training loop through every sink")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="where the files go (default runs/demo)")
    demo.add_argument("--steps", type=int, default=2_000)
    demo.add_argument("--plan", type=Path, help="a plan file (TOML) declaring the sinks to use instead")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from bus import InvalidConfig

        from ._demo import run_demo

        try:
            stats = run_demo(args.out, steps=args.steps, plan=args.plan)
        except InvalidConfig as exc:
            parser.error(str(exc))
        return 0 if all(s.balanced and not s.dropped for s in stats.values()) else 1
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
