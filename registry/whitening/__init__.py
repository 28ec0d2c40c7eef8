"""PCA whitening, in one place: the layer a model ends with, fitting it, choosing its size, applying and reducing it.

- `PCAWhitening` (layer.py): the layer itself: `fit` on descriptors, applied by calling it, `truncated` to its
  leading components, read and written as pca.h5.
- fit.py: whether a model's whitening still needs a fit, the seeded sample of training images it is fitted on (drawn
  the same way by the trainer and by `registry.evaluation.fit_whitening_if_needed`), and the fit on that sample.
- choose.py: `select_whitening`, the size chosen on validation (the trainer's `whitening_dims` and the whitening
  sweep), and the check of candidate sizes.
- apply.py: descriptors whitened as the model's forward whitens them (`whiten`, `whiten_tensor`).
- reduce.py: a model's descriptor cut to leading whitening components or to no whitening (`set_whitening_dim`,
  `set_descriptor_dim`: VPRModel's methods of those names call them).

It imports torch, numpy and `registry._util.h5io` only, and works on any module that carries what a VPRModel carries
(`whitening`, `aggregator.out_dim`, `config`, `name`), so the Hub layer (`pull_pca`) and the model layer can both
import it and it imports neither, nor training or evaluation.
"""
from .apply import whiten, whiten_tensor
from .choose import select_whitening, too_large
from .fit import enough_to_fit, fit_model_whitening, fit_on_sample, fit_sample, needs_fit
from .layer import EIG_FLOOR, PCAWhitening
from .reduce import has_components, set_descriptor_dim, set_whitening_dim

__all__ = [
    "EIG_FLOOR",
    "PCAWhitening",
    "enough_to_fit",
    "fit_model_whitening",
    "fit_on_sample",
    "fit_sample",
    "has_components",
    "needs_fit",
    "select_whitening",
    "set_descriptor_dim",
    "set_whitening_dim",
    "too_large",
    "whiten",
    "whiten_tensor",
]
