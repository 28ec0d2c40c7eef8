"""The runtime contract: `encode(images) -> (N, D)` float32 L2-normalised descriptors, like `VPRModel.encode`."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

RUNTIMES = ("torch", "compile", "onnx", "onnx-int8")


def runtime_list_problem(names) -> Optional[str]:
    """What is wrong with a list of runtime names given on a command line (None: nothing), for `--runtime`."""
    unknown = [r for r in names if r not in RUNTIMES]
    if unknown:
        return f"{','.join(unknown)}: unknown; choose from {', '.join(RUNTIMES)}"
    if len(set(names)) != len(names):
        return f"lists a runtime twice: {','.join(names)}"
    return None


def check_images(images: torch.Tensor, side: int = 1) -> None:
    """The checks `VPRModel` makes of its input, for runtimes that hold no PyTorch model."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor batch of images, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}; add a batch axis with "
                         "images.unsqueeze(0) or convert to RGB")
    if not images.is_floating_point():
        raise ValueError(f"expected floating-point images, got dtype {images.dtype}; apply the model's transform() "
                         "(scales to float and normalises with the model's mean/std)")
    if images.shape[0] and min(images.shape[2:]) < side:
        raise ValueError(f"images of {images.shape[2]}x{images.shape[3]} are too small: H and W must be >= {side}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("the images contain NaN or Inf values, which would give NaN descriptors: check the image "
                         "decoding and normalisation (the model's transform())")


class Runtime:
    """One way to run a registry model: `encode(images)` gives what `VPRModel.encode` gives (within the runtime's
    recorded tolerance), on the CPU. `input_config`, `config`, `descriptor_dim` and `name` are the model's."""

    kind: str = ""

    def __init__(self, input_config: Dict[str, Any], config: Dict[str, Any], descriptor_dim: int) -> None:
        self.input_config = dict(input_config)
        self.config = dict(config)
        self.descriptor_dim = int(descriptor_dim)

    @property
    def name(self) -> str:
        return str(self.config.get("architecture", "model"))

    def encode(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - every runtime overrides it
        raise NotImplementedError

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images)

    def facts(self) -> Dict[str, Any]:
        """What a results table records about this runtime (its kind, and for int8 the calibration)."""
        return {"runtime": self.kind}

    def fingerprint(self) -> bytes:
        """Bytes that change whenever the descriptors would (descriptor stores key on them)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, runtime={self.kind!r}, dim={self.descriptor_dim})"
