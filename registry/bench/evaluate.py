"""One model on one dataset: build, off-the-shelf init, extraction (timed, peak memory), whitening, recall, costs."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from registry.datasets import VPRDataset
from registry.datasets.images import open_rgb
from registry.evaluation import (
    DEFAULT_PCA_DIM,
    Preprocess,
    extract_dataset,
    extract_dataset_to_store,
    extract_descriptors,
    save_descriptors,
)
from registry.training.clusters import has_clusters
from registry.whitening import enough_to_fit, has_components, whiten

from . import attention, grids
from .config import RunConfig, log
from .metrics import PeakMemory, count_gflops, count_parameters, latency_ms
from .models import Models, ModelSpec, build_model, weights_source
from .retrieval import retrieval


def safe_name(text: str) -> str:
    """A file-name-safe version of a label."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text).strip("_") or "model"


def pick_queries(num_queries: int, n: int) -> List[int]:
    """`n` query indices spread evenly over the query set (the same ones for grids and heat maps)."""
    from registry.runtimes import evenly_spaced

    return evenly_spaced(range(num_queries), n) if n > 0 else []


def _whitening_plan(model: torch.nn.Module, choice: str, num_db: int) -> Tuple[bool, str]:
    """(fit now?, what the table says about whitening)."""
    w = getattr(model, "whitening", None)
    if w is None:
        return False, "none (model has no whitening)"
    if w.fitted:
        return False, f"PCA {w.in_dim}->{w.out_dim} (pretrained)"
    if choice == "none":
        return False, "none (--whitening none)"
    if not enough_to_fit(w, num_db):
        return False, f"none (too few images: {num_db} <= {w.out_dim} dims)"
    return True, f"PCA {w.in_dim}->{w.out_dim} fitted on {num_db} database descriptors"


def _pca_dim(cfg: RunConfig) -> Optional[int]:
    """Dims of the index's PCA step (--pca-dim, or the default of --index pca); None when it has none."""
    return dict(cfg.index_options).get("pca_dim") or (DEFAULT_PCA_DIM if cfg.index == "pca" else None)


def _pca_from_whitening(model: torch.nn.Module, cfg: RunConfig, fit_now: bool) -> Optional[int]:
    """k when the index's PCA step keeps the k leading components of the model's whitening (--pca-from) instead of
    fitting a PCA on the database; None when the index has no PCA step or (auto) the model has no whitening of
    >= k components to take them from."""
    k = _pca_dim(cfg)
    if k is None or cfg.pca_from == "database":
        return None
    w = getattr(model, "whitening", None)
    if has_components(w, k, fit_now):
        return int(k)
    if cfg.pca_from == "whitening":
        have = "no whitening" if w is None else (f"a {w.out_dim}-d whitening" if w.fitted or fit_now
                                                  else "no fitted whitening")
        raise ValueError(f"--pca-from whitening: {model.name} has {have}, so it has no {k} leading whitening "
                         "components to keep; use --pca-from database (a PCA fitted on the database descriptors) "
                         "or a smaller --pca-dim")
    return None


def _without_pca(cfg: RunConfig) -> RunConfig:
    """The run's index with its PCA step removed (the descriptors are already reduced): 'pca' searches exactly."""
    exact = cfg.index == "pca"  # index_options derives from the fields: no pca_dim, no refine of an exact search
    return replace(cfg, index="flat" if exact else cfg.index, pca_dim=None, refine=None if exact else cfg.refine)


def _costs(model: torch.nn.Module, net: torch.nn.Module, ds: VPRDataset, cfg: RunConfig, amp: bool) -> Dict[str, Any]:
    """Parameters, GFLOPs (of `model`) and batch-1 latency (of `net`, the module extraction ran) on the first query."""
    device = next(model.parameters()).device
    image = Preprocess(model.input_config)(open_rgb(ds.q_images[0])).unsqueeze(0).to(device)
    return {
        "params_m": count_parameters(model) / 1e6,
        "gflops": count_gflops(model, image),
        "flops_input": f"{image.shape[2]}x{image.shape[3]}",
        "latency_ms": latency_ms(net, image, cfg.latency_repeats, amp),
    }


def _compiled(model: torch.nn.Module, ds: VPRDataset, cfg: RunConfig, amp: bool) -> torch.nn.Module:
    """torch.compile(model), compiled on one batch of database images so compilation is not timed as encoding."""
    net = torch.compile(model)
    extract_descriptors(net, ds.db_images[: cfg.batch_size], batch_size=cfg.batch_size, device=cfg.device, amp=amp,
                        progress=False)
    return net


