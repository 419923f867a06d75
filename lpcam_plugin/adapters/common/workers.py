"""Process and worker helpers of the adapters: the device of a worker, logging in spawned
workers, the process group's writer, and waiting for what another worker produces."""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional, Tuple, TypeVar

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

WAIT_POLL_S = 0.5

T = TypeVar("T")


def resolve_device(spec: str, process_id: int = 0) -> torch.device:
    """``"auto"``: ``cuda:<process_id mod #GPUs>`` when CUDA is available, else CPU; ``"cuda"``: the same
    without the CPU fallback; anything else is passed to ``torch.device``."""
    if spec in ("auto", "cuda"):
        if torch.cuda.is_available():
            return torch.device("cuda", process_id % torch.cuda.device_count())
        if spec == "cuda":
            raise ValueError("lpcam_device='cuda' but CUDA is not available")
        return torch.device("cpu")
    return torch.device(spec)


def distributed() -> bool:
    """Whether a default process group is initialised (a ``torchrun`` launch joined)."""
    return dist.is_available() and dist.is_initialized()


def is_writer() -> bool:
    """Whether this process writes shared files: rank 0, or the only process."""
    return not distributed() or dist.get_rank() == 0


def configure_worker_logging() -> None:
    """Spawned workers start with unconfigured logging; show this package's INFO lines there."""
    package_logger = logging.getLogger("lpcam_plugin")
    if not logging.getLogger().handlers and not package_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s [lpcam pid %(process)d] %(levelname)s %(message)s"))
        package_logger.addHandler(handler)
        package_logger.setLevel(logging.INFO)


def wait_until(attempt: Callable[[], Tuple[Optional[T], str]], what: str) -> T:
    """Poll ``attempt() -> (value or None, reason)`` until it gives a value (another worker is
    producing ``what``); logs the first reason once."""
    value, reason = attempt()
    if value is None:
        logger.info("waiting for worker 0 to produce %s (%s)", what, reason)
    while value is None:
        time.sleep(WAIT_POLL_S)
        value, reason = attempt()
    return value


__all__ = ["configure_worker_logging", "distributed", "is_writer", "resolve_device", "wait_until"]
