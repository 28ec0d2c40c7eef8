"""Static int8 quantisation of an exported graph with onnxruntime (QDQ), and whether this CPU has int8 dot products.

Only the backbone is quantised: its convolutions (with the ReLU and max-pool nodes between them, so the int8 tensors
flow from one convolution to the next), with per-channel int8 weights and uint8 activations whose ranges come from
calibration images. Every other node (the input conversion, ClusVPR's CWT blocks with their KNN, OptLAD, NetVLAD's
soft-assignment, GeM, every whitening) stays float32: they are a small share of the FLOPs and numerically fragile.
"""
from __future__ import annotations

import logging
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .errors import RuntimeUnavailableError

PathLike = Union[str, os.PathLike]
QUANTISED_OPS = ("Conv", "Relu", "MaxPool")
QUANTISED_SCOPE = "/backbone/"  # node names of the TorchScript exporter follow the module path
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # x86; Arm: asimddp (dot product)
CPUINFO = "/proc/cpuinfo"
_log = logging.getLogger(__name__)


def cpu_flags(cpuinfo: Optional[PathLike] = None) -> Optional[set]:
    """The CPU's feature flags (Linux /proc/cpuinfo 'flags' or 'Features'), or None where they cannot be read."""
    try:
        text = Path(cpuinfo or CPUINFO).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def int8_support(cpuinfo: Optional[PathLike] = None) -> Tuple[Optional[bool], str]:
    """(has int8 dot-product instructions?, what was found): True/False from the flags, None when unknown."""
    flags = cpu_flags(cpuinfo)
    if flags is None:
        return None, f"unknown ({cpuinfo or CPUINFO} not readable on {platform.machine()})"
    found = sorted(flags & (set(INT8_FLAGS) | {"asimddp"}))
    if found:
        return True, ", ".join(found)
    return False, "none of " + ", ".join(INT8_FLAGS + ("asimddp",))


def check_int8_cpu(require: bool = True, cpuinfo: Optional[PathLike] = None) -> str:
    """Raise RuntimeUnavailableError (or, with require=False, log a warning) on a CPU without int8 dot products."""
    ok, found = int8_support(cpuinfo)
    if ok is False:
        message = (f"this CPU has no int8 dot-product instructions (AVX-512 VNNI / AVX-VNNI / AMX / Arm dot product; "
                   f"found {found}): onnxruntime's int8 convolutions would be slower than float32 here. Use "
                   "runtime='onnx' (float32 onnxruntime) or 'torch' (--runtime onnx / --runtime torch), or pass "
                   "require_vnni=False to run int8 anyway")
        if require:
            raise RuntimeUnavailableError(message)
        _log.warning(message)
    return found


def calibration_batch(calibration: Any, input_config: Dict[str, Any]) -> torch.Tensor:
    """Calibration images as one (N, 3, H, W) float32 tensor: a tensor of preprocessed images as given, or image
    files / PIL images preprocessed with the model's `input_config` (its transform())."""
    if isinstance(calibration, torch.Tensor):
        batch = calibration
    else:
        from PIL import Image

        from .datasets.images import open_rgb
        from .models.preprocess import Preprocess

        pre = Preprocess(input_config)
        items = list(calibration or [])
        batch = torch.stack([pre(x if isinstance(x, Image.Image) else open_rgb(x)) for x in items]) if items else None
    if batch is None or batch.ndim != 4 or batch.shape[0] == 0 or batch.shape[1] != 3:
        shape = None if batch is None else tuple(batch.shape)
        raise ValueError(f"int8 calibration needs real images: a (N, 3, H, W) tensor preprocessed like the model's "
                         f"input, or a list of image files, N >= 1 (a few dozen from the deployment's data is "
                         f"typical); got {shape or 'none'}")
    return batch.detach().to("cpu", torch.float32).contiguous()


METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
# the backbone's convolutions kept float32 by default (indices into its convolutions, negative from the end): the
# first one (0, which reads the normalised image: 8-bit rounding of that input was the largest single-layer error,
# for 0.6% of VGG16's FLOPs) and the last one (-1, whose output the aggregator reads); chosen on the Nordland
# validation places (Recall@N and the cosine of each int8 descriptor to float32's, calibrated on training places)
DEFAULT_FLOAT_CONVS: Tuple[int, ...] = (0, -1)
DEFAULT_CALIBRATION_IMAGES = 32  # how many calibration images the command lines take by default


def float_conv_indices(float_convs: Sequence[int], count: int) -> List[int]:
    """`float_convs` (indices into the backbone's `count` convolutions, negative from the end) as sorted indices
    0..count-1; ValueError naming the valid range for one outside it or for all of them float32."""
    picked = set()
    for i in float_convs:
        if not isinstance(i, (int, np.integer)) or not -count <= int(i) < count:
            raise ValueError(f"float32 convolutions are indices within {-count}..{count - 1} (the backbone has "
                             f"{count} convolutions; -1 is the last), got {i!r}")
        picked.add(int(i) % count)
    if len(picked) == count:
        raise ValueError(f"every one of the backbone's {count} convolutions would stay float32: nothing to quantise "
                         "(use runtime 'onnx' for float32)")
    return sorted(picked)


