"""Seed 003's NeMo callbacks (NeMo's old, pre-Lightning API), framework-free.

NeMo's trainer called each callback's hooks and kept the state they read (`step`, `epoch_num`,
the evaluated tensors). Here a plain training loop calls the same hooks and hands that state in:

    writer = SummaryWriter("runs/nemo")                 # producers.SummaryWriter: any sinks, off-thread
    callbacks = [
        SimpleLossLoggerCallback(["loss"], print_func=show, get_tb_values=tb_values, step_freq=25, tb_writer=writer),
        EvaluatorCallback(["eval_loss"], per_batch, at_end, eval_step=100, tb_writer=writer, wandb_name="n"),
        WandbCallback(["loss"], wandb_name="n", wandb_project="p", args=args, update_freq=25),
    ]
    for callback in callbacks:
        callback.on_action_start()
    for step, batch in enumerate(batches):
        loss = train_step(batch)
        for callback in callbacks:
            callback.on_iteration_end(step, {"loss": loss}, learning_rate=lr, evaluate=run_eval)
    for callback in callbacks:
        callback.on_action_end(step, evaluate=run_eval)

A tensor is named by a str, or by any object with `unique_name` (and `name`), as NeMo's
NMTensors are; `tensors` handed to a hook is {name: value} or the values in the callback's order.
`evaluate` is the evaluation pass: an iterable of per-batch {name: value} dicts, or a function
returning one (called only when an evaluation is due). W&B goes through `producers.wandb`: the
same W&B run as NeMo's `wandb.init(name, project)`, and every sink of its plan. Only rank 0 acts
(RANK unset or "0"), as in NeMo.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from bus import InvalidConfig

__all__ = ["EvaluatorCallback", "SimpleLossLoggerCallback", "WandbCallback"]

log = logging.getLogger("metricbus")

Tensors = Mapping[str, Any] | Sequence[Any]
Batches = Iterable[Mapping[str, Any]] | Callable[[], Iterable[Mapping[str, Any]]]


def _key(tensor: Any) -> str:
    """How a tensor is looked up among the values of a step: its unique name, or the str itself."""
    return tensor if isinstance(tensor, str) else str(getattr(tensor, "unique_name", getattr(tensor, "name", tensor)))


def _name(tensor: Any) -> str:
    """How a tensor is named in W&B: NeMo used `t.name`."""
    return tensor if isinstance(tensor, str) else str(getattr(tensor, "name", _key(tensor)))


class NemoCallback:
    """NeMo's ActionCallback: the hooks a loop calls and the state NeMo's trainer kept for them.

    Every hook takes what NeMo's trainer would have set before calling it, and ignores what it
    does not need, so a loop can call every callback's hooks the same way.
    """

    def __init__(self) -> None:
        self.step = 0
        self.epoch_num = 0
        self.learning_rate: float | None = None
        self.registered_tensors: dict[str, Any] = {}
        self._evaluate: Batches | None = None

    @property
    def global_rank(self) -> int | None:
        """This process's rank (RANK, as torchrun sets it), None outside distributed runs."""
        rank = os.environ.get("RANK")
        return None if rank is None else int(rank)

    @property
    def _rank_zero(self) -> bool:
        return self.global_rank in (None, 0)

    def _set(
        self, step: int | None, tensors: Tensors | None, learning_rate: float | None, evaluate: Batches | None
    ) -> None:
        if step is not None:
            self.step = step
        if learning_rate is not None:
            self.learning_rate = learning_rate
        if evaluate is not None:
            self._evaluate = evaluate
        if tensors is not None:
            self.registered_tensors = dict(tensors) if isinstance(tensors, Mapping) else self._by_name(tensors)

    def _by_name(self, values: Sequence[Any]) -> dict[str, Any]:
        keys = [_key(t) for t in self._tensors()]
        if len(values) != len(keys):
            raise InvalidConfig(f"{len(values)} values for the callback's {len(keys)} tensors {keys}")
        return dict(zip(keys, values, strict=True))

    def _tensors(self) -> Sequence[Any]:
        return ()

    # ---- the hooks: NeMo's names; each does nothing unless overridden ----

    def on_action_start(self) -> None:
        """Training starts."""

    def on_action_end(self, step: int | None = None, *, evaluate: Batches | None = None) -> None:
        """Training ended at `step`."""
        self._set(step, None, None, evaluate)

    def on_epoch_start(self, epoch: int | None = None) -> None:
        """An epoch starts."""
        if epoch is not None:
            self.epoch_num = epoch

    def on_epoch_end(self, epoch: int | None = None, step: int | None = None) -> None:
        """An epoch ended, at `step`."""
        if epoch is not None:
            self.epoch_num = epoch
        self._set(step, None, None, None)

    def on_iteration_start(self, step: int | None = None) -> None:
        """A training step starts."""
        self._set(step, None, None, None)

    def on_iteration_end(
        self,
        step: int,
        tensors: Tensors | None = None,
        *,
        learning_rate: float | None = None,
        evaluate: Batches | None = None,
    ) -> None:
        """A training step ended: its number, the values of the tensors, the learning rate, and
        the evaluation pass to run if one is due."""
        self._set(step, tensors, learning_rate, evaluate)


