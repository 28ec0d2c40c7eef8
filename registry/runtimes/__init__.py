"""Inference runtimes behind one contract: `encode(images) -> (N, D)` float32 L2-normalised descriptors, as
`VPRModel.encode` gives them, on the CPU.

    rt = registry.compile_for(model, "onnx-int8", calibration=image_files)   # or "torch", "compile", "onnx"
    descs = rt.encode(batch)
    rt.save("clusvpr_int8.onnx"); rt = registry.load_runtime("clusvpr_int8.onnx")

- "torch": eager PyTorch, the reference (the releases were measured with it).
- "compile": torch.compile of a channels_last copy (first batch of each shape compiles).
- "onnx": onnxruntime float32 (export_onnx's graph; within 1e-4 relative of eager).
- "onnx-int8": onnxruntime with the backbone's convolutions statically quantised to int8 (registry.quantize),
  calibrated on real images; everything after the backbone float32. Its calibration facts (cosine similarity to
  float32 on the calibration images) travel with it.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
from torch import nn

from .base import RUNTIMES, Runtime
from .eager import CompiledRuntime, TorchRuntime
from .onnx import OnnxRuntime, RuntimeFileError, build_onnx, load_runtime

__all__ = ["RUNTIMES", "Runtime", "TorchRuntime", "CompiledRuntime", "OnnxRuntime", "compile_for", "load_runtime",
           "check_available", "evenly_spaced", "RuntimeFileError"]


def check_available(runtime: str) -> None:
    """Raise what `compile_for(model, runtime)` would raise for a missing piece, without building anything: an
    ImportError naming the extra (onnx, onnx-int8 without onnxruntime) or RuntimeUnavailableError (onnx-int8 on a CPU
    without int8 dot products). Command lines call it before hours of work, not after."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if runtime in ("onnx", "onnx-int8"):
        from ..export import _require

        _require("onnx", f"runtime {runtime!r}")
        _require("onnxruntime", f"runtime {runtime!r}")
    if runtime == "onnx-int8":
        from ..quantize import check_int8_cpu

        check_int8_cpu(require=True)


def evenly_spaced(items: Sequence[Any], n: int) -> List[Any]:
    """Up to `n` items spread evenly over `items`, first and last included (int8 calibration images, the queries the
    runner draws)."""
    if n < 1:
        raise ValueError(f"need at least one item to pick, got n={n}")
    picked = np.linspace(0, len(items) - 1, min(n, len(items))).round().astype(int)
    return [items[i] for i in sorted(set(picked.tolist()))]


def compile_for(model: nn.Module, runtime: str = "torch", *, calibration: Any = None, threads: Optional[int] = None,
                input_size: Optional[Tuple[int, int]] = None, require_vnni: bool = True,
                int8_float_convs: Optional[Sequence[int]] = None) -> Runtime:
    """A `Runtime` running `model` (any registry model, releases included) one of the ways in RUNTIMES.

    onnx / onnx-int8: the graph is traced at `input_size` (default the model's) and takes any size later; `threads`
    onnxruntime intra-op threads (default torch.get_num_threads()). onnx-int8 needs `calibration`: real images, as
    image files or a preprocessed (N, 3, H, W) tensor (a few dozen from the deployment's data); it raises
    RuntimeUnavailableError on a CPU without int8 dot products unless `require_vnni=False`; the backbone's
    convolutions `int8_float_convs` (indices, negative from the end) stay float32 (default
    registry.quantize.DEFAULT_FLOAT_CONVS, chosen on the Nordland validation places). Missing onnxruntime
    raises ImportError naming the extra to install.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if runtime != "onnx-int8" and calibration is not None:
        raise ValueError(f"calibration images are for runtime 'onnx-int8' only, not {runtime!r}")
    if runtime == "torch":
        return TorchRuntime(model)
    if runtime == "compile":
        return CompiledRuntime(model)
    if runtime == "onnx-int8" and calibration is None:
        raise ValueError("runtime 'onnx-int8' needs calibration images: compile_for(model, 'onnx-int8', "
                         "calibration=[image files] or a preprocessed (N, 3, H, W) tensor)")
    return build_onnx(model, "int8" if runtime == "onnx-int8" else None, calibration, threads, input_size,
                      require_vnni, int8_float_convs)
