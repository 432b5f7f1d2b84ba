"""torch.distributed set-up for runs started by ``torchrun`` (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextmanager
def distributed(device: torch.device) -> Iterator[int]:
    """Join the process group when launched by torchrun (yields the rank; 0 otherwise)."""
    if not launched_by_torchrun():
        yield 0
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    try:
        yield dist.get_rank()
    finally:
        dist.barrier()
        dist.destroy_process_group()
