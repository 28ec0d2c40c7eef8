"""Turn finished training runs into bundled releases: pick each model's run on validation, store it in half
precision in the Hub layout inside the package, measure the stored copy, and record reference descriptors.

    python benchmarks/make_release.py --tag nordland --runs runs/release_clusvpr_seed0 runs/release_clusvpr_seed1 \\
        runs/release_netvlad_seed0 runs/release_gem_seed0

Runs of one model compete on their final validation recall (the trainer's `--select-by` metric, after its
whitening choice); the test sets are measured only on the chosen run. Each release folder holds config.json
(the sha256 of every file, the training recipe and command, seed, code commit, evaluation protocol and the
recalls measured on the stored half-precision weights), model.safetensors (float16), centroids.h5 (the k-means
centres and a sample of the descriptors they came from, enough to re-derive NetVLAD's alpha) and README.md (the
model card). Needs ../shared for the validation set (the test sets are embedded in the package).
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

import registry
from registry.datasets import PROBE_IMAGES, load_dataset
from registry.evaluation import extract_dataset, recall_at_n
from registry.training.clusters import set_cluster_source

ROOT = Path(__file__).resolve().parents[1]
RELEASE_DIRS = {"clusvpr_vgg16": ROOT / "clusvpr_plugin" / "releases"}  # plugin models ship with their plugin
DEFAULT_RELEASE_DIR = ROOT / "registry" / "releases"
REFERENCE_DIR = ROOT / "tests" / "release_reference"
CENTROID_SAMPLE = 500
TEST_SETS = ("nordland_test", "corridor")
VAL_SET = "nordland_val"
NORDLAND = ("{n} winter frames (queries) against the {n} summer frames (database) of places {a}..{b} of the trimmed "
            "Nordland traversal; a match is correct within +-1 place (+-10 original frames)")
PROTOCOL = {
    "nordland_val": {"data": NORDLAND.format(n=400, a=1601, b=2000)},
    "nordland_test": {"data": NORDLAND.format(n=400, a=2001, b=2400)},
    "corridor": {"data": "111 query and 111 reference frames of the indoor Corridor set (VPR-Bench ground truth: "
                         "reference i-2..i+2 is correct for query i); not seen in training"},
}
TRAINED_ON = ("Nordland railway footage (NRK): winter frames as queries, summer frames as database, places "
              "1..1600 of the trimmed 64x32 greyscale-like traversal upsampled to {h}x{w}; chosen on places "
              "1601..2000")
NOT_FOR = ("a general street-level or urban place recognition model: it has seen only low-resolution (64x32), "
           "greyscale-like frames from one train camera on one railway line; measure it on your own data first")


def _summary(run: Path) -> Dict[str, Any]:
    path = run / "train" / "summary.json"
    if not path.is_file():
        raise SystemExit(f"{run}: no train/summary.json; is the run finished? (python benchmarks/train.py ... "
                         f"--output {run} --resume continues it)")
    return json.loads(path.read_text())


def _commit(run: Path) -> Optional[str]:
    """The code commit recorded beside the run by benchmarks/release.sh."""
    path = run.parent / f"{run.name}.commit"
    return path.read_text().strip() if path.is_file() else None


def _evaluate(model: registry.VPRModel, names: List[str], data_root: Optional[str]) -> Dict[str, Dict[str, float]]:
    out = {}
    for name in names:
        ds = load_dataset(name, data_root)
        q, db = extract_dataset(model, ds, batch_size=32, device="cpu")
        rec = recall_at_n(q, db, ds.positives, (1, 5, 10), ignore=ds.ignore)["recall"]
        out[name] = {f"R@{n}": round(float(v), 2) for n, v in rec.items()}
    return out


def _release_model(run: Path, seed: int) -> registry.VPRModel:
    """The run's model (float32) with its centres and a fixed sample of their descriptors attached."""
    model = registry.VPRModel.from_pretrained(str(run))
    # the backbone the run started from (a rebuilt model records "random init": its weights come from the file)
    model.config["backbone_weights"] = json.loads((run / "config.json").read_text())["backbone_weights"]
    centroids_file = run / "centroids.h5"
    if centroids_file.is_file():
        from registry import h5io

        centroids, descriptors = h5io.load_centroids(centroids_file)
        pick = np.sort(np.random.default_rng(seed).choice(len(descriptors), min(CENTROID_SAMPLE, len(descriptors)),
                                                          replace=False))
        set_cluster_source(model.aggregator, (centroids, descriptors[torch.from_numpy(pick)]))
    return model


@torch.no_grad()
def reference_descriptors(model: registry.VPRModel) -> Dict[str, np.ndarray]:
    """Descriptors of the fixed embedded images (float32 model), for the tests of the stored copy."""
    from PIL import Image

    pre = model.transform()
    model.eval()
    return {key: model(pre(Image.open(path).convert("RGB")).unsqueeze(0))[0].numpy()
            for key, path in PROBE_IMAGES.items()}


