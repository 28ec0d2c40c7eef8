"""`vpr release`: turn finished training runs into bundled releases (`build`) and publish them to the Hugging
Face Hub (`publish`).

    vpr release build --tag nordland --runs runs/release_clusvpr_seed0 runs/release_netvlad_seed0 \\
        --data-root path/to/datasets --reference-dir tests/release_reference
    vpr release publish --namespace ORG              # push, pull back, compare; print the pins to record
    vpr release publish --namespace ORG --record     # also write them to the packages' published.json

`build`: runs of one model compete on their final validation recall (the trainer's `--select-by` metric, after its
whitening choice); the test sets are measured only on the chosen run. Each release folder holds config.json (the
sha256 of every file, the training recipe and command, seed, code commit, evaluation protocol and the recalls
measured on the stored half-precision weights), model.safetensors (float16), centroids.h5 (the k-means centres and a
sample of the descriptors they came from, enough to re-derive NetVLAD's alpha) and README.md (the model card). It
writes into the folder the model's bundled releases live in (in the installed package: use an editable install of
a clone), or --out-dir. The validation set (nordland_val) is read from --data-root or $VPR_DATA.

`publish`: for each release bundled in the package it pushes the model with its card and half-precision weights to
`ORG/<model>-<tag>` (underscores become dashes), pulls that exact commit back into a fresh cache, checks that the
pulled descriptors of the embedded reference images equal the bundled model's bit for bit, and prints one
`name.tag = ORG/repo@<commit>` line per release. Recorded pins (`--record`, or by hand in the `published.json`
beside the release folder) make `pretrained=True` prefer the Hub copy over the bundled one. Log in first
(`hf auth login`) or pass --token.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

import registry
from registry import PUBLISHED_FILE

from .._atomic import atomic_path
from ..datasets import PROBE_IMAGES, load_dataset
from ..evaluation.recall_table import recall_table
from ..training.clusters import set_cluster_source
from ._console import console_logging

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
        raise SystemExit(f"{run}: no train/summary.json; is the run finished? (vpr train ... --output {run} "
                         "--resume continues it)")
    return json.loads(path.read_text())


def _commit(run: Path) -> Optional[str]:
    """The code commit recorded beside the run (`<run>.commit`, as benchmarks/release.sh writes it)."""
    path = run.parent / f"{run.name}.commit"
    return path.read_text().strip() if path.is_file() else None


def _evaluate(model: registry.VPRModel, names: List[str], data_root: Optional[str]) -> Dict[str, Dict[str, float]]:
    return recall_table(model, [load_dataset(name, data_root) for name in names])


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
    """Descriptors of the fixed embedded images, one image at a time: what the release tests compare a stored copy
    with, and what publishing compares the pulled copy with."""
    from PIL import Image

    pre = model.transform()
    model.eval()
    return {key: model(pre(Image.open(path).convert("RGB")).unsqueeze(0))[0].numpy()
            for key, path in PROBE_IMAGES.items()}


def release_folder(name: str, out_dir: Optional[Path]) -> Path:
    """Where the release of `name` goes: `out_dir`, else the folder its bundled releases already live in (in the
    package that registers it)."""
    if out_dir is not None:
        return Path(out_dir)
    folders = {r.folder.parent for r in registry.get_entry(name).releases.values() if r.folder is not None}
    if len(folders) != 1:
        raise SystemExit(f"{name} has no bundled release folder to add to: pass --out-dir")
    return folders.pop()


def bundle(name: str, runs: List[Path], tag: str, data_root: Optional[str], out_dir: Optional[Path],
           drop_whitening: bool = False, reference_dir: Optional[Path] = None) -> Dict[str, Any]:
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
    target = release_folder(name, out_dir) / release_name
    cmd = summary["command"]
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
    if reference_dir is not None:
        reference_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(reference_dir / f"{release_name}.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **reference_descriptors(fp32))
    size = sum(p.stat().st_size for p in target.iterdir())
    return {"release": release_name, "folder": str(target), "chosen": chosen.name,
            "scores": {r.name: scores[r] for r in runs}, "fp32": summary["test"], "fp16": recalls,
            "bytes": size, "eval_seconds": round(time.time() - start, 1)}




def bundled_releases(names: Optional[Sequence[str]] = None) -> Dict[str, Path]:
    """`name.tag` -> bundled folder, for every release (or the `names` given) that ships a folder."""
    found = {}
    for full in registry.list_models(pretrained=True):
        base, tag = registry.split_tag(full)
        release = registry.get_entry(base).release(tag)
        if release.folder is not None:
            found[full] = release.folder
    if names:
        unknown = sorted(set(names) - set(found))
        if unknown:
            raise SystemExit(f"no bundled release named {unknown}; bundled: {sorted(found)}")
        found = {n: found[n] for n in names}
    return found


def repo_name(full: str) -> str:
    """Hub repository name of a release: `clusvpr_vgg16.nordland` -> `clusvpr-vgg16-nordland`."""
    return full.replace("_", "-").replace(".", "-")


def publish(namespace: str, names: Optional[Sequence[str]] = None, token: Optional[str] = None,
            endpoint: Optional[str] = None, private: bool = False) -> Dict[str, str]:
    """Push, pull back and compare every bundled release; returns `name.tag` -> `org/repo@commit`."""
    pins = {}
    for full, folder in bundled_releases(names).items():
        model = registry.VPRModel.from_pretrained(str(folder))
        # the bundled copy's stored precision, kept on the Hub
        dtype = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("weights_dtype")
        repo_id = f"{namespace}/{repo_name(full)}"
        commit = model.push_to_hub(repo_id, token=token, endpoint=endpoint, private=private, dtype=dtype,
                                   commit_message=f"Release {full}")
        with tempfile.TemporaryDirectory(prefix="clusvpr-publish-") as cache:
            pulled = registry.VPRModel.from_pretrained(f"{repo_id}@{commit}", cache_dir=cache, token=token,
                                                       endpoint=endpoint)
            bundled, got = reference_descriptors(model), reference_descriptors(pulled)
            if any(not np.array_equal(bundled[key], got[key]) for key in bundled):
                raise SystemExit(f"{repo_id}@{commit} gives other descriptors than the bundled {full}")
        pins[full] = f"{repo_id}@{commit}"
        print(f"{full} = {pins[full]}  (pulled back: descriptors bit-identical)", flush=True)
    return pins


def record(pins: Dict[str, str]) -> List[Path]:
    """Write the pins into the `published.json` beside each release folder; returns the files written."""
    written = {}
    for full, pin in pins.items():
        base, tag = registry.split_tag(full)
        path = registry.get_entry(base).release(tag).folder.parent / PUBLISHED_FILE
        table = written.get(path) or (json.loads(path.read_text()) if path.is_file() else {})
        table[full] = pin
        written[path] = table
    for path, table in written.items():
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
    return list(written)


def build_parser(prog: str = "vpr release") -> argparse.ArgumentParser:
    """`vpr release build|publish` (every option documented)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True, metavar="{build,publish}")
    b = sub.add_parser("build", help="bundle finished training runs as releases")
    b.add_argument("--runs", nargs="+", required=True, type=Path, help="finished `vpr train` output folders")
    b.add_argument("--tag", default="nordland", help="release tag (default nordland)")
    b.add_argument("--data-root", help="folder holding nordland/ (default: $VPR_DATA)")
    b.add_argument("--out-dir", type=Path, help="write releases here instead of the folder each model's bundled "
                   "releases live in")
    b.add_argument("--reference-dir", type=Path, help="also write each release's reference descriptors of the "
                   "embedded probe images here (<name.tag>.npz; what the release tests compare against)")
    b.add_argument("--drop-whitening", nargs="+", default=[], metavar="MODEL",
                   help="release these models without their PCA whitening (recorded in the release facts), e.g. "
                        "when the whitening does not fit the size budget")
    u = sub.add_parser("publish", help="push every bundled release to the Hub, pull it back and compare")
    u.add_argument("--namespace", required=True, help="Hub user or organisation to publish under")
    u.add_argument("--releases", nargs="+", metavar="NAME.TAG", help="only these releases (default: every one)")
    u.add_argument("--token", help="Hub token with write access (default: the logged-in one)")
    u.add_argument("--endpoint", help="Hub endpoint (default: huggingface_hub's, i.e. HF_ENDPOINT)")
    u.add_argument("--private", action="store_true", help="create the repositories as private")
    u.add_argument("--record", action="store_true",
                   help="write the pins into the packages' published.json (then pretrained=True prefers them)")
    return p


def main(argv: Optional[Sequence[str]] = None, prog: str = "vpr release") -> int:
    a = build_parser(prog).parse_args(argv)
    with console_logging():
        if a.action == "build":
            by_model: Dict[str, List[Path]] = {}
            for run in a.runs:
                arch = json.loads((run / "config.json").read_text())["architecture"]
                by_model.setdefault(arch, []).append(run)
            drop = {registry.resolve_name(m) for m in a.drop_whitening}
            report = [bundle(name, runs, a.tag, a.data_root, a.out_dir, name in drop, a.reference_dir)
                      for name, runs in by_model.items()]
            print(json.dumps(report, indent=2))
            return 0
        pins = publish(a.namespace, a.releases, a.token, a.endpoint, a.private)
        if a.record:
            for path in record(pins):
                print(f"recorded in {path}")
        else:
            print("record these pins with --record (or in the published.json beside each release folder)")
        return 0
