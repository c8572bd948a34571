"""Child processes for tests/test_exit_paths.py: a training script that ends in one of the ways
real scripts end (falls off the end, sys.exit, an exception, a signal, a fork, a hung sink).

    python tests/exit_child.py MODE OUT [options]

Every Metrics event it logs is {"loss": ..., "acc": ...} at consecutive steps from 0, so the test
can check on disk that the steps form a gap-free run from 0 of the expected length. Lines on
stdout (flushed at once) tell the test what the child did:

    logged N             N events were logged (the scripted modes, before they end)
    ready N              the loop has logged N events and keeps going (the signal modes)
    at N T               progress: N events logged by time.monotonic() == T
    done logging T       the hung-sink modes are done logging and start closing at T
    stats {...}          the hung sink's SinkStats from the DeliveryError raised by close
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# A shell starts background jobs with SIGINT ignored and children inherit that; Ctrl-C in a
# terminal means Python's default handler, so restore it before anything else.
signal.signal(signal.SIGINT, signal.default_int_handler)

import anyio  # noqa: E402
import msgspec  # noqa: E402

from bus import BusStateError, DeliveryError, Event, MetricBus, Metrics, Sink  # noqa: E402
from producers import MetricLogger  # noqa: E402
from sinks import CsvSink, JsonlSink, TensorBoardSink  # noqa: E402


def say(*parts: object) -> None:
    print(*parts, flush=True)


def values(step: int) -> dict[str, float]:
    return {"loss": 1.0 / (step + 1), "acc": step / 1e6}


def file_sinks(log: MetricLogger, args: argparse.Namespace) -> None:
    config = {"max_interval": args.interval, "max_batch": args.max_batch}
    log.add_sink(CsvSink(args.out / "m.csv"), **config)
    log.add_sink(JsonlSink(args.out / "m.jsonl"), **config)
    log.add_sink(TensorBoardSink(args.out / "tb"), **config)


# ---- scripts that end by themselves: fall off the end, sys.exit(3), an uncaught exception ----


def scripted(args: argparse.Namespace) -> None:
    log = MetricLogger(shutdown_timeout=args.shutdown_timeout)  # no `with`, no close()
    file_sinks(log, args)
    for step in range(args.n):
        log.scalars(values(step), step=step)
    say("logged", args.n)
    if args.mode == "sys_exit":
        sys.exit(3)
    if args.mode == "raise":
        raise RuntimeError("boom in the training loop")
    # "fall_off": the script simply ends


# ---- a loop that logs until a signal ends it ----


def loop(args: argparse.Namespace) -> None:
    sigterm_seen = False

    def trainer_sigterm(signum: int, frame: object) -> None:  # what SLURM-aware trainers do
        nonlocal sigterm_seen
        sigterm_seen = True

    if args.trainer_sigterm:  # installed first, so MetricLogger leaves SIGTERM alone
        signal.signal(signal.SIGTERM, trainer_sigterm)
    log = MetricLogger(shutdown_timeout=args.shutdown_timeout)  # no `with`, no close()
    file_sinks(log, args)
    logged = 0
    reported = False
    deadline = time.monotonic() + 50.0  # never outlive a broken test
    try:
        while time.monotonic() < deadline:
            log.scalars(values(logged), step=logged)
            logged += 1
            if logged % args.pace == 0:
                time.sleep(0.001)  # a training step takes time: a few thousand events per second
            if logged % args.every == 0:
                say("at", logged, time.monotonic())
            if logged == args.n:
                say("ready", logged)
            if sigterm_seen and not reported:
                reported = True
                say("sigterm seen at", logged, time.monotonic())
    finally:
        # SystemExit (SIGTERM) and KeyboardInterrupt (SIGINT) unwind this block: record how many
        # events were logged, after the last one. A signal that lands inside the logging call,
        # after its append, makes the true count logged + 1.
        tmp = args.out / "count.tmp"
        tmp.write_text(str(logged))
        tmp.rename(args.out / "count")


# ---- fork after logging ----


def record(path: Path, op: str, fn: Any) -> None:
    """Run `fn` in the forked child; append what happened (and how long it took) to `path`."""
    with open(path, "a") as f:
        f.write(json.dumps({"op": op, "outcome": "started"}) + "\n")
    t0 = time.monotonic()
    try:
        fn()
        outcome = "ok"
    except BusStateError as exc:
        outcome = f"BusStateError: {exc}"
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    with open(path, "a") as f:
        f.write(json.dumps({"op": op, "outcome": outcome, "seconds": time.monotonic() - t0}) + "\n")


def in_forked_child(log: MetricLogger, out: Path, n: int, action: str) -> None:
    path = out / "child.jsonl"
    record(path, "scalars", lambda: log.scalars({"child": 1.0}, step=n + 1_000))
    if action == "flush":
        record(path, "flush", log.flush)
    elif action == "close":
        record(path, "close", log.close)
    # action "exit": leave it to the interpreter's exit (atexit) as a script would


def fork(args: argparse.Namespace) -> None:
    log = MetricLogger(shutdown_timeout=args.shutdown_timeout)
    file_sinks(log, args)
    for step in range(args.n):
        log.scalars(values(step), step=step)  # some may still be pending in the logger at the fork
    t0 = time.monotonic()
    if args.how == "os":
        pid = os.fork()
        if pid == 0:
            in_forked_child(log, args.out, args.n, args.action)
            sys.exit(0)  # the ordinary way out: atexit handlers run in the child too

        def exited() -> int | None:
            done, status = os.waitpid(pid, os.WNOHANG)
            return os.waitstatus_to_exitcode(status) if done else None

        def kill() -> None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    else:
        ctx = multiprocessing.get_context("fork")
        proc = ctx.Process(target=in_forked_child, args=(log, args.out, args.n, args.action))
        proc.start()

        def exited() -> int | None:
            return proc.exitcode

        def kill() -> None:
            proc.kill()
            proc.join()

    code = None
    while time.monotonic() < t0 + args.child_timeout and (code := exited()) is None:
        time.sleep(0.01)
    seconds = time.monotonic() - t0
    if code is None:
        kill()
    say("child", json.dumps({"exitcode": code, "seconds": seconds, "hung": code is None}))
    for step in range(args.n, 2 * args.n):  # the parent goes on logging after its child is gone
        log.scalars(values(step), step=step)
    log.close()
    say("logged", 2 * args.n)


# ---- a hung sink at shutdown ----


class HungSink(Sink):
    """Hangs for good in one method (`where`), in one way (`how`)."""

    def __init__(self, where: str, how: str) -> None:
        self.where = where
        self.how = how

    @property
    def name(self) -> str:
        return "hung"

    async def _hang(self, where: str) -> None:
        if where != self.where:
            return
        if self.how == "thread":
            await anyio.to_thread.run_sync(threading.Event().wait)
        elif self.how == "executor":
            await asyncio.get_running_loop().run_in_executor(None, threading.Event().wait)
        else:  # "blocking": blocks the event loop itself
            time.sleep(3600)

    async def open(self) -> None:
        await self._hang("open")

    async def write_batch(self, events: Sequence[Event]) -> None:
        await self._hang("write_batch")

    async def flush(self) -> None:
        await self._hang("flush")

    async def close(self) -> None:
        await self._hang("close")


def report(exc: DeliveryError) -> None:
    say("stats", json.dumps(msgspec.to_builtins(exc.stats.get("hung"))))
    say("error", json.dumps(str(exc)))


def hung_logger(args: argparse.Namespace) -> None:
    where, how = args.hang.split(":")
    log = MetricLogger(shutdown_timeout=args.shutdown_timeout)
    log.add_sink(JsonlSink(args.out / "m.jsonl"))
    log.add_sink(HungSink(where, how))
    half = args.n // 2
    for step in range(half):
        log.scalars(values(step), step=step)
    if where == "flush":  # a flush (at a checkpoint, say) is what calls Sink.flush
        try:
            log.flush(timeout=1.0)
            say("flush returned")
        except Exception as exc:
            say("flush raised", type(exc).__name__)
    for step in range(half, args.n):
        log.scalars(values(step), step=step)
    say("done logging", time.monotonic())
    try:
        log.close()
        say("close returned")
    except DeliveryError as exc:
        report(exc)


def hung_async(args: argparse.Namespace) -> None:
    where, how = args.hang.split(":")

    async def main() -> None:
        try:
            async with MetricBus(shutdown_timeout=args.shutdown_timeout) as bus:
                bus.add_sink(JsonlSink(args.out / "m.jsonl"))
                bus.add_sink(HungSink(where, how))
                await bus.publish_many([Metrics(values(step), step) for step in range(args.n)])
                say("done logging", time.monotonic())
        except DeliveryError as exc:
            report(exc)

    anyio.run(main)
    say("anyio.run returned")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["fall_off", "sys_exit", "raise", "loop", "fork", "hung_logger", "hung_async"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--interval", type=float, default=1.0, help="max_interval of every file sink")
    parser.add_argument("--max-batch", type=int, default=1_000, help="max_batch of every file sink")
    parser.add_argument("--shutdown-timeout", type=float, default=10.0)
    parser.add_argument("--every", type=int, default=100, help="loop: a progress line every so many events")
    parser.add_argument("--pace", type=int, default=10, help="loop: sleep 1 ms after every so many events")
    parser.add_argument("--trainer-sigterm", action="store_true", help="loop: the script handles SIGTERM itself")
    parser.add_argument("--how", choices=["os", "mp"], default="os", help="fork: os.fork or multiprocessing")
    parser.add_argument("--action", choices=["exit", "flush", "close"], default="exit", help="fork: the child's last")
    parser.add_argument("--child-timeout", type=float, default=6.0, help="fork: the parent kills a child this late")
    parser.add_argument("--hang", default="write_batch:thread", help="hung_*: METHOD:HOW (thread|executor|blocking)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.mode in ("fall_off", "sys_exit", "raise"):
        scripted(args)
    elif args.mode == "loop":
        loop(args)
    elif args.mode == "fork":
        fork(args)
    elif args.mode == "hung_logger":
        hung_logger(args)
    else:
        hung_async(args)


if __name__ == "__main__":
    main(sys.argv[1:])