def bundle(name: str, runs: List[Path], tag: str, data_root: Optional[str], out_dir: Optional[Path],
           drop_whitening: bool = False) -> Dict[str, Any]:
    summaries = {run: _summary(run) for run in runs}
    options = {run: json.loads((run / "config.json").read_text())["training"]["options"] for run in runs}
    select_by = options[runs[0]]["select_by"]
    scores = {run: float(s["final_val"][select_by]) for run, s in summaries.items()}
    seeds = {run: int(options[run]["seed"]) for run in runs}
    chosen = max(runs, key=lambda r: (scores[r], -seeds[r]))
    summary = summaries[chosen]
    fp32 = _release_model(chosen, seeds[chosen])
    dropped = None
    if drop_whitening and fp32.whitening is not None:  # the size budget: a 32768 x 1024 PCA alone is 67 MB in fp16
        selection = (fp32.config.get("training") or {}).get("whitening_selection") or {}
        dropped = {"chosen_on_validation": selection.get("chosen"), "candidates": selection.get("candidates")}
        fp32.set_whitening_dim(None)
    h, w = fp32.input_config["input_size"][1:]
    release_name = f"{name}.{tag}"
    target = (out_dir or RELEASE_DIRS.get(name, DEFAULT_RELEASE_DIR)) / release_name
    cmd = summary["command"].replace("benchmarks/train.py", "python benchmarks/train.py", 1)
    facts = {
        "name": release_name, "tag": tag, "trained_on": TRAINED_ON.format(h=h, w=w), "not_for": NOT_FOR,
        "command": cmd, "seed": seeds[chosen], "git_commit": _commit(chosen), "run": chosen.name,
        "selection": f"validation {select_by} on {VAL_SET} among seeds " + ", ".join(
            f"{seeds[r]}: {scores[r]:.2f}" for r in sorted(runs, key=lambda r: seeds[r]))
        + f"; chose seed {seeds[chosen]}",
        "fp32_recalls": {k: v for k, v in summary["test"].items()},
    }
    if dropped is not None:
        facts["whitening_dropped"] = dropped
        facts["fp32_recalls"] = _evaluate(fp32, list(TEST_SETS), data_root)  # the unwhitened float32 model
    evaluation = {k: {**PROTOCOL[k], "input": f"resized to {h}x{w} (HxW), bilinear",
                      "search": "exact inner product (faiss) on L2-normalised descriptors"}
                  for k in (VAL_SET,) + TEST_SETS}
    with tempfile.TemporaryDirectory() as tmp:  # measure the half-precision copy that users will load
        fp32.save_pretrained(Path(tmp) / "stage", dtype="float16")
        stored = registry.VPRModel.from_pretrained(str(Path(tmp) / "stage"))
    start = time.time()
    recalls = _evaluate(stored, [VAL_SET, *TEST_SETS], data_root)
    if target.exists():
        shutil.rmtree(target)
    fp32.save_pretrained(target, training=fp32.config.get("training"), evaluation=evaluation, recalls=recalls,
                         release=facts, dtype="float16")
    final = registry.VPRModel.from_pretrained(str(target)).state_dict()
    if any(not torch.equal(v, final[k]) for k, v in stored.state_dict().items()):
        raise SystemExit(f"{target}: the written weights differ from the measured copy")
    REFERENCE_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(REFERENCE_DIR / f"{release_name}.npz", **reference_descriptors(fp32))
    size = sum(p.stat().st_size for p in target.iterdir())
    return {"release": release_name, "folder": str(target), "chosen": chosen.name,
            "scores": {r.name: scores[r] for r in runs}, "fp32": summary["test"], "fp16": recalls,
            "bytes": size, "eval_seconds": round(time.time() - start, 1)}


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, type=Path, help="finished train.py output folders")
    p.add_argument("--tag", default="nordland", help="release tag (default nordland)")
    p.add_argument("--data-root", help="folder holding nordland/ (default: ../shared/data beside the repository)")
    p.add_argument("--out-dir", type=Path, help="write releases here instead of the package's releases folders")
    p.add_argument("--drop-whitening", nargs="+", default=[], metavar="MODEL",
                   help="release these models without their PCA whitening (recorded in the release facts), e.g. "
                        "when the whitening does not fit the size budget")
    a = p.parse_args(argv)
    by_model: Dict[str, List[Path]] = {}
    for run in a.runs:
        arch = json.loads((run / "config.json").read_text())["architecture"]
        by_model.setdefault(arch, []).append(run)
    drop = {registry.resolve_name(m) for m in a.drop_whitening}
    report = [bundle(name, runs, a.tag, a.data_root, a.out_dir, name in drop) for name, runs in by_model.items()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
