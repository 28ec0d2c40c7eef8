"""Each release against its own untrained start: the same architecture and model options, the off-the-shelf VGG16
conv weights, cluster centres from k-means on the Nordland training images, and no training.

    OMP_NUM_THREADS=1 python benchmarks/untrained_start.py --data-root ../shared/data \\
        --backbone-weights ../shared/weights/vgg16_hed_conv.safetensors --threads 1 \\
        --out benchmarks/untrained/start.json

The start is built by the trainer itself: each release's recorded training command (config.json
`release.command`) is parsed by `vpr train`'s parser and set up by its `setup` (the same seed before the model is
built, the same options), then `Trainer.init_clusters` runs the k-means the run began with; what changes is only
where files are (--data-root, --backbone-weights, a temporary output folder), no test sets, and k-means on
descriptors computed from the image files instead of the run's feature cache. No epoch is trained and no whitening
is fitted: the start is measured on its unwhitened descriptors, as the trainer's epoch-0 validation measures it.
The start is measured from image files at the release's input size, exact inner-product search, Recall@1/5/10
(+-1 place on Nordland) on the Nordland test places, the Corridor and, when its folder is under --data-root, the
Gardens Point sample (with --validation also on the Nordland validation places, where the training run's epoch-0
validation measured it). The release is the bundled folder, loaded by `registry.VPRModel.from_pretrained`: its rows
are the recalls its config.json records (measured from image files by `vpr release build`, the same protocol) and,
on a dataset config.json does not hold (or with --remeasure-releases), measured here the same way.
Writes the JSON, a Markdown table (.md) and a plot (.png).
"""
from __future__ import annotations

import argparse
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from _outputs import save_figure, write_outputs

REPO = Path(__file__).resolve().parent.parent
RELEASES = (REPO / "clusvpr_plugin" / "releases" / "clusvpr_vgg16.nordland",
            REPO / "registry" / "releases" / "netvlad_vgg16.nordland",
            REPO / "registry" / "releases" / "gem_vgg16.nordland")
DATASETS = ("nordland_test", "corridor", "gardens_point")
# options of the recorded command that name files of the machine it ran on, or work the start does not do
REPLACED = ("--data-root", "--backbone-weights", "--output", "--cache-features", "--test-set", "--threads")
NS = (1, 5, 10)


def start_argv(command: str, data_root: str, weights: str, output: str, threads: int) -> List[str]:
    """The release's training command (after `python benchmarks/train.py`) with the REPLACED options swapped for
    this machine's and a temporary output folder."""
    words = shlex.split(command)
    words = words[words.index("benchmarks/train.py") + 1:] if "benchmarks/train.py" in words else words[2:]
    kept: List[str] = []
    i = 0
    while i < len(words):
        if words[i] in REPLACED:
            i += 2
            continue
        kept.append(words[i])
        i += 1
    return kept + ["--data-root", data_root, "--backbone-weights", weights, "--output", output,
                   "--threads", str(threads), "--no-progress"]


def untrained_start(release: Path, data_root: str, weights: str, threads: int, workdir: Path):
    """The release's untrained start (its k-means done, no whitening) and the arguments that built it."""
    import json

    from registry.cli.train import build_parser, check_args, setup

    config = json.loads((release / "config.json").read_text())
    argv = start_argv(config["release"]["command"], data_root, weights, str(workdir / release.name), threads)
    a = build_parser().parse_args(argv)
    a.prog, a.argv = "vpr train", argv
    check_args(a)
    trainer, _ = setup(a)
    trainer.init_clusters()
    model = trainer.model.eval()
    trainer.close()
    if model.whitening is not None:
        model.set_whitening_dim(None)
    return model, argv, config


def available(data_root: str) -> List[Any]:
    """The DATASETS found (the Gardens Point sample only when its folder is there)."""
    from registry.datasets import load_dataset

    found = []
    for name in DATASETS:
        try:
            found.append(load_dataset(name, data_root))
        except FileNotFoundError as err:
            print(f"skipping {name}: {err}")
    return found


def measure_release(release: Path, data_root: str, weights: str, threads: int, datasets: List[Any],
                    workdir: Path, validation: Optional[Any], remeasure: bool) -> Dict[str, Any]:
    """The start's and the release's recall rows on each dataset, the start's on `validation` (what the trainer's
    epoch 0 measured, before any training; None: not measured), and what built the start. The release's rows are
    its config.json's (measured from image files by `vpr release build`, the same protocol) where it has them,
    unless `remeasure`; measured here elsewhere."""
    import registry
    from registry.evaluation.recall_table import recall_table

    t0 = time.time()
    start, argv, config = untrained_start(release, data_root, weights, threads, workdir)
    start_dim = int(start.descriptor_dim)
    start_rows = recall_table(start, datasets, batch_size=32, ns=NS)
    start_val = recall_table(start, [validation], batch_size=32, ns=NS) if validation is not None else {}
    del start
    stored = {k: v for k, v in config.get("recalls", {}).items() if k in start_rows}
    released = registry.VPRModel.from_pretrained(str(release)).eval()
    measured = recall_table(released, [d for d in datasets if remeasure or d.name not in stored], batch_size=32,
                            ns=NS)
    return {"release": release.name, "architecture": config["architecture"],
            "descriptor_dim": {"start": start_dim, "release": int(released.descriptor_dim)},
            "start_command": "vpr train " + " ".join(argv), "start": start_rows,
            "released": {name: measured.get(name, stored.get(name)) for name in start_rows},
            "release_source": {name: "measured" if name in measured else "config.json" for name in start_rows},
            "start_validation": start_val, "stored": stored, "seconds": round(time.time() - t0, 1)}


