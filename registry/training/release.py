"""Releases made from finished training runs: choosing the run, the half-precision round trip the release is measured
on, the bundled folder and its reference descriptors (`build`), and publishing the bundled releases to the Hub with
a pulled-back comparison and the pins that record them (`publish`, `record`).

A run of one model competes with the other runs of that model on its final validation recall (the trainer's
`select_by` metric, after its whitening choice); the test sets are measured only on the chosen run. A release folder
holds config.json (the sha256 of every file, the training recipe and command, seed, code commit, the training
budget and validation curve from the run's train/log.jsonl, evaluation protocol, the recalls measured on the stored
half-precision weights and, given the untrained-start benchmark's JSON, those recalls against the untrained start),
model.safetensors (float16), centroids.h5 (the k-means centres and a sample of the descriptors they came from) and
README.md (the model card).
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

import registry

from .._util.atomic import atomic_path
from .._util.jsonio import read_json
from ..datasets import PROBE_IMAGES, load_dataset
from ..evaluation.recall_table import recall_table
from . import run_record, start_comparison
from .clusters import set_cluster_source
from .state import LOG

_log = logging.getLogger(__name__)

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


class ReleaseError(RuntimeError):
    """A run, release or published copy that cannot be released as asked (the message names it and the fix)."""


def folder_config(folder: Path) -> Dict[str, Any]:
    """config.json of a Hub-layout folder (a training run or a bundled release)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ReleaseError(f"{folder}: no config.json; is it a finished `vpr train` output or a release folder?")
    return read_json(path, fix="it was not written by vpr train / save_pretrained: restore it or train again")


def _summary(run: Path) -> Dict[str, Any]:
    path = run / "train" / "summary.json"
    if not path.is_file():
        raise ReleaseError(f"{run}: no train/summary.json; is the run finished? (vpr train ... --output {run} "
                           "--resume continues it)")
    return json.loads(path.read_text())


def _history(run: Path) -> List[Dict[str, Any]]:
    """The run's train/log.jsonl: one record per epoch, epoch 0 (the start) first."""
    path = run / "train" / LOG
    if not path.is_file():
        raise ReleaseError(f"{run}: no train/{LOG}; the run's per-epoch log is gone: restore it, or train again")
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise ReleaseError(f"{path}: not one JSON record per line ({err}); restore it, or train again") from None


def read_untrained_start(path: Path) -> Dict[str, Any]:
    """The untrained-start benchmark's JSON, checked (`start_comparison.check_result`)."""
    try:
        result = read_json(path, fix="pass the JSON benchmarks/untrained_start.py wrote")
        start_comparison.check_result(result, str(path))
    except FileNotFoundError:
        raise ReleaseError(f"--untrained-start {path}: no such file; run python benchmarks/untrained_start.py "
                           "(it writes benchmarks/untrained/start.json)") from None
    except ValueError as err:
        raise ReleaseError(str(err)) from None
    return result


def _commit(run: Path) -> Optional[str]:
    """The code commit recorded beside the run (`<run>.commit`, as the release script writes it)."""
    path = run.parent / f"{run.name}.commit"
    return path.read_text().strip() if path.is_file() else None


def _evaluate(model: registry.VPRModel, names: Sequence[str], data_root: Optional[str]) -> Dict[str, Dict[str, float]]:
    return recall_table(model, [load_dataset(name, data_root) for name in names])


def _release_model(run: Path, config: Dict[str, Any], seed: int) -> registry.VPRModel:
    """The run's model (float32) with its centres and a fixed sample of their descriptors attached."""
    model = registry.VPRModel.from_pretrained(str(run))
    # the backbone the run started from (a rebuilt model records "random init": its weights come from the file)
    model.config["backbone_weights"] = config["backbone_weights"]
    centroids_file = run / "centroids.h5"
    if centroids_file.is_file():
        from .._util import h5io

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
        raise ReleaseError(f"{name} has no bundled release folder to add to: pass --out-dir")
    return folders.pop()


class _Candidates:
    """The runs of one model: their summaries and config.json, the validation scores they compete on, the winner."""

    def __init__(self, runs: Sequence[Path]) -> None:
        self.runs = list(runs)
        self.summaries = {run: _summary(run) for run in self.runs}
        self.configs = {run: folder_config(run) for run in self.runs}
        options = {run: self.configs[run]["training"]["options"] for run in self.runs}
        self.select_by = options[self.runs[0]]["select_by"]
        self.scores = {run: float(s["final_val"][self.select_by]) for run, s in self.summaries.items()}
        self.seeds = {run: int(options[run]["seed"]) for run in self.runs}
        self.chosen = max(self.runs, key=lambda r: (self.scores[r], -self.seeds[r]))

    def selection(self) -> str:
        seeds = self.seeds
        return (f"validation {self.select_by} on {VAL_SET} among seeds "
                + ", ".join(f"{seeds[r]}: {self.scores[r]:.2f}" for r in sorted(self.runs, key=lambda r: seeds[r]))
                + f"; chose seed {seeds[self.chosen]}")