def default_float_convs(count: int) -> Tuple[int, ...]:
    """DEFAULT_FLOAT_CONVS for a backbone of `count` convolutions; a backbone too small for it (every convolution
    would stay float32) keeps only its last one float32."""
    return DEFAULT_FLOAT_CONVS if len({i % count for i in DEFAULT_FLOAT_CONVS}) < count else (-1,)


def kept_nodes(graph, float_convs: Optional[Sequence[int]]) -> Tuple[List[str], List[str], List[int]]:
    """(the backbone nodes to quantise, the backbone's convolution names, the float32 convolution indices): a float32
    convolution keeps its output float32 up to the next convolution (its ReLU / max-pool are not quantised)."""
    nodes = [n for n in graph.graph.node if n.name.startswith(QUANTISED_SCOPE) and n.op_type in QUANTISED_OPS]
    conv_names = [n.name for n in nodes if n.op_type == "Conv"]
    if not conv_names:
        raise ValueError(f"the graph has no convolution under {QUANTISED_SCOPE}: int8 quantisation needs a model "
                         "built by the registry (a backbone module named 'backbone')")
    if float_convs is None:
        float_convs = default_float_convs(len(conv_names))
    floats = float_conv_indices(float_convs, len(conv_names))
    kept, conv, is_float = [], -1, False
    for n in nodes:
        if n.op_type == "Conv":
            conv += 1
            is_float = conv in floats
        if not is_float:
            kept.append(n.name)
    return kept, conv_names, floats


def quantize_graph(graph: bytes, calibration: torch.Tensor, batch_size: int = 8, method: str = "minmax",
                   float_convs: Optional[Sequence[int]] = None) -> Tuple[bytes, Dict[str, Any]]:
    """Static QDQ int8 quantisation of the backbone of a float32 graph written by export_onnx, its activation ranges
    calibrated on `calibration` images by `method` (METHODS); the backbone's convolutions `float_convs` (indices,
    negative from the end; each with its ReLU / max-pool; default default_float_convs) and every op after the
    backbone stay float32.
    Returns (int8 graph bytes, facts about what was quantised)."""
    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [calibration[i:i + batch_size].numpy() for i in range(0, len(calibration), batch_size)]

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter({"images": b} for b in batches)

        def get_next(self):
            return next(self._it, None)

    with tempfile.TemporaryDirectory(prefix="vpr-int8-") as tmp:
        fp32, pre, out = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        fp32.write_bytes(graph)
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        proto = onnx.load(str(pre))
        nodes, conv_names, floats = kept_nodes(proto, float_convs)
        quantize_static(str(pre), str(out), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(QUANTISED_OPS), nodes_to_quantize=nodes,
                        calibrate_method=getattr(CalibrationMethod, METHODS[method]),
                        calibration_providers=["CPUExecutionProvider"])
        data = out.read_bytes()
    quantised = set(nodes)
    float_ops = sorted({n.op_type for n in proto.graph.node if n.name not in quantised})
    facts = {"format": "QDQ", "weights": "int8 per channel", "activations": "uint8 per tensor",
             "method": METHODS[method], "quantised_convs": len(conv_names) - len(floats),
             "float32_convs": len(floats), "float32_conv_indices": floats,
             "float32_conv_names": [conv_names[i] for i in floats], "quantised_nodes": len(nodes),
             "float32_op_types": float_ops, "num_images": int(len(calibration)),
             "input_size": list(calibration.shape[2:])}
    return data, facts


def cosine_to_float32(reference: np.ndarray, got: np.ndarray) -> Dict[str, float]:
    """Per-image cosine similarity of `got` to the float32 `reference` descriptors: mean and worst."""
    ref = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
    out = got / np.maximum(np.linalg.norm(got, axis=1, keepdims=True), 1e-12)
    cos = (ref.astype(np.float64) * out).sum(1)
    return {"mean": float(cos.mean()), "min": float(cos.min())}


def describe_calibration(calibration: Any) -> Optional[str]:
    """Where the calibration images came from (their folder and count), for the facts; None for a tensor."""
    if isinstance(calibration, torch.Tensor) or not isinstance(calibration, Sequence):
        return None
    paths = [Path(p) for p in calibration if isinstance(p, (str, os.PathLike))]
    if not paths:
        return None
    folders = sorted({p.parent.name for p in paths})
    return f"{len(paths)} image files from {', '.join(folders[:4])}{' ...' if len(folders) > 4 else ''}"