def _kmeans_init(model: torch.nn.Module, ds: VPRDataset, cfg: RunConfig, out: Path) -> Tuple[Dict[str, Any], bool]:
    """Off-the-shelf centres: k-means of the database's local descriptors, alpha initialisation (the trainer's own
    cluster initialisation), centres written to `out`; (facts, done?). Too few descriptors keeps random centres."""
    from registry.training import DistContext, ImageSource, init_clusters

    try:
        source = ImageSource(ds.db_images, model.input_config, num_workers=cfg.num_workers)
        alpha = init_clusters(model, source, out, num_descriptors=cfg.kmeans_images * cfg.kmeans_per_image,
                              per_image=cfg.kmeans_per_image, seed=cfg.seed,
                              ctx=DistContext(device=torch.device(cfg.device)))
    except ValueError as err:
        log(f"   k-means skipped, centres stay random: {err}")
        return {"method": "none (k-means impossible)", "reason": str(err)}, False
    init = {"method": "k-means", "num_images": min(ds.num_db, cfg.kmeans_images),
            "num_descriptors": len(model.aggregator.cluster_source[1]), "num_clusters": model.aggregator.num_clusters,
            "alpha": float(alpha), "seed": cfg.seed}
    log(f"   k-means: {init['num_clusters']} centres from {init['num_descriptors']} local descriptors of "
        f"{init['num_images']} database images (alpha {alpha:.1f}); aggregator untrained")
    return init, True


def _runtime(model: torch.nn.Module, ds: VPRDataset, cfg: RunConfig, runtime: str):
    """(the module or registry.Runtime extraction runs, its facts for the record). Built before timing, and run on one
    batch of database images so compilation or onnxruntime's first-run planning is not timed as encoding; onnx-int8
    is calibrated on --calibration-images database images spread evenly over the database."""
    from registry.runtimes import compile_for, evenly_spaced

    calibration = evenly_spaced(ds.db_images, cfg.calibration_images) if runtime == "onnx-int8" else None
    rt = compile_for(model, runtime, calibration=calibration)
    extract_descriptors(rt, ds.db_images[: cfg.batch_size], batch_size=cfg.batch_size, progress=False)
    facts = rt.facts()
    if calibration is not None:
        facts["calibration"]["images"] = f"{len(calibration)} database images of {ds.name}, evenly spaced"
        cos = facts["calibration"]["cosine_to_float32_on_calibration"]
        log(f"   int8: calibrated on {len(calibration)} database images; cosine to float32 on them "
            f"{cos['mean']:.4f} mean, {cos['min']:.4f} worst")
    return rt, facts


