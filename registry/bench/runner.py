"""The benchmark runner: every model on every dataset (Recall@N, size, GFLOPs, speed, memory, weights' origin),
results written after each pair. Its command line is `vpr bench` (registry.cli.bench)."""
from __future__ import annotations

import platform
import shlex
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

from .._util.files import unwritable
from .config import RunConfig

# the rest of the runner imports torch and the datasets: imported in run(), so --help and argument errors are quick


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _preflight(cfg: RunConfig) -> tuple:
    """Resolve every model and load every dataset and every pretrained model (once: the evaluations copy it) before
    any evaluation; (model specs, datasets, the run's Models)."""
    from .data import load_all
    from .models import Models, parse_model

    try:
        specs = [parse_model(token, cfg.untrained) for token in cfg.models]
        datasets = load_all(cfg.datasets, cfg.data_root, cfg.tolerance, cfg.pos_radius)
    except ValueError as err:
        cfg.fail(str(err))
    if cfg.backbone_weights is not None:
        _check_backbone_weights_apply(cfg, specs)
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        cfg.fail(f"--models lists a model twice: {','.join(labels)}")
    seen: Dict[tuple, str] = {}
    for spec in specs:  # `gem,gem_vgg16` or a folder given twice: the same model, evaluated twice for nothing
        key = (spec.name, str(Path(spec.source).resolve()) if spec.source and Path(spec.source).exists()
               else spec.source)
        if key in seen:
            cfg.fail(f"--models {seen[key]!r} and {spec.label!r} are the same model"
                 f"{f' ({spec.name})' if spec.name and not spec.source else ''}: list it once")
        seen[key] = spec.label
    models = Models(cfg.input_size, cfg.backbone_weights, cfg.seed)
    for spec in (s for s in specs if s.pretrained):
        try:
            models.load(spec)
        except Exception as err:  # any loading failure is reported before the long part starts
            cfg.fail(f"--models {spec.label!r} cannot be loaded: {type(err).__name__}: {err}")
    return specs, datasets, models


class PairsFailed(RuntimeError):
    """Some (model, dataset) pairs failed; the others' results were written. Carries both."""

    def __init__(self, records: List[Dict[str, Any]], failures: List[Dict[str, str]]) -> None:
        super().__init__(f"{len(failures)} of {len(records) + len(failures)} (model, dataset) pairs failed")
        self.records, self.failures = records, failures


def _meta(cfg: RunConfig, datasets, records: Sequence[Dict[str, Any]], seconds: float,
          failures: Sequence[Dict[str, str]] = ()) -> Dict[str, Any]:
    import torch

    from . import report
    from .data import describe
    from .metrics import FLOPS_NOTE

    return {
        "command": cfg.command + (" " + shlex.join(cfg.argv) if cfg.argv else ""),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "elapsed_s": round(seconds, 1),
        "device": _device_name(cfg.device),
        "torch": torch.__version__,
        "input_size": "x".join(map(str, cfg.input_size)) if cfg.input_size else "each model's own",
        "embedded_default": cfg.embedded_default, "untrained": cfg.untrained,
        "batch_size": cfg.batch_size, "num_workers": cfg.num_workers, "latency_repeats": cfg.latency_repeats,
        "runtimes": list(cfg.runtime), "calibration_images": cfg.calibration_images,
        "index": cfg.index, "index_options": dict(cfg.index_options),
        "pca_from": cfg.pca_from, "rerank": list(cfg.rerank_params or ()) or None,
        "init": cfg.init, "kmeans_images": cfg.kmeans_images, "kmeans_per_image": cfg.kmeans_per_image,
        "whitening": cfg.whitening, "backbone_weights": cfg.backbone_weights, "seed": cfg.seed,
        "flops_note": FLOPS_NOTE, "memory_measure": records[0]["memory_measure"] if records else None,
        "untrained_models": report.untrained(records),
        "datasets": [describe(ds) for ds in datasets],
        "recall_ns": list(cfg.recall_ns),
        "failed": list(failures),
    }


def _check_backbone_weights_apply(cfg: RunConfig, specs: list) -> None:
    """--backbone-weights reaches only models built from the registry: refused when no model is (it would be
    ignored), and the models that ignore it named when some are."""
    from .evaluate import log

    built = [s.label for s in specs if not s.pretrained]
    loaded = [s.label for s in specs if s.pretrained]
    if not built:
        cfg.fail(f"--backbone-weights {cfg.backbone_weights} would be ignored: every model here loads trained weights "
                 f"({', '.join(loaded)}: a release, a repository or a folder), and the backbone weights only reach "
                 "models built from the registry. Add --untrained to build the registry models with these backbone "
                 "weights, or drop --backbone-weights")
    if loaded:
        log(f"note: --backbone-weights {Path(cfg.backbone_weights).name} is used by {', '.join(built)} only; "
            f"{', '.join(loaded)} load trained weights and ignore it")


def run(cfg: RunConfig) -> List[Dict[str, Any]]:
    """Evaluate every model on every dataset; results.json/csv/md are rewritten after each pair, so a crash or a
    kill loses only the pair in progress. A failing pair is reported and the rest still run; returns the records,
    or raises PairsFailed (after writing every output) when some pair failed."""
    from . import plots, report
    from .evaluate import evaluate, log

    start = time.perf_counter()
    problem = unwritable(cfg.store) if cfg.store is not None else None
    if problem:  # before any model is built: else every pair would fail on its first chunk
        cfg.fail(f"--store {cfg.store} cannot be written: {problem}; pass --store with a folder you can write to")
    specs, datasets, models = _preflight(cfg)
    if cfg.backbone_weights is None and any(not s.pretrained for s in specs):
        log("note: no --backbone-weights, so models built from the registry have RANDOM weights")
    try:
        cfg.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        cfg.fail(f"--output-dir {cfg.output_dir} cannot be created: {err}; pass --output-dir with a folder you can "
             "write to")
    records: List[Dict[str, Any]] = []
    failures: List[Dict[str, str]] = []
    for ds in datasets:
        for spec in specs:
            for runtime in cfg.runtime:
                label = spec.label if runtime == "torch" else f"{spec.label} ({runtime})"
                try:
                    records.append(evaluate(spec, ds, cfg, cfg.output_dir, runtime, models=models))
                except Exception as err:  # noqa: BLE001  (one pair's failure must not cost the other pairs' results)
                    failures.append({"model": label, "dataset": ds.name, "error": f"{type(err).__name__}: {err}"})
                    log(f"FAILED: {label} on {ds.name}: {type(err).__name__}: {err} (continuing with the rest)")
                paths = report.write_all(records, _meta(cfg, datasets, records, time.perf_counter() - start,
                                                        failures), cfg.output_dir)
    if records:
        plots.recall_curves(records, cfg.output_dir / "recall_at_n.png")
        plots.speed_vs_recall(records, cfg.output_dir / "speed_vs_recall.png")
        print(report.table(records))
        seq = report.sequence_table(records)
        if seq:
            print("\nSequence matching (the last L frames of the route):\n" + seq)
    warn = report.warning_line(records)
    if warn:
        print("\n" + warn)
    extra = sum(len(r["files"]) for r in records)
    more = f", {extra} more files (k-means centres, grids, heat maps, descriptors)" if extra else ""
    plotted = ", recall_at_n.png, speed_vs_recall.png" if records else ""
    log(f"results in {cfg.output_dir}/: {', '.join(p.name for p in paths.values())}{plotted}{more}")
    if failures:
        raise PairsFailed(records, failures)
    return records