class SimpleLossLoggerCallback(NemoCallback):
    """NeMo's SimpleLossLoggerCallback: every `step_freq` steps (steps 0, N, 2N, ...), hands the
    values of `tensors` to `print_func(values)` and, with a `tb_writer`, logs `get_tb_values(values)`
    -> [(tag, value)] as scalars, calls `log_to_tb_func(tb_writer, values, step)` (a
    `producers.SummaryWriter`: images, histograms, text, ... through every sink) and logs
    `misc/step_time`; each epoch's end logs `misc/epoch` and `misc/epoch_time`; the end of
    training closes the writer, as NeMo did."""

    def __init__(
        self,
        tensors: Any,
        print_func: Callable[[list[Any]], Any] | None = None,
        get_tb_values: Callable[[list[Any]], Iterable[tuple[str, Any]]] | None = None,
        log_to_tb_func: Callable[[Any, list[Any], int], Any] | None = None,
        step_freq: int = 25,
        tb_writer: Any = None,
    ) -> None:
        super().__init__()
        if not isinstance(step_freq, int) or step_freq < 1:
            raise InvalidConfig(f"step_freq={step_freq!r}: must be an int >= 1")
        self._tensors_list = list(tensors) if isinstance(tensors, (list, tuple)) else [tensors]
        self._print_func = print_func
        self._get_tb_values = get_tb_values
        self._log_to_tb_func = log_to_tb_func
        self._step_freq = step_freq
        self._swriter = tb_writer
        self._start_time: float | None = None
        self._last_epoch_start: float | None = None
        self._last_iter_start: float | None = None

    @property
    def tensors(self) -> list[Any]:
        return self._tensors_list

    def _tensors(self) -> Sequence[Any]:
        return self._tensors_list

    def on_action_start(self) -> None:
        if self._rank_zero:
            log.info("Starting .....")
            self._start_time = time.time()

    def on_action_end(self, step: int | None = None, *, evaluate: Batches | None = None) -> None:
        super().on_action_end(step, evaluate=evaluate)
        if self._rank_zero:
            if self._swriter is not None:
                self._swriter.close()
            if self._start_time is not None:
                log.info("Done in %s", time.time() - self._start_time)

    def on_epoch_start(self, epoch: int | None = None) -> None:
        super().on_epoch_start(epoch)
        if self._rank_zero:
            log.info("Starting epoch %s", self.epoch_num)
            self._last_epoch_start = time.time()

    def on_epoch_end(self, epoch: int | None = None, step: int | None = None) -> None:
        super().on_epoch_end(epoch, step)
        if self._rank_zero and self._last_epoch_start is not None:
            elapsed = time.time() - self._last_epoch_start
            log.info("Finished epoch %s in %s", self.epoch_num, datetime.timedelta(seconds=elapsed))
            if self._swriter is not None:
                self._swriter.add_scalar("misc/epoch", self.epoch_num, self.step)
                self._swriter.add_scalar("misc/epoch_time", elapsed, self.step)

    def on_iteration_start(self, step: int | None = None) -> None:
        super().on_iteration_start(step)
        if self._rank_zero:
            self._last_iter_start = time.time()

    def on_iteration_end(
        self,
        step: int,
        tensors: Tensors | None = None,
        *,
        learning_rate: float | None = None,
        evaluate: Batches | None = None,
    ) -> None:
        super().on_iteration_end(step, tensors, learning_rate=learning_rate, evaluate=evaluate)
        if not self._rank_zero or self.step % self._step_freq != 0:
            return
        values = [self.registered_tensors[_key(t)] for t in self._tensors_list]
        log.info("Step: %s", self.step)
        if self._print_func is not None:
            self._print_func(values)
        sys.stdout.flush()
        if self._swriter is not None:
            if self._get_tb_values is not None:
                for tag, value in self._get_tb_values(values):
                    self._swriter.add_scalar(tag, value, self.step)
            if self._log_to_tb_func is not None:
                self._log_to_tb_func(self._swriter, values, self.step)
            if self._last_iter_start is not None:  # the loop called on_iteration_start
                self._swriter.add_scalar("misc/step_time", time.time() - self._last_iter_start, self.step)