def evaluate(spec: ModelSpec, ds: VPRDataset, cfg: RunConfig, out_dir: Path, runtime: str = "torch",
             models: Optional[Models] = None) -> Dict[str, Any]:
    """Evaluate one model, run by `runtime` (registry.RUNTIMES; 'torch' is the model itself), on one dataset and write
    its grids, heat maps and descriptors; returns its record. `models`: the run's models, built or loaded once (a
    copy is evaluated); without it the model is built here."""
    model = models.get(spec) if models is not None else build_model(spec, cfg.input_size, cfg.backbone_weights,
                                                                     cfg.seed)
    model = model.eval().to(cfg.device)
    _, h, w = model.input_config["input_size"]
    shown = "" if runtime == "torch" else f", runtime {runtime}"
    log(f"== {spec.label} ({model.name}{shown}) on {ds.summary()} at {h}x{w}")
    init: Dict[str, Any] = {"method": "pretrained" if spec.pretrained else "none"}
    stem = f"{safe_name(spec.label)}__{safe_name(ds.name)}" + ("" if runtime == "torch" else f"__{runtime}")
    centres = out_dir / "centroids" / f"{stem}.h5"
    clustered = not spec.pretrained and cfg.init == "kmeans" and has_clusters(model.aggregator)
    if clustered:
        init, clustered = _kmeans_init(model, ds, cfg, centres)
    source, trained = weights_source(spec, model, cfg.backbone_weights, clustered)
    fit_now, whitening = _whitening_plan(model, cfg.whitening, ds.num_db)
    pca_k = _pca_from_whitening(model, cfg, fit_now)
    if pca_k is not None and not fit_now:  # keep the pretrained whitening's leading components from the start
        model.set_descriptor_dim(pca_k)
    amp = cfg.device.startswith("cuda") if cfg.amp is None else cfg.amp
    runtime_facts: Dict[str, Any] = {"runtime": runtime}
    if runtime != "torch":
        net, runtime_facts = _runtime(model, ds, cfg, runtime)
    else:
        net = _compiled(model, ds, cfg, amp) if cfg.compile else model
    q, db, seconds, mem = _extract(net, ds, cfg, cfg.store / stem if cfg.store is not None else None, amp)
    if fit_now:
        q, db = _fit_whitening(model, q, db, pca_k)
    facts, pred = retrieval(q, db, ds, cfg if pca_k is None else _without_pca(cfg))
    record: Dict[str, Any] = {
        "model": spec.label, "architecture": model.name, "dataset": ds.name,
        "num_queries": ds.num_queries, "num_database": ds.num_db, "input_size": f"{h}x{w}",
        **facts, "descriptor_dim": int(q.shape[1]), **_costs(model, net, ds, cfg, amp),
        "images_per_s": (ds.num_queries + ds.num_db) / seconds, "extract_s": seconds,
        "peak_memory_mib": mem.mib, "memory_measure": mem.kind, "weights": source, "trained": trained,
        "init": init, "whitening": whitening, "index": cfg.index, "pca": _pca_note(cfg, pca_k),
        "rerank": cfg.rerank,
        "amp": amp, "compiled": cfg.compile, "runtime": runtime, "runtime_facts": runtime_facts,
        "files": ([str(centres.relative_to(out_dir))] if clustered else []) +
        _artefacts(model, stem, spec.label, ds, cfg, out_dir, q, db, pred),
    }
    log(f"   R@1 {record['recall'][min(cfg.recall_ns)]:.1f}  dim {record['descriptor_dim']}  "
        f"{record['images_per_s']:.1f} img/s  {record['latency_ms']:.0f} ms/image at batch 1  weights: {source}")
    return record


def _extract(net, ds: VPRDataset, cfg: RunConfig, store: Optional[Path], amp: bool):
    """(query descriptors, database descriptors, seconds, PeakMemory) of the timed extraction; with a `store` folder
    the database stays in its map store (read through it on demand)."""
    with PeakMemory(torch.device(cfg.device)) as mem:
        start = time.perf_counter()
        extract_kwargs = dict(batch_size=cfg.batch_size, device=cfg.device, num_workers=cfg.num_workers, amp=amp,
                              progress=cfg.progress)
        if store is not None:
            q_store, db_store = extract_dataset_to_store(net, ds, store, **extract_kwargs)
            q, db = np.asarray(q_store.descriptors), db_store.descriptors
        else:
            q, db = extract_dataset(net, ds, **extract_kwargs)
        seconds = time.perf_counter() - start
    return q, db, seconds, mem


def _fit_whitening(model: torch.nn.Module, q: np.ndarray, db, pca_k: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
    """The model's whitening fitted on all the database descriptors (read from a store: all of them), then applied
    to both sets; with --pca-from whitening it keeps its `pca_k` leading components."""
    db = np.array(db)
    model.whitening.fit(torch.from_numpy(db))
    if pca_k is not None:
        model.set_descriptor_dim(pca_k)
    return whiten(model.whitening, q), whiten(model.whitening, db)


def _pca_note(cfg: RunConfig, pca_k: Optional[int]) -> Optional[str]:
    """Where the index's PCA step comes from, for the record (None: it has none)."""
    if pca_k is not None:
        return f"the {pca_k} leading components of the model's whitening"
    return "PCA fitted on the database descriptors" if _pca_dim(cfg) is not None else None


def _artefacts(model, stem: str, label: str, ds: VPRDataset, cfg: RunConfig, out_dir: Path, q: np.ndarray,
               db: np.ndarray, pred: np.ndarray) -> List[str]:
    """Descriptor files, prediction grids and heat maps; paths relative to the output folder."""
    files: List[Path] = []
    if cfg.save_descriptors:
        files += save_descriptors(out_dir / "descriptors" / f"{stem}.npz", q, db)
    chosen = pick_queries(ds.num_queries, cfg.num_preds_to_save)
    if chosen:
        files += grids.save_grids(ds, chosen, pred[:, : cfg.top_k], out_dir / "predictions" / stem)
    chosen = pick_queries(ds.num_queries, cfg.save_attention)
    if chosen:
        files += attention.save_attention(model, ds, chosen, out_dir / "attention" / safe_name(label), title=label)
    return [str(Path(f).relative_to(out_dir)) for f in files]