def _row(r: Dict[str, float]) -> str:
    return " / ".join(f"{r[f'R@{n}']:.2f}" for n in NS)


def _delta(released: Dict[str, float], start: Dict[str, float]) -> str:
    return " / ".join(f"{released[f'R@{n}'] - start[f'R@{n}']:+.2f}" for n in NS)


def _source(m: Dict[str, Any], name: str) -> str:
    """Where the release's row comes from; a measured row that differs from config.json's shows config.json's."""
    stored: Optional[Dict[str, float]] = m["stored"].get(name)
    if m["release_source"][name] == "config.json":
        return "config.json"
    if stored is None:
        return "measured here"
    same = all(stored[f"R@{n}"] == m["released"][name][f"R@{n}"] for n in NS)
    return "measured here, = config.json" if same else f"measured here (config.json: {_row(stored)})"


def markdown(result: Dict[str, Any]) -> str:
    lines = ["| model | dataset | untrained start R@1 / R@5 / R@10 | release R@1 / R@5 / R@10 | release - start | "
             "release worse at | release row from |", "|---|---|---|---|---|---|---|"]
    for m in result["models"]:
        for name, start in m["start"].items():
            released = m["released"][name]
            worse = [f"R@{n}" for n in NS if released[f"R@{n}"] < start[f"R@{n}"]]
            lines.append(f"| {m['architecture']} | {name} | {_row(start)} | {_row(released)} | "
                         f"{_delta(released, start)} | {', '.join(worse) or '-'} | {_source(m, name)} |")
    checked = [(m["architecture"], name, row) for m in result["models"] for name, row in m["start_validation"].items()]
    if checked:
        lines += ["", "| model | untrained start on validation (as the trainer's epoch 0), R@1 / R@5 / R@10 |",
                  "|---|---|"] + [f"| {arch} | {name}: {_row(row)} |" for arch, name, row in checked]
    return "\n".join(lines) + "\n"


def plot(result: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["models"][0]["start"])
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        models = [m["architecture"].replace("_vgg16", "") for m in result["models"]]
        xs = range(len(models))
        ax.bar([x - 0.2 for x in xs], [m["start"][name]["R@1"] for m in result["models"]], 0.4,
               label="untrained start")
        ax.bar([x + 0.2 for x in xs], [m["released"][name]["R@1"] for m in result["models"]], 0.4, label="release")
        ax.set_xticks(list(xs), models)
        ax.set(title=name, ylabel="R@1 (%)")
    save_figure(fig, axes[0], path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True, help="folder with nordland/ (and gardens_point_sample/)")
    p.add_argument("--backbone-weights", required=True, help="the off-the-shelf VGG16 conv weights (safetensors)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "untrained" / "start.json")
    p.add_argument("--validation", action="store_true", help="also measure each start on the Nordland validation "
                   "places (the training run's epoch-0 validation)")
    p.add_argument("--remeasure-releases", action="store_true", help="measure the releases again where their "
                   "config.json already holds the recalls")
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these releases / datasets (a quick check of the "
                   "script; the recorded run measures all)")
    p.add_argument("--update", action="store_true", help="with --only RELEASE...: measure those releases on every "
                   "dataset the existing --out holds and replace only their entries there (a retrained release)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import clusvpr_plugin  # noqa: F401  (registers ClusVPR)
    from registry.datasets import load_dataset

    only = set(args.only or ())
    previous = _previous(args.out, only) if args.update else None
    datasets = [d for d in available(args.data_root)
                if (previous is not None and d.name in previous["datasets"]) or (previous is None and
                                                                                   (not only or d.name in only))]
    validation = load_dataset("nordland_val", args.data_root) if args.validation else None
    releases = [r for r in RELEASES if not only or r.name in only]
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        models = [measure_release(r, args.data_root, args.backbone_weights, args.threads, datasets, Path(tmp),
                                  validation, args.remeasure_releases) for r in releases]
    flags = "".join(f" --{f}" for f, on in (("validation", args.validation),
                                            ("remeasure-releases", args.remeasure_releases)) if on)
    result = {"command": "python benchmarks/untrained_start.py --data-root DATA --backbone-weights WEIGHTS "
                         f"--threads {args.threads}{flags}", "threads": args.threads,
              "datasets": [d.name for d in datasets], "validation": validation.name if validation else None,
              "models": models, "seconds": round(time.time() - t0, 1)}
    if previous is not None:
        result = _merged(previous, models)
    write_outputs(result, args.out, markdown, plot)


def _previous(out: Path, only: set) -> Dict[str, Any]:
    """The recorded JSON that --update replaces entries of, checked to hold every release named by --only."""
    import json

    if not only:
        raise SystemExit("--update replaces the entries of the releases named by --only: name them")
    if not out.is_file():
        raise SystemExit(f"--update needs the recorded {out}; run without --update to measure every release")
    previous = json.loads(out.read_text())
    unknown = only - {m["release"] for m in previous["models"]}
    if unknown:
        raise SystemExit(f"--update: {out} holds no entry for {sorted(unknown)}; its releases: "
                         f"{[m['release'] for m in previous['models']]}")
    return previous


def _merged(previous: Dict[str, Any], models: List[Dict[str, Any]]) -> Dict[str, Any]:
    """`previous` with the entries of `models` replaced (the order kept); seconds: the sum of the entries' own."""
    new = {m["release"]: m for m in models}
    merged = dict(previous)
    merged["models"] = [new.get(m["release"], m) for m in previous["models"]]
    merged["seconds"] = round(sum(m["seconds"] for m in merged["models"]), 1)
    merged["updated"] = sorted(new)
    return merged


if __name__ == "__main__":
    main()