class _WandbRun:
    """The W&B run NeMo's callbacks share: `wandb.init(name, project)` unless a run is active."""

    @staticmethod
    def start(name: str | None, project: str | None, args: Any = None) -> bool:
        from producers import wandb

        if wandb.run is not None:
            log.info("Re-using wandb session")
            return True
        wandb.init(name=name, project=project)
        if args is not None:
            wandb.config.update(args)
        return True

    @staticmethod
    def log(values: Mapping[str, Any], step: int) -> None:
        from producers import wandb

        wandb.log(dict(values), step=step)


class EvaluatorCallback(NemoCallback):
    """NeMo's EvaluatorCallback: every `eval_step` steps (steps 0, N, 2N, ...) and once more at
    the end of training, runs the evaluation pass: the global dict is cleared; for each batch,
    `user_iter_callback(values_dict, global_var_dict)` with `values_dict` = {tensor name: [value],
    "IS_FROM_DIST_EVAL": False}; then `user_epochs_done_callback(global_var_dict)`, whose
    returned {tag: value} is logged: with `tb_writer`, by `tb_writer_func(tb_writer, returned,
    step)` if given, else as scalars; with `wandb_name` or `wandb_project`, to the W&B run at
    `step` (started at `on_action_start`, as NeMo did, or the one already active)."""

    def __init__(
        self,
        eval_tensors: Any,
        user_iter_callback: Callable[[dict[str, Any], dict[str, Any]], Any] | None,
        user_epochs_done_callback: Callable[[dict[str, Any]], Mapping[str, Any] | None] | None,
        tb_writer: Any = None,
        tb_writer_func: Callable[[Any, Any, int], Any] | None = None,
        eval_step: int | None = 1,
        eval_epoch: int | None = None,
        wandb_name: str | None = None,
        wandb_project: str | None = None,
    ) -> None:
        if eval_step is None and eval_epoch is None:
            raise InvalidConfig(f"Either eval_step or eval_epoch must be set, got {eval_step} and {eval_epoch}")
        if (eval_step is not None and eval_step <= 0) or (eval_epoch is not None and eval_epoch <= 0):
            raise InvalidConfig(f"eval_step and eval_epoch must be > 0, got {eval_step} and {eval_epoch}")
        super().__init__()
        self._eval_tensors = list(eval_tensors) if isinstance(eval_tensors, (list, tuple)) else [eval_tensors]
        self.user_iter_callback = user_iter_callback
        self.user_done_callback = user_epochs_done_callback
        self._swriter = tb_writer
        self._tb_writer_func = tb_writer_func
        self._eval_frequency = eval_step
        self._global_var_dict: dict[str, Any] = {}
        self._wandb_name = wandb_name
        self._wandb_project = wandb_project
        self._wandb = False

    @property
    def eval_tensors(self) -> list[Any]:
        return self._eval_tensors

    @property
    def tb_writer_func(self) -> Callable[[Any, Any, int], Any] | None:
        return self._tb_writer_func

    @property
    def swriter(self) -> Any:
        return self._swriter

    def clear_global_var_dict(self) -> None:
        self._global_var_dict = {}

    def on_action_start(self) -> None:
        if self._rank_zero and (self._wandb_name is not None or self._wandb_project is not None):
            self._wandb = _WandbRun.start(self._wandb_name, self._wandb_project)

    def on_iteration_end(
        self,
        step: int,
        tensors: Tensors | None = None,
        *,
        learning_rate: float | None = None,
        evaluate: Batches | None = None,
    ) -> None:
        super().on_iteration_end(step, tensors, learning_rate=learning_rate, evaluate=evaluate)
        if self._eval_frequency is not None and self.step % self._eval_frequency == 0:
            self._run_evaluation("Doing Evaluation")

    def on_action_end(self, step: int | None = None, *, evaluate: Batches | None = None) -> None:
        super().on_action_end(step, evaluate=evaluate)
        self._run_evaluation("Final Evaluation")

    def _run_evaluation(self, what: str) -> None:
        if self._evaluate is None:
            raise InvalidConfig(
                "EvaluatorCallback needs the evaluation pass: hook(..., evaluate=batches or a function)"
            )
        if self._rank_zero:
            log.info("%s %s", what, "." * 30)
        start = time.time()
        batches = self._evaluate() if callable(self._evaluate) else self._evaluate
        self.evaluate(batches, self.step)
        if self._rank_zero:
            log.info("Evaluation time: %s seconds", time.time() - start)

    def evaluate(self, batches: Iterable[Mapping[str, Any]], step: int) -> None:
        """One evaluation pass over `batches` ({tensor name: value} per batch), logged at `step`."""
        self.clear_global_var_dict()
        keys = [_key(t) for t in self._eval_tensors]
        for batch in batches:
            values_dict: dict[str, Any] = {"IS_FROM_DIST_EVAL": False}
            for key in keys:
                if key not in batch:
                    log.info("WARNING: Tensor %s was not found during eval", key)
                    continue
                values_dict[key] = [batch[key]]
            if self.user_iter_callback is not None and self._rank_zero:
                self.user_iter_callback(values_dict, self._global_var_dict)
        if self.user_done_callback is None or not self._rank_zero:
            return
        to_log = self.user_done_callback(self._global_var_dict)
        if to_log is None:
            return
        if self._swriter is not None:
            if self._tb_writer_func is not None:
                self._tb_writer_func(self._swriter, to_log, step)
            else:
                for tag, value in to_log.items():
                    self._swriter.add_scalar(tag, value, step)
        if self._wandb:
            _WandbRun.log(to_log, step)


