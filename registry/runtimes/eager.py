"""The PyTorch runtimes: eager (the reference the releases were measured with) and torch.compile + channels_last."""
from __future__ import annotations

import copy
import hashlib
import json

import torch
from torch import nn

from ..models.model import encode_images
from .base import Runtime


def _fingerprint(kind: str, model: nn.Module) -> bytes:
    h = hashlib.sha256(kind.encode())
    h.update(json.dumps(getattr(model, "config", {}), sort_keys=True, default=str).encode())
    for key, t in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.digest()


class TorchRuntime(Runtime):
    """Eager PyTorch on the CPU: `model.encode` itself."""

    kind = "torch"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model.input_config, model.config, model.descriptor_dim)
        self.model = model.eval().cpu()

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return encode_images(self.model, images, torch.device("cpu"), amp=False)

    def fingerprint(self) -> bytes:
        return _fingerprint(self.kind, self.model)


class CompiledRuntime(TorchRuntime):
    """`torch.compile` of a channels_last copy of the model, fed channels_last batches (oneDNN's preferred layout on
    the CPU). The first batch of each new shape compiles (tens of seconds); later ones run the compiled code."""

    kind = "compile"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(copy.deepcopy(model).eval().cpu().to(memory_format=torch.channels_last))
        self.net = torch.compile(self.model)

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return encode_images(self.net, images, torch.device("cpu"), amp=False)
