"""SummaryWriter: a drop-in for tensorboardX's / torch.utils.tensorboard's writer, on a bus.

Change the import and a script's scalars, histograms, text and hparams go through metricbus: by
default to a TensorBoardSink in `logdir` (in its worker process), or to any sinks of a
MetricLogger you pass. Calls return at once. Media and graph methods raise NotImplementedError
naming an alternative, rather than silently doing nothing.
"""

from __future__ import annotations

import re
import socket
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

from bus import Histogram, Hparams, Origin, Scalar, Text

from ._logger import MetricLogger

__all__ = ["SummaryWriter"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def _default_logdir(comment: str) -> str:
    stamp = datetime.now().strftime("%b%d_%H-%M-%S")
    return str(Path("runs") / f"{stamp}_{socket.gethostname()}{comment}")


def _run_part(text: str) -> str:
    """A name usable as an origin part (a run directory): unsafe characters become '_'."""
    cleaned = _UNSAFE.sub("_", text)[:128]
    return cleaned if cleaned not in ("", ".", "..") else "_"


def _as_list(values: Any) -> Any:
    """numpy arrays, torch tensors (moved to the CPU) and sequences, as something Histogram takes."""
    detach = getattr(values, "detach", None)
    if detach is not None:
        values = detach().cpu().numpy()
    return values


class SummaryWriter:
    """The tensorboardX / torch.utils.tensorboard SummaryWriter API, publishing to metricbus.

    Honoured: logdir/log_dir, comment (default logdir naming), filename_suffix. Accepted and
    ignored, because the bus batches and flushes on its own schedule: purge_step, max_queue,
    flush_secs, write_to_disk. `logger=` sends everything to an existing MetricLogger instead
    (any sinks; it is not closed by `close()`).

    add_scalars(main_tag, {tag: value}) writes, as tensorboardX does, the scalar `main_tag` in
    the run `main_tag/tag`, here as events with origin (site=main_tag, node=tag); unlike
    tensorboardX it opens no writer per key and keeps no values in memory.
    """

    def __init__(
        self,
        logdir: str | Path | None = None,
        comment: str = "",
        purge_step: int | None = None,
        max_queue: int = 10,
        flush_secs: int = 120,
        filename_suffix: str = "",
        write_to_disk: bool = True,
        log_dir: str | Path | None = None,
        *,
        logger: MetricLogger | None = None,
        **kwargs: Any,
    ) -> None:
        self.logdir = str(log_dir or logdir or _default_logdir(comment))
        self._owned = logger is None
        if logger is None:
            from sinks import TensorBoardSink

            logger = MetricLogger(sinks=[TensorBoardSink(self.logdir, filename_suffix=filename_suffix)])
        self._log = logger

    def get_logdir(self) -> str:
        return self.logdir

    def add_scalar(
        self,
        tag: str,
        scalar_value: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """Log one value; `global_step=None` logs at step 0, as tensorboardX does."""
        self._log.scalar(tag, scalar_value, 0 if global_step is None else global_step, wall_time=walltime)

    def add_scalars(
        self,
        main_tag: str,
        tag_scalar_dict: dict[str, Any],
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Log several series under one chart: scalar `main_tag` in run `main_tag/<tag>` each."""
        step = 0 if global_step is None else global_step
        site = _run_part(main_tag)
        for tag, value in tag_scalar_dict.items():
            origin = Origin(site=site, node=_run_part(tag))
            if walltime is None:
                self._log.publish(Scalar(main_tag, value, step, origin=origin))
            else:
                self._log.publish(Scalar(main_tag, value, step, wall_time=walltime, origin=origin))

    def add_histogram(
        self,
        tag: str,
        values: Any,
        global_step: int | None = None,
        bins: Any = "tensorflow",
        walltime: float | None = None,
        max_bins: int | None = None,
    ) -> None:
        """Log a distribution. The TensorBoard sink bins it (`histogram_bins`); `bins` is ignored."""
        step = 0 if global_step is None else global_step
        if walltime is None:
            self._log.publish(Histogram(tag, step, values=_as_list(values)))
        else:
            self._log.publish(Histogram(tag, step, values=_as_list(values), wall_time=walltime))

    def add_text(
        self, tag: str, text_string: str, global_step: int | None = None, walltime: float | None = None
    ) -> None:
        step = 0 if global_step is None else global_step
        if walltime is None:
            self._log.publish(Text(tag, text_string, step))
        else:
            self._log.publish(Text(tag, text_string, step, wall_time=walltime))

    def add_hparams(
        self,
        hparam_dict: dict[str, Any],
        metric_dict: dict[str, float],
        hparam_domain_discrete: Any = None,
        run_name: str | None = None,
        global_step: int | None = None,
        name: str | None = None,
    ) -> None:
        """The HPARAMS tab entry for this run (tensorboardX puts it in a separate run; we keep it
        in the writer's own run, next to the metrics it describes)."""
        step = 0 if global_step is None else global_step
        self._log.publish(Hparams(dict(hparam_dict), dict(metric_dict), step=step))

    def flush(self) -> None:
        """Block until everything logged so far is written."""
        self._log.flush()

    def close(self) -> None:
        """Flush; close the underlying logger if this writer created it."""
        if self._owned:
            self._log.close()
        else:
            self._log.flush()

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- not supported: fail loudly, say what to use instead ----

    def _unsupported(self, method: str, alternative: str) -> NoReturn:
        raise NotImplementedError(f"SummaryWriter.{method} is not supported by metricbus; {alternative}")

    def add_image(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._unsupported("add_image", "log images with tensorboardX.SummaryWriter or wandb.Image directly")

    def add_images(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._unsupported("add_images", "log images with tensorboardX.SummaryWriter or wandb.Image directly")

    def add_figure(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._unsupported("add_figure", "save the figure, or use tensorboardX.SummaryWriter.add_figure")

    def add_video(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._unsupported("add_video", "use tensorboardX.SummaryWriter.add_video or wandb.Video")

    def add_audio(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._unsupported("add_audio", "use tensorboardX.SummaryWriter.add_audio or wandb.Audio")

    def add_graph(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._unsupported("add_graph", "use torch.utils.tensorboard.SummaryWriter.add_graph once, outside the loop")

    def add_embedding(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._unsupported("add_embedding", "use tensorboardX.SummaryWriter.add_embedding")

    def add_pr_curve(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._unsupported("add_pr_curve", "log precision/recall as scalars, or use tensorboardX directly")

    def add_mesh(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._unsupported("add_mesh", "use tensorboardX.SummaryWriter.add_mesh")

    def add_custom_scalars(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._unsupported("add_custom_scalars", "use tensorboardX.SummaryWriter.add_custom_scalars")
