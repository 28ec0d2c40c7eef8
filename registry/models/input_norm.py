"""Input conventions: a model's own normalisation ('native') or ImageNet's, converted exactly inside the model.

The peer VPR runners (VPR-methods-evaluation, deep-visual-geo-localization-benchmark, OpenVPRLab) feed float RGB
normalised with ImageNet's mean and std. Both conventions are per-channel affine maps of the same 0..1 RGB, so
one affine map per channel turns one into the other: no retraining, and the same weights serve both.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_NORMS = ("native", "imagenet")

Floats = Tuple[float, ...]


class InputNormConversion(nn.Module):
    """x * scale + shift per channel: input normalised with (mean_in, std_in) -> normalised with (mean, std).

    rgb = x * std_in + mean_in, so (rgb - mean) / std = x * (std_in / std) + (mean_in - mean) / std. The
    buffers are not persistent: state dicts (and so saved weights) are the same for every input convention.
    """

    def __init__(self, mean_in: Sequence[float], std_in: Sequence[float], mean: Sequence[float],
                 std: Sequence[float]) -> None:
        super().__init__()
        mean_in, std_in, mean, std = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1)
                                      for v in (mean_in, std_in, mean, std))
        self.register_buffer("scale", (std_in / std).float(), persistent=False)
        self.register_buffer("shift", ((mean_in - mean) / std).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # .to(x): a no-op once the model is on x's device; encode_prefix moves only the backbone's layers
        return torch.addcmul(self.shift.to(x), x, self.scale.to(x))

    def extra_repr(self) -> str:
        return f"scale={self.scale.flatten().tolist()}, shift={self.shift.flatten().tolist()}"


def resolve_input_norm(input_norm: str, mean: Sequence[float], std: Sequence[float]
                       ) -> Tuple[Floats, Floats, Optional[InputNormConversion]]:
    """(mean, std) the model takes and the conversion to its own (mean, std); None when they already agree."""
    if input_norm not in INPUT_NORMS:
        raise ValueError(
            f"input_norm must be one of {INPUT_NORMS}, got {input_norm!r}: 'native' takes the model's own "
            "normalisation (model.transform()), 'imagenet' takes RGB normalised with ImageNet's mean "
            f"{IMAGENET_MEAN} and std {IMAGENET_STD} (what VPR-methods-evaluation and similar runners feed)"
        )
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if input_norm == "native" or (mean, std) == (IMAGENET_MEAN, IMAGENET_STD):
        return mean, std, None
    return IMAGENET_MEAN, IMAGENET_STD, InputNormConversion(IMAGENET_MEAN, IMAGENET_STD, mean, std)