class WandbCallback(NemoCallback):
    """NeMo's WandbCallback: at the start of training, `wandb.init(name=wandb_name,
    project=wandb_project)` (or the run already active) with `args` (argparse flags) as its
    config; every `update_freq` steps (steps 0, N, ...), the values of `train_tensors` by their
    names and the learning rate as "LR" at that step; at each epoch's end, "epoch" and
    "epoch_time". Through `producers.wandb`: the W&B run and every sink of its plan."""

    def __init__(
        self,
        train_tensors: Any = (),
        wandb_name: str | None = None,
        wandb_project: str | None = None,
        args: Any = None,
        update_freq: int = 25,
    ) -> None:
        super().__init__()
        self._train_tensors = list(train_tensors) if isinstance(train_tensors, (list, tuple)) else [train_tensors]
        self._name = wandb_name
        self._project = wandb_project
        self._args = args
        self._update_freq = update_freq
        self._last_epoch_start: float | None = None

    def _tensors(self) -> Sequence[Any]:
        return self._train_tensors

    def on_action_start(self) -> None:
        if self._rank_zero:
            _WandbRun.start(self._name, self._project, self._args)

    def on_iteration_end(
        self,
        step: int,
        tensors: Tensors | None = None,
        *,
        learning_rate: float | None = None,
        evaluate: Batches | None = None,
    ) -> None:
        super().on_iteration_end(step, tensors, learning_rate=learning_rate, evaluate=evaluate)
        if self._rank_zero and self._update_freq > 0 and self.step % self._update_freq == 0:
            logged = {_name(t): self.registered_tensors[_key(t)] for t in self._train_tensors}
            if self.learning_rate is not None:  # NeMo always logged it; W&B takes no None here
                logged["LR"] = self.learning_rate
            _WandbRun.log(logged, self.step)

    def on_epoch_start(self, epoch: int | None = None) -> None:
        super().on_epoch_start(epoch)
        if self._rank_zero:
            self._last_epoch_start = time.time()

    def on_epoch_end(self, epoch: int | None = None, step: int | None = None) -> None:
        super().on_epoch_end(epoch, step)
        if self._rank_zero and self._last_epoch_start is not None:
            _WandbRun.log({"epoch": self.epoch_num, "epoch_time": time.time() - self._last_epoch_start}, self.step)
