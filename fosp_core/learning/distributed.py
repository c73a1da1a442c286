"""Data-parallel pretraining: ``torchrun --nproc_per_node=N -m fosp.cli pretrain ...``.

Every rank samples its own batches (replay seed + rank) and all ranks keep identical weights.
``torch.nn.parallel.DistributedDataParallel`` fits one forward/backward per module; a FOSP step
has four optimisers (world model, critics, actor, REF) with losses that share modules. So the
synchronisation is explicit, with the same semantics:

- before every optimiser step, gradients are averaged over ranks (``all_reduce``), so every
  rank applies the same update (DDP does exactly this, bucketed);
- after every train step, buffers that come from batch statistics (the Lagrange multiplier, the
  return-normalisation ranges) are averaged, so they do not drift apart either;
- at the start, rank 0's weights are broadcast; at the end, ranks compare weight checksums and
  refuse to report success if they differ.

The backend is NCCL on GPUs and gloo on CPUs (what the tests run here, with 2 processes).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def init(device: str) -> bool:
    """Join the process group torchrun describes; False when not launched by torchrun."""
    if world_size() <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if device == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def average_gradients(module: nn.Module) -> None:
    size = float(dist.get_world_size())
    for param in module.parameters():
        if param.grad is not None:
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
            param.grad /= size


def average_buffers(module: nn.Module) -> None:
    size = float(dist.get_world_size())
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer /= size


def broadcast_from_rank0(module: nn.Module) -> None:
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def weight_checksums(module: nn.Module) -> list[float]:
    """Every rank's sum of all weights, gathered: equal values mean the replicas agree."""
    total = torch.zeros(1, dtype=torch.float64)
    for param in module.parameters():
        total += param.detach().double().sum().cpu()
    gathered = [torch.zeros(1, dtype=torch.float64) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, total)
    return [float(t) for t in gathered]


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