def _release_facts(runs: _Candidates, release_name: str, tag: str, input_hw: Sequence[int]) -> Dict[str, Any]:
    chosen, summary = runs.chosen, runs.summaries[runs.chosen]
    history = _history(chosen)
    return {
        "name": release_name, "tag": tag, "trained_on": TRAINED_ON.format(h=input_hw[0], w=input_hw[1]),
        "not_for": NOT_FOR, "command": summary["command"], "seed": runs.seeds[chosen], "git_commit": _commit(chosen),
        "run": chosen.name, "selection": runs.selection(), "fp32_recalls": dict(summary["test"]),
        "budget": run_record.budget(runs.configs[chosen]["training"]["options"], history, summary),
        "validation_curve": run_record.validation_curve(history, summary.get("best") or {}),
    }


def _drop_whitening(fp32: registry.VPRModel) -> Dict[str, Any]:
    """Remove the model's whitening (the size budget: a 32768 x 1024 PCA alone is 67 MB in fp16); what the release
    facts record of the size chosen on validation."""
    selection = (fp32.config.get("training") or {}).get("whitening_selection") or {}
    fp32.set_whitening_dim(None)
    return {"chosen_on_validation": selection.get("chosen"), "candidates": selection.get("candidates")}


def _against_start(stored: registry.VPRModel, untrained: Dict[str, Any], recalls: Dict[str, Dict[str, float]],
                   data_root: Optional[str]) -> Dict[str, Any]:
    """The stored copy against its untrained start on every dataset the start was measured on (`untrained`: an
    untrained-start benchmark result); the datasets the release has no recalls of are measured here."""
    architecture = str(stored.config.get("architecture"))
    entry = start_comparison.start_of(untrained, architecture)
    missing = [d for d in (entry or {}).get("start", {}) if d not in recalls]
    try:  # one at a time: a dataset loaded by its spec (aligned:FOLDER) is named otherwise in the recall table
        measured = {d: next(iter(_evaluate(stored, [d], data_root).values())) for d in missing}
    except FileNotFoundError as err:
        raise ReleaseError(f"the untrained-start file measured {architecture}'s start on {', '.join(missing)}, which "
                           f"this release must be measured on too: {err} (pass --data-root holding them)") from None
    return start_comparison.comparison(untrained, architecture, recalls, measured)


def _write_release(fp32: registry.VPRModel, target: Path, data_root: Optional[str],
                   untrained: Optional[Dict[str, Any]] = None,
                   **facts: Any) -> Tuple[Dict[str, Dict[str, float]], float]:
    """Measure the half-precision copy users will load (and against its `untrained` start, when given, recorded in
    the release facts), write it to `target` with `facts` and check the written weights are the measured ones; the
    recalls measured and when their measurement started (`time.time()`)."""
    with tempfile.TemporaryDirectory() as tmp:
        fp32.save_pretrained(Path(tmp) / "stage", dtype="float16")
        stored = registry.VPRModel.from_pretrained(str(Path(tmp) / "stage"))
    start = time.time()
    recalls = _evaluate(stored, [VAL_SET, *TEST_SETS], data_root)
    if untrained is not None:
        facts["release"]["untrained_start"] = _against_start(stored, untrained, recalls, data_root)
    if target.exists():
        shutil.rmtree(target)
    fp32.save_pretrained(target, training=fp32.config.get("training"), recalls=recalls, dtype="float16", **facts)
    final = registry.VPRModel.from_pretrained(str(target)).state_dict()
    if any(not torch.equal(v, final[k]) for k, v in stored.state_dict().items()):
        raise ReleaseError(f"{target}: the written weights differ from the measured copy")
    return recalls, start


