"""Reference ClusVPR checkpoints (`model_best.pth.tar`) -> this package's names, loaded strictly and safely."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, Optional, Union

import torch

from registry.models.model import VPRModel
from registry.whitening import PCAWhitening

_CWT_BLOCK = {
    "local_dwconvl": "local_dw_l",
    "local_dwconvg": "global_dw_l",
    "global_dwconv": "local_dw_g",
    "local_bn": "bn_local",
    "global_bn": "bn_global",
    "global_cwt.point_conv": "cwt.pw",
    "global_cwt.transpose": "cwt.up",
    "global_cwt.transformer.embeddings.cls_token": "cwt.cls_token",
    "global_cwt.transformer.embeddings.patch_embeddings": "cwt.embed",
    "global_cwt.transformer.encoder.layer.0.attn": "cwt.block.attn",
    "global_cwt.transformer.encoder.layer.0.ffn": "cwt.block",
}
_OPTLAD = {
    "GeM_pool.p": "optlad.p",
    "centroids": "optlad.centroids",
    "conv.weight": "optlad.conv.weight",
    "linear1.weight": "optlad.linear.weight",
}
_VIT = re.compile(r"^net_vlad\.vit_layer\.(\d+)\.(.+)$")
_BASE = re.compile(r"^base_model\.(?:base|features)\.(\d+)\.(weight|bias)$")


def _map_key(key: str) -> Optional[str]:
    """Our name for one reference key (without `module.`), or None if it is not a model weight we know."""
    m = _VIT.match(key)
    if m:
        idx, rest = m.groups()
        for old in sorted(_CWT_BLOCK, key=len, reverse=True):
            if rest == old or rest.startswith(old + "."):
                return f"aggregator.cwt.{idx}.{_CWT_BLOCK[old]}{rest[len(old):]}"
        return None
    if key.startswith("net_vlad."):
        return ("aggregator." + _OPTLAD[key[9:]]) if key[9:] in _OPTLAD else None
    m = _BASE.match(key)
    if m:
        return f"backbone.features.{m.group(1)}.{m.group(2)}"
    return None


def convert_reference_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Strip DDP's `module.`, rename, copy BN_local into BN_global (the reference applies the local BN to both).

    A key that maps to nothing raises KeyError naming it; `pca_layer.*` is kept for the caller.
    """
    out: Dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        key = key[7:] if key.startswith("module.") else key
        if key.startswith("pca_layer."):
            out[key] = value
            continue
        new = _map_key(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise KeyError(f"reference checkpoint has keys this converter does not know: {unknown[:8]}")
    for key in [k for k in out if ".bn_local." in k]:
        out[key.replace(".bn_local.", ".bn_global.")] = out[key].clone()
    return out


def whitening_from_pca_layer(weight: torch.Tensor, bias: torch.Tensor) -> PCAWhitening:
    """Recover (U, lams, mu) from a folded PCA conv/linear layer y = W x + b with W = diag(lams^-1/2) U^T."""
    W = weight.reshape(weight.shape[0], -1).double()
    scale = W.norm(dim=1)  # = lams^-1/2, since U has orthonormal columns
    U = (W / scale.unsqueeze(1)).T
    mu = -(U @ (bias.double() / scale))
    return PCAWhitening(W.shape[1], W.shape[0]).set_params(U, scale.pow(-2), mu)


def _find_pca_beside(path: Path) -> Optional[Path]:
    for name in ("pca.h5", f"pca_{path.name.split('.')[0]}.h5", f"pca_params_{path.name.split('.')[0]}.h5"):
        if (path.parent / name).is_file():
            return path.parent / name
    return None


def read_reference_checkpoint(path: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """The tensors of a reference checkpoint, read with `weights_only=True` (no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference checkpoint not found: {path}")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read {path} as a weights-only torch checkpoint: {exc}") from exc
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state dict of tensors (expected a 'state_dict' entry)")
    return state


def load_reference_checkpoint(model: VPRModel, path: Union[str, os.PathLike],
                              pca: Optional[Union[str, os.PathLike]] = None) -> VPRModel:
    """Load a reference `.pth.tar` strictly into `model`; a PCA `.h5` (given or beside it) becomes the whitening."""
    state = convert_reference_state_dict(read_reference_checkpoint(path))
    pca_w, pca_b = state.pop("pca_layer.weight", None), state.pop("pca_layer.bias", None)
    pca_path = Path(pca) if pca else _find_pca_beside(Path(path))
    if model.whitening is not None:
        if pca_path is not None:
            fitted = PCAWhitening.from_h5(pca_path)
        elif pca_w is not None and pca_b is not None:
            fitted = whitening_from_pca_layer(pca_w, pca_b)
        else:
            fitted = model.whitening  # stays unfitted: descriptors are the 8192-d OptLAD output
        state.update({f"whitening.{k}": v for k, v in fitted.state_dict().items()})
    elif pca_path is not None or pca_w is not None:
        raise ValueError("the checkpoint comes with a PCA but the model has no whitening layer; "
                         "create it with whitening_dim")
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise KeyError(f"reference checkpoint {path} does not match {model.name}: missing {missing[:8]}, "
                       f"unexpected {unexpected[:8]}")
    model.load_state_dict(state, strict=True)
    return model
