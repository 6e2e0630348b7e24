"""Processes working together under torchrun (gloo on CPU, nccl on GPU): data-parallel training (train/harness.py)
and sharded certification (runs/certify.py).

In training every rank draws the same global batch order (same seed) and trains on its share of each global batch;
gradients are summed across ranks after each rank scaled its loss by (its batch share / global batch), so one step
equals the single-process step on the global batch (up to floating-point summation order; BatchNorm statistics are
per rank, as in standard data parallelism).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) when not launched by torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device: torch.device) -> tuple[int, int]:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1); else single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over ranks (in place; a no-op in a single process)."""
    if world()[1] > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def sync_gradients(model: torch.nn.Module) -> None:
    """Sum every parameter gradient over ranks."""
    if world()[1] == 1:
        return
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def broadcast_parameters(model: torch.nn.Module) -> None:
    """Start every rank from rank 0's weights and buffers."""
    if world()[1] == 1:
        return
    for t in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(t.data, src=0)


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()