def _write_reference(fp32: registry.VPRModel, reference_dir: Path, release_name: str) -> None:
    reference_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(reference_dir / f"{release_name}.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **reference_descriptors(fp32))


def bundle(name: str, runs: List[Path], tag: str, data_root: Optional[str], out_dir: Optional[Path],
           drop_whitening: bool = False, reference_dir: Optional[Path] = None,
           untrained: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Release `name.tag` from the best of `runs` (finished runs of model `name`), compared with its start when
    `untrained` (an untrained-start benchmark result) is given; its report."""
    candidates = _Candidates(runs)
    chosen = candidates.chosen
    fp32 = _release_model(chosen, candidates.configs[chosen], candidates.seeds[chosen])
    h, w = fp32.input_config["input_size"][1:]
    release_name = f"{name}.{tag}"
    target = release_folder(name, out_dir) / release_name
    facts = _release_facts(candidates, release_name, tag, (h, w))
    if drop_whitening and fp32.whitening is not None:
        facts["whitening_dropped"] = _drop_whitening(fp32)
        facts["fp32_recalls"] = _evaluate(fp32, list(TEST_SETS), data_root)  # the unwhitened float32 model
    evaluation = {k: {**PROTOCOL[k], "input": f"resized to {h}x{w} (HxW), bilinear",
                      "search": "exact inner product (faiss) on L2-normalised descriptors"}
                  for k in (VAL_SET,) + TEST_SETS}
    recalls, start = _write_release(fp32, target, data_root, untrained, evaluation=evaluation, release=facts)
    if reference_dir is not None:
        _write_reference(fp32, reference_dir, release_name)
    return {"release": release_name, "folder": str(target), "chosen": chosen.name,
            "scores": {r.name: candidates.scores[r] for r in runs}, "fp32": candidates.summaries[chosen]["test"],
            "fp16": recalls, "bytes": sum(p.stat().st_size for p in target.iterdir()),
            "eval_seconds": round(time.time() - start, 1)}


def build(runs: Sequence[Path], tag: str, data_root: Optional[str] = None, out_dir: Optional[Path] = None,
          drop_whitening: Sequence[str] = (), reference_dir: Optional[Path] = None,
          untrained_start: Optional[Path] = None) -> List[Dict[str, Any]]:
    """One release per model among `runs` (grouped by the architecture their config.json names), each from its
    best run (`bundle`); `drop_whitening` names the models released without their PCA whitening; `untrained_start`
    is the untrained-start benchmark's JSON, to compare each release with its start. The reports."""
    by_model: Dict[str, List[Path]] = {}
    for run in map(Path, runs):
        by_model.setdefault(folder_config(run)["architecture"], []).append(run)
    drop = {registry.resolve_name(m) for m in drop_whitening}
    untrained = read_untrained_start(Path(untrained_start)) if untrained_start is not None else None
    return [bundle(name, group, tag, data_root, out_dir, name in drop, reference_dir, untrained)
            for name, group in by_model.items()]


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
            raise ReleaseError(f"no bundled release named {unknown}; bundled: {sorted(found)}")
        found = {n: found[n] for n in names}
    return found


def repo_name(full: str) -> str:
    """Hub repository name of a release: `clusvpr_vgg16.nordland` -> `clusvpr-vgg16-nordland`."""
    return full.replace("_", "-").replace(".", "-")


def publish(namespace: str, names: Optional[Sequence[str]] = None, token: Optional[str] = None,
            endpoint: Optional[str] = None, private: bool = False) -> Dict[str, str]:
    """Push every bundled release (or the `names` given) with its stored precision, pull that commit back into a
    fresh cache and check its descriptors of the embedded images equal the bundled copy's bit for bit; returns
    `name.tag` -> `org/repo@commit`."""
    pins = {}
    for full, folder in bundled_releases(names).items():
        model = registry.VPRModel.from_pretrained(str(folder))
        repo_id = f"{namespace}/{repo_name(full)}"
        commit = model.push_to_hub(repo_id, token=token, endpoint=endpoint, private=private,
                                   dtype=folder_config(folder).get("weights_dtype"), commit_message=f"Release {full}")
        with tempfile.TemporaryDirectory(prefix="clusvpr-publish-") as cache:
            pulled = registry.VPRModel.from_pretrained(f"{repo_id}@{commit}", cache_dir=cache, token=token,
                                                       endpoint=endpoint)
            bundled, got = reference_descriptors(model), reference_descriptors(pulled)
            if any(not np.array_equal(bundled[key], got[key]) for key in bundled):
                raise ReleaseError(f"{repo_id}@{commit} gives other descriptors than the bundled {full}")
        pins[full] = f"{repo_id}@{commit}"
        _log.info("%s = %s  (pulled back: descriptors bit-identical)", full, pins[full])
    return pins


def record(pins: Dict[str, str]) -> List[Path]:
    """Write the pins into the `published.json` beside each release folder; returns the files written."""
    written: Dict[Path, Dict[str, str]] = {}
    for full, pin in pins.items():
        base, tag = registry.split_tag(full)
        path = registry.get_entry(base).release(tag).folder.parent / registry.PUBLISHED_FILE
        table = written.get(path) or (json.loads(path.read_text()) if path.is_file() else {})
        table[full] = pin
        written[path] = table
    for path, table in written.items():
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
    return list(written)
