"""The whitening sweep: Recall@N of a trained model at several whitening sizes (its whitening's leading
components, or none), chosen on a validation set and reported on test sets, as the trainer's `--whitening-dims`
would choose. Its command line is `vpr whitening-sweep` (registry.cli.sweep).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence


def raw_descriptors(model, dataset, cache_dir: Optional[str], batch_size: int):
    """(query, database) L2-normalised descriptors before whitening."""
    import torch

    from registry.evaluation import extract_dataset

    from . import DistContext, cached_source, sharded_apply
    from .recipes import global_descriptors
    from .sources import stack_items

    if cache_dir is None:
        whitening, model.whitening = model.whitening, None
        try:
            return extract_dataset(model, dataset, batch_size=batch_size, device="cpu", progress=True)
        finally:
            model.whitening = whitening
    ctx = DistContext()
    src = cached_source(model, list(dataset.db_images) + list(dataset.q_images), cache_dir, ctx, batch_size,
                        desc=f"{dataset.name} features")

    @torch.no_grad()
    def run(batch: Sequence[int]) -> torch.Tensor:
        return global_descriptors(model, src, stack_items(src, list(batch), train=False))

    d = sharded_apply(run, range(len(src)), ctx, batch_size, desc=f"{dataset.name} descriptors").numpy()
    return d[dataset.num_db :], d[: dataset.num_db]


def sweep(run: str, datasets: Dict[str, Any], dims: Sequence[Optional[int]], val_set: str, select_by: str,
          cache_dir: Optional[str] = None, batch_size: int = 32) -> List[Dict[str, Any]]:
    """One row per whitening size of the model in `run` (a Hub-layout folder or org/name[@rev]): Recall@1/5/10 on
    each of `datasets` (name -> VPRDataset), the size with the best `val_set` `select_by` marked "chosen"."""
    import torch

    import registry
    from registry.evaluation.recall_table import descriptor_recalls
    from registry.whitening import select_whitening, too_large

    model = registry.VPRModel.from_pretrained(run).eval()
    w = model.whitening
    if w is None or not w.fitted:
        raise ValueError(f"{run} has no fitted whitening: nothing to choose from")
    bad = too_large(w, dims)
    if bad:
        raise ValueError(f"sizes {bad} exceed {run}'s {w.out_dim}-d whitening")
    raw = {name: raw_descriptors(model, ds, cache_dir, batch_size) for name, ds in datasets.items()}

    @torch.no_grad()
    def measure(cut: Optional[torch.nn.Module]) -> Dict[str, Any]:
        row: Dict[str, Any] = {}
        for name, ds in datasets.items():
            q, db = raw[name]
            if cut is not None:
                q, db = (cut(torch.from_numpy(x).float()).numpy() for x in (q, db))
            row[name] = descriptor_recalls(q, db, ds)
        return row

    rows, best = select_whitening(w, dims, measure, lambda row: row[val_set][select_by])
    return [{"run": run, **row, "chosen": i == best} for i, row in enumerate(rows)]
