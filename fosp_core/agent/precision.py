"""Where and in which precision the agent computes: device choice, mixed precision, transfers.

``train.precision`` (config):
- ``fp32``: everything in float32 (the paper's setting, the default).
- ``bf16``: matrix multiplies and convolutions, forward and backward, in bfloat16 under
  ``torch.autocast`` (CPU and CUDA). Every network's output is cast back to float32 at its
  boundary (``MLP``, the GRU's gates, the image decoder), so distributions, two-hot targets,
  losses, lambda-returns, the recurrent state and the optimiser states stay float32.
- ``fp16``: the same in float16, with a gradient scaler per optimiser (float16 overflows
  where bfloat16 does not); for GPUs without bfloat16.
- ``auto``: ``bf16`` where the hardware runs bfloat16 natively (a CPU with AVX512-BF16 or
  AMX, a GPU from Ampere on), else ``fp32``: emulated bfloat16 is slower than float32. The
  ``cpu`` preset's default, since bf16 was shown to learn what fp32 learns
  (docs/results.md, "bf16 learning equivalence").

``Precision.step`` is the one place a loss becomes an optimiser step (scale, backward,
unscale, clip, step), for the world model and every actor-critic optimiser alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """'auto' (CUDA when torch sees a GPU, else the CPU), 'cpu', 'cuda' or 'cuda:N'."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name}: no CUDA device is available to torch here")
    return device


def cpu_runs_bf16() -> bool:
    """Does this CPU run bfloat16 natively (oneDNN's check: AVX512-BF16 or AMX)?"""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device_type: str, precision: str, bf16_supported: bool) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on a device (None: float32 throughout).

    bf16 on a CUDA device without bfloat16 (before Ampere) falls back to fp16, which such
    GPUs run fast; the CPU runs both. ``auto`` is bfloat16 where ``bf16_supported`` (native
    bfloat16 on this device), else float32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if bf16_supported else None
    if precision == "fp32":
        return None
    if precision == "bf16" and device_type == "cuda" and not bf16_supported:
        return torch.float16
    return DTYPES[precision]


class Precision:
    """Autocast context and optimiser steps for one device and ``train.precision``."""

    def __init__(self, device: torch.device, precision: str = "fp32") -> None:
        self.device = device
        bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_runs_bf16()
        self.dtype = autocast_dtype(device.type, precision, bf16)
        self._scalers: dict[int, torch.amp.GradScaler] = {}

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _scaler(self, opt: torch.optim.Optimizer) -> torch.amp.GradScaler:
        if id(opt) not in self._scalers:
            enabled = self.dtype == torch.float16
            self._scalers[id(opt)] = torch.amp.GradScaler(self.device.type, enabled=enabled)
        return self._scalers[id(opt)]

    def step(self, opt: torch.optim.Optimizer, loss: Tensor, params: Iterable[nn.Parameter],
             clip: float, sync: Callable[[], None] | None = None) -> Tensor:
        """Backward ``loss``, clip the gradients' norm to ``clip``, step ``opt``; returns the
        norm before clipping. ``sync`` runs between backward and clipping (data-parallel
        gradient averaging)."""
        params = list(params)
        scaler = self._scaler(opt)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if sync is not None:
            sync()
        scaler.unscale_(opt)
        norm = nn.utils.clip_grad_norm_(params, clip)
        scaler.step(opt)  # skipped when fp16 gradients overflowed; the scale then shrinks
        scaler.update()
        return norm

    def to_device(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """A replay batch on the device; to a GPU through pinned memory, without blocking."""
        if self.device.type != "cuda":
            return {key: value.to(self.device) for key, value in batch.items()}
        return {key: value.pin_memory().to(self.device, non_blocking=True)
                for key, value in batch.items()}
