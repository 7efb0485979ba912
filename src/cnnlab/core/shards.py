"""Work shared out over processes started by torchrun (one node or many, SLURM included): each process takes every
world-th chunk of a sorted list (no padded duplicates, unlike DistributedSampler's default) and commits each chunk
atomically, so a rerun after a crash or a preemption skips what is done. Rank 0 assembles once all have finished."""
from __future__ import annotations

import os

import torch


def distributed(device: str | torch.device = "cpu") -> tuple[int, int]:
    """(rank, world size): torchrun's environment starts a process group (gloo on CPU, nccl on CUDA); alone: (0, 1)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():  # torchrun's contract
        dist.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def chunk_ranges(n: int, size: int) -> list[range]:
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def mine(items: list, rank: int, world: int) -> list:
    """This process's share: every world-th item, starting at its rank."""
    return items[rank::world]
