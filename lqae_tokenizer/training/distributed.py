"""Process-group setup for torchrun, and the few collectives the trainer needs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistributedContext:
    """Where this process sits: rank, world size and its device (one GPU per process, or the CPU)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_environment(cls) -> "DistributedContext":
        """Join the process group torchrun describes (``WORLD_SIZE``...); single process otherwise.

        NCCL on CUDA, gloo on the CPU.
        """
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        if world > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        rank = dist.get_rank() if world > 1 else 0
        return cls(rank=rank, world_size=world, local_rank=local, device=device)

    def any(self, flag: bool) -> bool:
        """True when ``flag`` is true on any rank (every rank gets the same answer)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def sum(self, values: list[float]) -> list[float]:
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def sum_tensor(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the ranks, as a new tensor (every rank gets the same sum)."""
        total = values.clone()
        if self.enabled:
            moved = total.to(self.device)
            dist.all_reduce(moved)
            total = moved.to(values.device)
        return total

    def broadcast_(self, tensor: torch.Tensor) -> None:
        """Overwrite ``tensor`` on every rank with rank 0's, in place."""
        if self.enabled:
            dist.broadcast(tensor, src=0)

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (on every rank)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
