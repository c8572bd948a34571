"""Built-in sinks. Heavy libraries (tensorboardX, wandb) are imported only by their own sink."""

from bus import Sink

from ._memory import MemorySink

__all__ = ["MemorySink", "Sink"]
