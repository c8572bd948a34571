"""FileWriter: what `SummaryWriter.file_writer` is while the writer is open.

tensorboardX scripts and tests reach the run's event file through `writer.file_writer`: it is
None once the writer is closed, and `flush()`/`close()` on it act on the run. Here the bus and
its TensorBoard sink own the files, so this handle only forwards to the writer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._summary_writer import SummaryWriter

__all__ = ["FileWriter"]


class FileWriter:
    """The open writer's run: its directory, and flush/close as tensorboardX's FileWriter has them."""

    def __init__(self, writer: SummaryWriter) -> None:
        self._writer = writer

    def get_logdir(self) -> str:
        """The directory of the run's event files."""
        return self._writer.logdir

    def flush(self) -> None:
        """Block until everything logged so far is written (nothing to do once closed)."""
        self._writer.flush()

    def close(self) -> None:
        """Close the writer this belongs to (its `file_writer` becomes None)."""
        self._writer.close()

    def reopen(self) -> None:
        """Nothing to do: a closed writer reopens itself at its next call, as tensorboardX's does."""
