"""torch.distributed from torchrun's environment (gloo on CPU, nccl on CUDA), and sharded extraction.

Without torchrun (no WORLD_SIZE in the environment) everything runs as one process, unchanged.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence

import torch
import torch.distributed as dist
from tqdm.auto import tqdm


@dataclass
class DistContext:
    """Rank, world size and the device this process trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op in one process)."""
        if self.distributed:
            dist.barrier()

    def all_reduce_mean(self, value: float) -> float:
        """Mean of a float over ranks."""
        if not self.distributed:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    @property
    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Overwrite every rank's parameters and buffers with rank 0's (one starting point for all ranks)."""
        if not self.distributed:
            return
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                if t.numel() == 0:
                    continue
                buf = t.detach().to(self._comm_device).contiguous()
                dist.broadcast(buf, src=0)
                t.copy_(buf.to(t.device))

    def gather_rows(self, rows: torch.Tensor) -> List[torch.Tensor]:
        """Every rank's equally shaped `rows`, in rank order."""
        if not self.distributed:
            return [rows]
        local = rows.to(self._comm_device).contiguous()
        out = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(out, local)
        return [t.to(rows.device) for t in out]


def resolve_device(device: Optional[str], local_rank: int = 0) -> torch.device:
    """'auto'/None -> this rank's CUDA device when there is one, else the CPU; an explicit device is checked."""
    if device in (None, "auto"):
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for but CUDA is not available: pass --device cpu")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


def init_distributed(device: Optional[str] = None) -> DistContext:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def shutdown(ctx: DistContext, *holders: Any) -> None:
    """Leave the process group (if this process joined one), after the holders release it.

    Each holder with a `close()` (a Trainer: its DistributedDataParallel wrapper) is closed first; a DDP module
    still alive after `destroy_process_group` is freed during interpreter exit, where gloo aborts the process.
    """
    for holder in holders:
        if holder is not None and hasattr(holder, "close"):
            holder.close()
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def sharded_apply(
    fn: Callable[[Sequence[int]], torch.Tensor],
    indices: Sequence[int],
    ctx: DistContext,
    batch_size: int,
    desc: str = "",
    progress: bool = True,
) -> torch.Tensor:
    """`fn` over `indices` in batches, each rank taking every world_size-th item; rows gathered in input order.

    `fn(batch_indices) -> (len(batch), ...)` CPU tensor. Every rank returns the full result.
    """
    indices = list(indices)
    if not indices:
        raise ValueError("sharded_apply needs at least one index")
    chunk = batch_size * ctx.world_size
    parts: List[torch.Tensor] = []
    bar = tqdm(total=len(indices), desc=desc, unit="img", disable=not (progress and ctx.is_main), leave=False)
    for start in range(0, len(indices), chunk):
        block = indices[start : start + chunk]
        per_rank = math.ceil(len(block) / ctx.world_size)
        padded = block + [block[-1]] * (per_rank * ctx.world_size - len(block))
        mine = fn(padded[ctx.rank :: ctx.world_size])
        gathered = ctx.gather_rows(mine)
        rows = torch.stack(gathered, dim=1).flatten(0, 1)  # interleave back: item j came from rank j % world
        parts.append(rows[: len(block)])
        bar.update(len(block))
    bar.close()
    return torch.cat(parts)
