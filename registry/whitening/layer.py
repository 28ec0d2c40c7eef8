"""PCA whitening folded into the model as a layer: y = normalise(diag(lams^-1/2) U^T (x - mu))."""
from __future__ import annotations

import os
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._util.h5io import read_pca, write_datasets

EIG_FLOOR = 1e-9


class PCAWhitening(nn.Module):
    """Whitening `in_dim -> out_dim`; unfitted it passes descriptors through, so a fresh model still runs."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        if out_dim > in_dim:
            raise ValueError(f"whitening out_dim ({out_dim}) cannot exceed in_dim ({in_dim})")
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.register_buffer("U", torch.zeros(in_dim, 0))
        self.register_buffer("lams", torch.zeros(0))
        self.register_buffer("mu", torch.zeros(in_dim))

    @property
    def fitted(self) -> bool:
        return self.U.shape[1] == self.out_dim

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # buffers are empty until fitted: take the incoming shapes when they are either valid state
        for name in ("U", "lams"):
            incoming = state_dict.get(prefix + name)
            if incoming is not None:
                cols = incoming.shape[-1]
                if cols not in (0, self.out_dim):
                    raise ValueError(f"{prefix}{name} has {cols} components, expected {self.out_dim} "
                                     "(or 0 if unfitted)")
                setattr(self, name, torch.empty_like(incoming, dtype=self.mu.dtype, device=self.mu.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def set_params(self, U: torch.Tensor, lams: torch.Tensor, mu: torch.Tensor) -> "PCAWhitening":
        """Install fitted parameters (U: in x out, lams: out, mu: in)."""
        U, lams, mu = (torch.as_tensor(np.asarray(t), dtype=torch.float32) for t in (U, lams, mu))
        if U.shape != (self.in_dim, self.out_dim) or lams.shape != (self.out_dim,) or mu.shape != (self.in_dim,):
            raise ValueError(
                f"PCA shapes U{tuple(U.shape)} lams{tuple(lams.shape)} mu{tuple(mu.shape)} do not fit "
                f"a {self.in_dim} -> {self.out_dim} whitening"
            )
        dev = self.mu.device
        self.U, self.lams, self.mu = U.to(dev), lams.clamp_min(EIG_FLOOR).to(dev), mu.to(dev)
        return self

    @torch.no_grad()
    def fit(self, descs: Union[torch.Tensor, np.ndarray]) -> "PCAWhitening":
        """Fit on (N, in_dim) descriptors in float64; dual PCA when N < in_dim."""
        x = torch.as_tensor(np.asarray(descs) if not isinstance(descs, torch.Tensor) else descs).double().cpu()
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"fit expects (N, {self.in_dim}) descriptors, got {tuple(x.shape)}")
        n = x.shape[0]
        if n < self.out_dim + 1:
            raise ValueError(
                f"fitting a {self.out_dim}-d whitening needs more than {self.out_dim} descriptors, got {n}: "
                "use more training images or a smaller whitening_dim"
            )
        mu = x.mean(0)
        xc = x - mu
        if n < self.in_dim:  # dual: eigenvectors of the N x N Gram matrix
            lams, V = torch.linalg.eigh(xc @ xc.T / (n - 1))
            lams, V = lams.flip(0)[: self.out_dim], V.flip(1)[:, : self.out_dim]
            lams = lams.clamp_min(EIG_FLOOR)
            U = xc.T @ V / torch.sqrt(lams * (n - 1))
        else:
            lams, U = torch.linalg.eigh(xc.T @ xc / (n - 1))
            lams, U = lams.flip(0)[: self.out_dim], U.flip(1)[:, : self.out_dim]
        return self.set_params(U, lams, mu)

    def truncated(self, out_dim: int) -> "PCAWhitening":
        """The same whitening keeping only the `out_dim` leading components (what fitting at `out_dim` gives)."""
        if not self.fitted:
            raise RuntimeError("the whitening is not fitted: call fit(descriptors) before truncating it")
        if not 1 <= int(out_dim) <= self.out_dim:
            raise ValueError(f"a {self.out_dim}-d whitening can be truncated to 1..{self.out_dim} dims, not {out_dim}")
        k = int(out_dim)
        out = PCAWhitening(self.in_dim, k).to(self.mu.device)
        return out.set_params(self.U[:, :k].cpu(), self.lams[:k].cpu(), self.mu.cpu())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fitted:
            return x
        y = (x - self.mu.to(x.dtype)) @ self.U.to(x.dtype)
        return F.normalize(y * self.lams.to(x.dtype).rsqrt(), dim=-1)

    def to_h5(self, path: Union[str, os.PathLike]) -> None:
        """Write U, lams, mu, Utmu (reference layout) atomically."""
        if not self.fitted:
            raise RuntimeError("the whitening is not fitted: call fit(descriptors) first")
        U, lams, mu = (t.detach().cpu().numpy() for t in (self.U, self.lams, self.mu))
        write_datasets(path, U=U, lams=lams, mu=mu, Utmu=U.T @ mu)

    @classmethod
    def from_h5(cls, path: Union[str, os.PathLike]) -> "PCAWhitening":
        """Read a whitening written by `to_h5` or by the reference tools."""
        U, lams, mu = read_pca(path)
        return cls(U.shape[0], U.shape[1]).set_params(U, lams, mu)

    def extra_repr(self) -> str:
        return f"{self.in_dim} -> {self.out_dim}, fitted={self.fitted}"
