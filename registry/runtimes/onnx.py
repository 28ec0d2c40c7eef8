"""onnxruntime on the CPU, float32 or int8: a graph written by `registry.export_onnx`, held in memory.

The graph is self-describing: its metadata property `vpr_runtime` (export.runtime_meta) holds JSON with the runtime
kind, the model's config and input config, the descriptor dim and, for int8, the calibration facts. `save` writes
it atomically; `load_runtime` reads it back (onnx's protobuf parser only: nothing is unpickled).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .._atomic import atomic_path
from ..export import INPUT_NAME, OUTPUT_NAME, RUNTIME_META, _require, export_onnx
from .base import Runtime, check_images

PathLike = Union[str, os.PathLike]


def default_threads() -> int:
    """As many onnxruntime intra-op threads as PyTorch has (torch.get_num_threads()): runtimes compare fairly."""
    return max(1, torch.get_num_threads())


class OnnxRuntime(Runtime):
    """An onnxruntime CPU session over an exported graph (float32, or int8 QDQ); same `encode` contract as the model.

    Built by `registry.compile_for(model, "onnx" | "onnx-int8", ...)` or `registry.load_runtime(path)`; `threads`
    intra-op threads (default: torch.get_num_threads())."""

    def __init__(self, graph: bytes, threads: Optional[int] = None, label: str = "the graph") -> None:
        onnx = _require("onnx", "runtime 'onnx'")
        props = {p.key: p.value for p in onnx.load_from_string(graph).metadata_props}
        meta = _parse_meta(props.get(RUNTIME_META), label)
        super().__init__(meta["input_config"], meta["config"], meta["descriptor_dim"])
        self.kind = str(meta["kind"])
        ort = _require("onnxruntime", f"runtime {self.kind!r}")
        self.meta, self.graph = meta, graph
        self.threads = int(threads or default_threads())
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    @property
    def calibration(self) -> Optional[Dict[str, Any]]:
        """int8: how it was calibrated and how close it came to float32 on those images (None for float32)."""
        return self.meta.get("calibration")

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, int(self.meta.get("min_side", 1)))
        if images.shape[0] == 0:
            return torch.zeros((0, self.descriptor_dim), dtype=torch.float32)
        x = images.detach().to("cpu", torch.float32).contiguous().numpy()
        out = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        return F.normalize(torch.from_numpy(out).float(), dim=-1)

    def save(self, path: PathLike) -> Path:
        """Write the graph and its facts to one `.onnx` file (atomically); `registry.load_runtime(path)` reads it."""
        path = Path(path)
        if path.suffix != ".onnx":
            raise ValueError(f"save the runtime as a .onnx file, got {path}")
        with atomic_path(path) as tmp:
            tmp.write_bytes(self.graph)
        return path

    def facts(self) -> Dict[str, Any]:
        facts: Dict[str, Any] = {"runtime": self.kind, "threads": self.threads}
        if self.calibration:
            facts["calibration"] = self.calibration
        return facts

    def fingerprint(self) -> bytes:
        return hashlib.sha256(self.graph).digest()


def _parse_meta(text: Optional[str], label: str) -> Dict[str, Any]:
    if text is None:
        raise ValueError(f"{label} carries no '{RUNTIME_META}' metadata: it was not written by registry.export_onnx "
                         "or a runtime's save() (export the model again with registry.export_onnx)")
    try:
        meta = json.loads(text)
        missing = sorted({"kind", "config", "input_config", "descriptor_dim"} - set(meta))
    except (json.JSONDecodeError, TypeError):
        missing = ["valid JSON"]
    if missing:
        raise ValueError(f"{label}: its '{RUNTIME_META}' metadata lacks {missing}; export the model again")
    return meta


def build_onnx(model: nn.Module, quantize: Optional[str] = None, calibration: Any = None,
               threads: Optional[int] = None, input_size=None, require_vnni: bool = True,
               int8_float_convs: Optional[Sequence[int]] = None) -> OnnxRuntime:
    """export_onnx into memory (float32, or int8 calibrated on `calibration`), then its runtime."""
    with tempfile.TemporaryDirectory(prefix="vpr-runtime-") as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx", input_size=input_size, quantize=quantize,
                           calibration=calibration, require_vnni=require_vnni, int8_float_convs=int8_float_convs)
        return OnnxRuntime(path.read_bytes(), threads=threads)


def load_runtime(path: PathLike, threads: Optional[int] = None) -> OnnxRuntime:
    """The runtime of a `.onnx` file written by `registry.export_onnx` or a runtime's `save` (float32 or int8)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no runtime file at {path}: give the .onnx file export_onnx or save() wrote")
    return OnnxRuntime(path.read_bytes(), threads=threads, label=str(path))
