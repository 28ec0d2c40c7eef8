"""Cost metrics: parameters, counted GFLOPs, batch-1 latency and peak memory (CUDA allocator or CPU RSS)."""
from __future__ import annotations

import contextlib
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import torch
from torch import nn

FLOPS_NOTE = ("GFLOPs: matmul/conv FLOPs of one image at the evaluated size, counted by "
              "torch.utils.flop_counter.FlopCounterMode (2 FLOPs per multiply-accumulate; element-wise ops, "
              "softmax and top-k not counted)")
_PROC_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (buffers such as the whitening's U excluded)."""
    return sum(p.numel() for p in model.parameters())


@torch.inference_mode()
def count_gflops(model: nn.Module, image: torch.Tensor) -> float:
    """GFLOPs of one forward pass on `image` (1, 3, H, W) in float32, as FlopCounterMode counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model(image)
    return counter.get_total_flops() / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def latency_ms(model: nn.Module, image: torch.Tensor, repeats: int = 5, amp: bool = False) -> float:
    """Median wall time (ms) of a batch-1 forward pass after one warm-up pass."""
    device = image.device
    if device.type == "cuda":  # the layout extraction feeds on CUDA
        image = image.contiguous(memory_format=torch.channels_last)
    ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    times = []
    for i in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        with ctx():
            model(image)
        _sync(device)
        if i:
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _status_kib(key: str) -> Optional[int]:
    try:
        for line in _PROC_STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _maxrss_kib() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss // 1024 if sys.platform == "darwin" else rss  # bytes on macOS, KiB elsewhere


class PeakMemory:
    """Peak memory inside a `with` block: CUDA max_memory_allocated, or on CPU the increase of the process's peak
    RSS over its RSS at entry (Linux: peak reset at entry via /proc/self/clear_refs; elsewhere getrusage's
    lifetime peak, a lower bound when an earlier peak was higher)."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.mib = float("nan")
        self.kind = ""

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "CUDA max_memory_allocated"
            return self
        self._base = _status_kib("VmRSS")
        try:
            _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS
            self._hwm = _status_kib("VmHWM") is not None and self._base is not None
        except OSError:
            self._hwm = False
        if not self._hwm:
            self._base = _maxrss_kib()
        self.kind = "CPU peak RSS increase" + ("" if self._hwm else " (getrusage, lower bound)")
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            peak = _status_kib("VmHWM") if self._hwm else _maxrss_kib()
            self.mib = max(0, peak - self._base) / 1024
